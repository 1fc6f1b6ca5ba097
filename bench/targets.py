"""The two systems under test, behind one interface: how to start each server, how its clients
handshake and subscribe, and how a backend publishes to it through Redis.

Both publish straight into Redis, the way each system's backends do, so that neither system's
HTTP API is what gets measured.
"""

import asyncio
import json
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from redis.asyncio import Redis

from .harness import ROOT, ServerProcess, free_port, python_argv
from .resp import RespConnection, encode_command
from .wsclient import Tally, WsClient

Item = tuple[str, dict[str, Any]]  # (channel, data) of one publication
PEER_CONCURRENCY = 32


class BenchClient(WsClient):
    """A WebSocket client that can subscribe to one channel and wait for the confirmation."""

    def __init__(self, tally: Tally, path: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(tally, path, headers)
        self._pending: asyncio.Future[None] | None = None

    async def subscribe(self, channel: str, timeout_s: float = 30.0) -> None:
        self._pending = asyncio.get_running_loop().create_future()
        self.send_text(self.subscribe_frame(channel))
        async with asyncio.timeout(timeout_s):
            await self._pending

    def subscribe_frame(self, channel: str) -> str:
        raise NotImplementedError

    def _settle(self, error: Exception | None = None) -> None:
        pending, self._pending = self._pending, None
        if pending is None or pending.done():
            if error is not None:
                self.errors.append(str(error))
            return
        if error is None:
            pending.set_result(None)
        else:
            pending.set_exception(error)

    def on_failure(self, error: Exception) -> None:
        self._settle(error)


class Publisher(ABC):
    """Publishes through Redis the way the system's own backends do.

    `prepare` encodes one publication once, so that a throughput run that repeats it spends its
    client CPU on receiving, not on publishing; `send` publishes any number of prepared ones.
    """

    def prepare(self, channel: str, data: Any) -> Any:
        return (channel, data)

    @abstractmethod
    async def send(self, prepared: Sequence[Any]) -> None:
        """Publish prepared publications, in order; return once Redis accepted all of them."""

    async def publish(self, items: Sequence[Item]) -> None:
        await self.send([self.prepare(channel, data) for channel, data in items])

    @abstractmethod
    async def aclose(self) -> None: ...


class Target(ABC):
    """A system under test."""

    name: str
    label: str

    def available(self) -> str | None:
        """None when the system can run here, else why not."""
        return None

    @abstractmethod
    def channel(self, index: int) -> str: ...

    @abstractmethod
    def start(self, redis_url: str) -> ServerProcess:
        """Start the server on a free port; return it once it listens."""

    @abstractmethod
    def client(self, tally: Tally, index: int) -> BenchClient:
        """A client for user number `index`, not yet connected."""

    @abstractmethod
    async def publisher(self, redis_url: str) -> Publisher: ...

    async def api_publish(self, server: ServerProcess, channel: str, data: Any) -> bool:
        """Publish through the server's own HTTP API, if it has one (False if not)."""
        return False

    async def counters(self, server: ServerProcess) -> dict[str, float]:
        """The server's own counters worth reporting (frames, socket writes), if it has any."""
        return {}


# -- python-socketio ---------------------------------------------------------------------------


class SocketIOClient(BenchClient):
    """Engine.IO v4 / Socket.IO v5 over a WebSocket, namespace "/".

    Server: `0{...}` (open). Client: `40`. Server: `40{"sid":...}`. Events are `42[...]`, acks
    `43<id>[...]`, pings `2` answered with `3`.
    """

    marker = b'42["'
    probe_at, probe = 1, ord("2")  # 42 (event); not 40, 43, 0{ or a 2 (ping) alone

    def on_upgraded(self) -> None:
        """Not open yet: the Engine.IO open packet and the namespace connect come first."""

    def subscribe_frame(self, channel: str) -> str:
        return "421" + json.dumps(["subscribe", channel])

    def on_control_message(self, payload: bytes) -> None:
        if payload == b"2":
            self.send_text(b"3")
        elif payload.startswith(b"0{"):
            self.send_text(b"40")
        elif payload.startswith(b"40"):
            if not self.opened.done():
                self.opened.set_result(None)
        elif payload.startswith(b"43"):
            self._settle()
        elif payload.startswith((b"44", b"41")):
            error = ConnectionError(f"socket.io refused: {payload[:200]!r}")
            self._fail(error)
        else:
            self.errors.append(f"unexpected packet {payload[:80]!r}")


class SocketIOPublisher(Publisher):
    """python-socketio's documented external emitter: `AsyncRedisManager(write_only=True)`."""

    def __init__(self, redis_url: str) -> None:
        import socketio  # type: ignore[import-untyped]  # the peer's package: no type hints

        self._manager = socketio.AsyncRedisManager(redis_url, write_only=True)

    async def send(self, prepared: Sequence[Any]) -> None:
        items: Sequence[Item] = prepared
        emit = self._manager.emit
        if len(items) == 1:
            channel, data = items[0]
            await emit("msg", data, room=channel, namespace="/")
            return
        # Its Redis client's pool refuses more than a few dozen concurrent commands.
        for start in range(0, len(items), PEER_CONCURRENCY):
            chunk = items[start : start + PEER_CONCURRENCY]
            await asyncio.gather(*(emit("msg", d, room=c, namespace="/") for c, d in chunk))

    async def aclose(self) -> None:
        redis = getattr(self._manager, "redis", None)
        if redis is not None:
            await redis.aclose()


class SocketIOTarget(Target):
    name = "socketio"
    label = "python-socketio"

    def channel(self, index: int) -> str:
        return f"room{index}"

    def start(self, redis_url: str) -> ServerProcess:
        port = free_port()
        argv = python_argv(
            "-m", "bench.peer_socketio", "--port", str(port), "--redis", redis_url
        )  # fmt: skip
        server = ServerProcess(self.name, argv, port)
        server.start()
        return server

    def client(self, tally: Tally, index: int) -> BenchClient:
        return SocketIOClient(tally, "/socket.io/?EIO=4&transport=websocket")

    async def publisher(self, redis_url: str) -> Publisher:
        return SocketIOPublisher(redis_url)


# -- Switchboard -------------------------------------------------------------------------------

# The benchmark namespace: pure pub/sub (no history, no presence), like the peer.
BENCH_NAMESPACE = "bench"
CHANNELS_CONFIG = {"namespaces": {BENCH_NAMESPACE: {"history_size": 0, "presence": False}}}


class NativeClient(BenchClient):
    """Switchboard's native protocol on /ws, authenticated by an `Authorization` header."""

    marker = b'{"push":"pub"'
    probe_at, probe = 10, ord("u")  # {"push":"pub"; not {"push":"join" nor {"id":...

    def subscribe_frame(self, channel: str) -> str:
        return json.dumps({"id": 1, "op": "subscribe", "channel": channel})

    def on_control_message(self, payload: bytes) -> None:
        for line in payload.splitlines():
            if not line.startswith(b'{"id"'):
                continue  # other pushes (disconnect, join/leave) do not concern the benchmark
            reply = json.loads(line)
            if "error" in reply:
                self._settle(ConnectionError(f"command refused: {reply['error']}"))
            else:
                self._settle()


class SwitchboardPublisher(Publisher):
    """The gateway's own publish path: `services.common.bus.Bus.publish` runs one Lua script per
    publication. `publish()` of one item calls `Bus.publish` itself; anything else sends the same
    script with the same arguments (EVALSHA), pipelined on one connection.
    """

    def __init__(self, redis_url: str) -> None:
        # Imported here so that the peer can be measured before the gateway exists.
        from services.common.bus import PUBLISH_LUA, Bus, encode_data
        from services.common.channels import Namespace
        from services.common.redis import Keys

        self._url = redis_url
        self._redis = Redis.from_url(redis_url, protocol=3)
        self._bus = Bus(self._redis, Keys())
        self._lua = PUBLISH_LUA
        self._encode = encode_data
        self._namespace = Namespace(name=BENCH_NAMESPACE, history_size=0, presence=False)
        self._sha = b""
        self._pipe: RespConnection | None = None

    async def open(self) -> "SwitchboardPublisher":
        self._sha = (await self._redis.script_load(self._lua)).encode()
        self._pipe = await RespConnection.open(self._url)
        return self

    async def publish(self, items: Sequence[Item]) -> None:
        if len(items) != 1:
            await super().publish(items)
            return
        [(channel, data)] = items
        await self._bus.publish(channel, self._encode(data), self._namespace)

    def prepare(self, channel: str, data: Any) -> Any:
        """EVALSHA with the arguments `Bus.publish` passes (no history: maxlen 0)."""
        keys = self._bus.keys
        args: list[bytes | str | int] = [
            keys.channel(channel),
            self._bus.frame_prefix(channel, None),
            self._encode(data),
            0,
            self._namespace.history_ttl_ms,
            b"-",
            b"",
        ]
        history, meta = keys.history(channel), keys.meta(channel)
        return encode_command(b"EVALSHA", self._sha, 2, history, meta, *args)

    async def send(self, prepared: Sequence[Any]) -> None:
        assert self._pipe is not None, "publisher not opened"
        await self._pipe.execute(b"".join(prepared), len(prepared))

    async def aclose(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        await self._redis.aclose()


class SwitchboardTarget(Target):
    name = "switchboard"
    label = "switchboard"

    def __init__(self) -> None:
        # A fresh key per run: the tokens below are signed with it.
        self.secret = secrets.token_urlsafe(48)
        self._config_dir = tempfile.TemporaryDirectory(prefix="bench-sb-")
        self.config_path = Path(self._config_dir.name) / "channels.json"
        self.config_path.write_text(json.dumps(CHANNELS_CONFIG))

    def available(self) -> str | None:
        if not (ROOT / "services" / "gateway" / "__main__.py").exists():
            return "services/gateway/__main__.py does not exist yet"
        return None

    def channel(self, index: int) -> str:
        return f"{BENCH_NAMESPACE}:room{index}"

    def start(self, redis_url: str) -> ServerProcess:
        return self.start_gateway(redis_url, self.name)

    def start_gateway(
        self, redis_url: str, name: str, extra_env: dict[str, str] | None = None
    ) -> ServerProcess:
        """One gateway process; several may share Redis (`name` names its log file)."""
        port = free_port()
        env = {
            **(extra_env or {}),
            "REDIS_URL": redis_url,
            "SECRET_KEY": self.secret,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "SWITCHBOARD_CHANNELS": str(self.config_path),
        }
        server = ServerProcess(name, python_argv("-m", "services.gateway"), port, env)
        server.start()
        return server

    def token(self, claims: dict[str, Any]) -> str:
        return jwt.encode({"exp": int(time.time()) + 3600, **claims}, self.secret, "HS256")

    def client(self, tally: Tally, index: int) -> BenchClient:
        headers = [("Authorization", f"Bearer {self.token({'sub': f'u{index}'})}")]
        return NativeClient(tally, "/ws", headers)

    async def publisher(self, redis_url: str) -> Publisher:
        return await SwitchboardPublisher(redis_url).open()

    async def api_publish(self, server: ServerProcess, channel: str, data: Any) -> bool:
        """`POST /api/publish`: checks that the fast publish path delivers what the API does."""
        return await self.post_publish(server, {"channel": channel, "data": data})

    async def post_publish(self, server: ServerProcess, body: dict[str, Any]) -> bool:
        headers = {"Authorization": f"Bearer {self.token({'sub': 'bench', 'scope': 'publish'})}"}
        url = f"http://127.0.0.1:{server.port}/api/publish"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers=headers) as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(f"POST /api/publish: {resp.status} {await resp.text()}")
        return True

    async def counters(self, server: ServerProcess) -> dict[str, float]:
        """Frames sent and socket writes, from the gateway's Prometheus endpoint."""
        wanted = {
            "switchboard_gateway_frames_sent_total": "frames",
            "switchboard_gateway_socket_writes_total": "writes",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/metrics") as resp,
        ):
            text = await resp.text()
        found = {}
        for line in text.splitlines():
            name, _, number = line.partition(" ")
            if name in wanted:
                found[wanted[name]] = float(number)
        return found


TARGETS: dict[str, type[Target]] = {"switchboard": SwitchboardTarget, "socketio": SocketIOTarget}
