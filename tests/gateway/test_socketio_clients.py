"""Real Zou clients against the gateway: gazu (python-socketio client) and Kitsu's
socket.io-client 4 under Node; Socket.IO across gateway processes (/stats, shutdown)."""

import asyncio
import contextlib
import json
import queue
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import gazu
import pytest
import socketio

from tests.helpers import wait_until

NS = "/events"
JS = Path(__file__).resolve().parents[1] / "js"


# -- gazu ------------------------------------------------------------------------------------


class GazuListener:
    """`gazu.events.init` + `add_listener`, as a studio script does; gazu blocks, so it runs
    in a thread and its events arrive on a thread-safe queue."""

    def __init__(self, host: str, token: str) -> None:
        self.kitsu = gazu.client.create_client(host)
        gazu.client.set_tokens({"access_token": token}, client=self.kitsu)
        self.received: queue.Queue[Any] = queue.Queue()
        self.events: Any = None

    async def start(self, *names: str) -> None:
        self.events = await asyncio.to_thread(gazu.events.init, client=self.kitsu)
        for name in names:
            gazu.events.add_listener(self.events, name, self.received.put)

    async def next(self, timeout_s: float = 5.0) -> Any:
        return await asyncio.to_thread(self.received.get, timeout=timeout_s)

    async def stop(self) -> None:
        if self.events is not None:
            await asyncio.to_thread(self.events.disconnect)


@pytest.fixture
async def gazu_listener(make_token) -> AsyncIterator[Callable[..., Any]]:
    listeners: list[GazuListener] = []

    async def start(gw: Any, *names: str, token: str | None = None) -> GazuListener:
        # gazu's host is the API URL; the event client keeps its scheme and address only.
        listener = GazuListener(gw.url("/api"), token or make_token("script-bot"))
        listeners.append(listener)
        await listener.start(*names)
        return listener

    yield start
    for listener in listeners:
        await listener.stop()


async def test_gazu_receives_zou_emits_and_api_publications(
    start_gateway, gazu_listener, zou_publisher
):
    gw = await start_gateway()
    listener = await gazu_listener(gw, "task:new")
    await zou_publisher.emit("task:new", {"task_id": "t1", "project_id": "p1"}, namespace=NS)
    assert await listener.next() == {"task_id": "t1", "project_id": "p1"}
    status, body = await gw.api(
        "POST",
        "/api/publish",
        json={"channel": "zou:events", "event": "task:new", "data": {"task_id": "t2"}},
    )
    assert status == 200, body
    assert await listener.next() == {"task_id": "t2"}


async def test_gazu_with_a_bad_token_fails_as_against_zou(start_gateway, gazu_listener, make_token):
    gw = await start_gateway()
    with pytest.raises(socketio.exceptions.ConnectionError, match="namespaces failed to connect"):
        await gazu_listener(gw, "task:new", token=make_token("bot", key="x" * 40))


# -- socket.io-client 4 (Kitsu) under Node ---------------------------------------------------


class NodeClient:
    """tests/js/events_client.mjs as a child process; one JSON object per stdout line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout_s: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            raw = await self.proc.stdout.readline()
        assert raw, "the node client exited"
        return json.loads(raw)  # type: ignore[no-any-return]

    async def expect(self, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
        while (message := await self.line(timeout_s))["type"] != kind:
            pass
        return message

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b"quit\n")
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def node_client() -> AsyncIterator[Callable[..., Any]]:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("node or tests/js/node_modules is missing: run `make setup`")
    clients: list[NodeClient] = []

    async def start(**options: Any) -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS / "events_client.mjs"),
            json.dumps(options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=JS,
        )
        clients.append(NodeClient(proc))
        return clients[-1]

    yield start
    for client in clients:
        await client.stop()


@pytest.mark.parametrize(
    ("auth", "transports", "connected_on"),
    [
        ("cookie", ["websocket"], "websocket"),
        ("bearer", ["polling"], "polling"),
        ("cookie", ["polling", "websocket"], None),  # Kitsu's default: polling, then an upgrade
    ],
)
async def test_kitsu_client_receives_broadcast_events(
    start_gateway, node_client, make_token, auth, transports, connected_on
):
    gw = await start_gateway()
    client = await node_client(url=gw.url(""), transports=transports, **{auth: make_token("kitsu")})
    transport = (await client.expect("connect"))["transport"]
    if connected_on is not None:
        assert transport == connected_on
    elif transport == "polling":
        assert (await client.expect("upgrade"))["transport"] == "websocket"
    data = {"task_id": "t1", "project_id": "p1"}
    status, body = await gw.api(
        "POST", "/api/publish", json={"channel": "zou:events", "event": "task:update", "data": data}
    )
    assert status == 200, body
    assert await client.expect("event") == {"type": "event", "event": "task:update", "args": [data]}


async def test_kitsu_client_with_a_refused_token_sees_zous_connect_error(
    start_gateway, node_client, make_token
):
    gw = await start_gateway()
    client = await node_client(url=gw.url(""), cookie=make_token("kitsu", ttl=-30))
    assert await client.line() == {
        "type": "connect_error",
        "message": "Connection rejected by server",
    }


async def test_kitsu_client_is_told_not_to_reconnect_when_its_token_is_revoked(
    start_gateway, node_client, make_token
):
    gw = await start_gateway()
    client = await node_client(url=gw.url(""), cookie=make_token("kitsu", jti="k1"))
    await client.expect("connect")
    status, body = await gw.api("POST", "/api/revoke", scope="admin", json={"jti": "k1"})
    assert status == 200, body
    assert await client.expect("disconnect") == {
        "type": "disconnect",
        "reason": "io server disconnect",
    }


# -- across gateway processes ----------------------------------------------------------------


async def test_stats_count_socketio_sockets_across_gateway_processes(gateway_process, make_token):
    a = await gateway_process(GATEWAY_NODE_REPORT_S="0.2")
    b = await gateway_process(GATEWAY_NODE_REPORT_S="0.2")
    clients = []
    async with aiohttp.ClientSession() as session:

        async def connect(gp: Any, user: str) -> socketio.AsyncClient:
            client = socketio.AsyncClient(reconnection=False)
            headers = {"Authorization": f"Bearer {make_token(user)}"}
            await client.connect(gp.url("/"), headers=headers, namespaces=[NS], wait_timeout=5)
            clients.append(client)
            return client

        async def counts(gp: Any) -> tuple[int, int]:
            async with session.get(gp.url("/stats")) as resp:
                body = await resp.json()
            return body["nb_connections"], body["local_connections"]

        await connect(a, "alice")
        await connect(b, "bob")
        await connect(b, "carol")
        native = await session.ws_connect(
            a.url("/ws"), headers={"Authorization": f"Bearer {make_token('dan')}"}
        )
        await wait_until(lambda: _eq(counts(a), (4, 2)), what="a: 4 in all, 2 here")
        await wait_until(lambda: _eq(counts(b), (4, 2)), what="b: 4 in all, 2 here")
        await clients.pop().disconnect()
        await wait_until(lambda: _eq(counts(a), (3, 2)), what="a after a disconnect on b")

        # SIGTERM: Socket.IO clients are let go at once (they reconnect elsewhere).
        on_a = clients[0]
        a.terminate()
        await wait_until(lambda: not on_a.connected, timeout_s=5, what="client of a let go")
        assert await asyncio.to_thread(a.proc.wait, 10) == 0
        await native.close()
        for client in clients:
            await client.disconnect()


async def _eq(value: Any, expected: Any) -> bool:
    return await value == expected
