"""Socket.IO broadcast fan-out on the namespace `/events`: what Kitsu clients receive from Zou.

Both systems get the same publications, on the same Redis channel, in the same bytes: what
python-socketio's `AsyncRedisManager(channel="flask-socketio", write_only=True).emit(event,
data, namespace="/events")` publishes, which is how Zou's API processes emit (through
Flask-SocketIO's message queue). Switchboard reads that channel with its bridge
(services/gateway/zou.py); the peer, `bench/peer_socketio.py`, is started with its
`AsyncRedisManager` on the same channel. This is the fairest comparison: the one publishing path
both systems accept, and the one Zou uses. Switchboard's own bus path (`zou:events` with an
event name) is checked once per run during the warm-up (`POST /api/publish`), not measured.

Clients are the same raw load client as the other workloads (`bench/wsclient.py`), speaking
Engine.IO v4 / Socket.IO v5 on a WebSocket and connecting to `/events`; Switchboard's endpoint
gets each client's JWT in `Authorization: Bearer`, as Zou's does.
"""

from collections.abc import Sequence
from typing import Any

from .harness import ServerProcess, free_port, python_argv
from .resp import RespConnection, encode_command
from .targets import (
    BenchClient,
    Item,
    Publisher,
    SocketIOClient,
    SocketIOTarget,
    SwitchboardTarget,
    Target,
)
from .wsclient import Tally

NAMESPACE = "/events"
BRIDGE_CHANNEL = "flask-socketio"  # Flask-SocketIO's default; Zou's API publishes on it
EVENT = "msg"


class EventsClient(SocketIOClient):
    """A Socket.IO client of the namespace `/events`; connected means it gets every event.

    Server: `0{...}` (Engine.IO open). Client: `40/events,`. Server: `40/events,{"sid":...}`.
    Events are `42/events,["msg",{...}]`, pings `2` answered with `3`.
    """

    marker = b'42/events,["'
    probe_at, probe = 1, ord("2")  # 42/events (event); not 40/events, 44/events, nor a ping

    def on_control_message(self, payload: bytes) -> None:
        if payload == b"2":
            self.send_text(b"3")
        elif payload.startswith(b"0{"):
            self.send_text(b"40" + NAMESPACE.encode() + b",")
        elif payload.startswith(b"40" + NAMESPACE.encode()):
            if not self.opened.done():
                self.opened.set_result(None)
        elif payload.startswith((b"44", b"41")):
            self._fail(ConnectionError(f"socket.io refused: {payload[:200]!r}"))
        else:
            self.errors.append(f"unexpected packet {payload[:80]!r}")

    async def subscribe(self, channel: str, timeout_s: float = 30.0) -> None:
        """Nothing to do: every socket of `/events` gets every broadcast once connected."""


class BridgePublisher(Publisher):
    """Publishes what `AsyncRedisManager(write_only=True).emit(...)` publishes, to /events.

    A single publication goes through `emit()` itself. Batches send the same bytes: the message
    `emit()` built for a first publication, with the data replaced and encoded the way the
    manager encodes it, as pipelined PUBLISH commands on one connection (redis-py would cost the
    load client more CPU than the servers spend; the servers cannot tell the difference).
    """

    def __init__(self, redis_url: str) -> None:
        import socketio  # type: ignore[import-untyped]  # the peer's package: no type hints

        self._url = redis_url
        self._manager = socketio.AsyncRedisManager(
            redis_url, channel=BRIDGE_CHANNEL, write_only=True
        )
        self._template: dict[str, Any] = {}
        self._pipe: RespConnection | None = None

    async def open(self) -> "BridgePublisher":
        captured: list[dict[str, Any]] = []

        async def capture(message: dict[str, Any]) -> None:
            captured.append(message)

        self._manager._publish = capture  # one emit() to learn the message it publishes
        try:
            await self._manager.emit(EVENT, {}, namespace=NAMESPACE)
        finally:
            del self._manager._publish
        self._template = captured[0]
        if self._template.get("data") != [{}]:
            raise RuntimeError(f"unexpected emit message shape: {self._template!r}")
        self._pipe = await RespConnection.open(self._url)
        return self

    async def publish(self, items: Sequence[Item]) -> None:
        for _channel, data in items:
            await self._manager.emit(EVENT, data, namespace=NAMESPACE)

    def prepare(self, channel: str, data: Any) -> Any:
        message = self._manager.json.dumps({**self._template, "data": [data]})
        return encode_command(b"PUBLISH", BRIDGE_CHANNEL, message)

    async def send(self, prepared: Sequence[Any]) -> None:
        assert self._pipe is not None, "publisher not opened"
        await self._pipe.execute(b"".join(prepared), len(prepared))

    async def aclose(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        redis = getattr(self._manager, "redis", None)
        if redis is not None:
            await redis.aclose()


class SioPeerTarget(SocketIOTarget):
    """python-socketio, its AsyncRedisManager listening on the bridge channel."""

    def channel(self, index: int) -> str:
        return NAMESPACE

    def start(self, redis_url: str) -> ServerProcess:
        port = free_port()
        argv = python_argv(
            "-m", "bench.peer_socketio", "--port", str(port), "--redis", redis_url,
            "--channel", BRIDGE_CHANNEL,
        )  # fmt: skip
        server = ServerProcess(f"{self.name}-events", argv, port)
        server.start()
        return server

    def client(self, tally: Tally, index: int) -> BenchClient:
        return EventsClient(tally, "/socket.io/?EIO=4&transport=websocket")

    async def publisher(self, redis_url: str) -> Publisher:
        return await BridgePublisher(redis_url).open()


class SioSwitchboardTarget(SwitchboardTarget):
    """Switchboard's gateway, its Socket.IO endpoint reading the bridge channel."""

    def channel(self, index: int) -> str:
        return NAMESPACE

    def client(self, tally: Tally, index: int) -> BenchClient:
        headers = [("Authorization", f"Bearer {self.token({'sub': f'u{index}'})}")]
        return EventsClient(tally, "/socket.io/?EIO=4&transport=websocket", headers)

    async def publisher(self, redis_url: str) -> Publisher:
        return await BridgePublisher(redis_url).open()

    async def api_publish(self, server: ServerProcess, channel: str, data: Any) -> bool:
        """`POST /api/publish` on `zou:events` with an event name: Switchboard's own path."""
        return await self.post_publish(
            server, {"channel": "zou:events", "event": EVENT, "data": data}
        )

    async def counters(self, server: ServerProcess) -> dict[str, float]:
        return {}  # the Socket.IO endpoint's outbox is not in /metrics


def sio_target(target: Target) -> Target:
    """The Socket.IO-on-/events variant of a system under test."""
    if isinstance(target, SwitchboardTarget):
        return SioSwitchboardTarget()
    if isinstance(target, SocketIOTarget):
        return SioPeerTarget()
    raise ValueError(f"no Socket.IO variant of {target.name}")
