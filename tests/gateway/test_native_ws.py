"""The /ws front door: which connections it serves itself, how it hands the others to aiohttp,
and the WebSocket framing it reads (services/gateway/native_ws.py)."""

import asyncio
import base64
import json
import os
import struct

import aiohttp
import pytest

from services.gateway import native_ws
from services.gateway.connection import AiohttpConnection
from services.gateway.keys import node_key
from services.gateway.native_ws import NativeConnection
from tests.conftest import Gateway
from tests.gateway.wsclients import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWebSocket, close_code
from tests.helpers import Client, still_delivers, wait_until


@pytest.fixture
async def gw(gateway: Gateway) -> Gateway:
    return gateway


def upgrade_request(port: int, token: str, path: str = "/ws", **extra: str) -> bytes:
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Authorization": f"Bearer {token}",
        **extra,
    }
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    assert len(payload) < 126
    head = bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload)))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_exchange(
    port: int, chunks: list[bytes], until: bytes, timeout_s: float = 5.0
) -> bytes:
    """Send `chunks` one by one (a pause between them), read until `until` shows up or EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
        data = b""
        async with asyncio.timeout(timeout_s):
            while until not in data:
                more = await reader.read(65536)
                if not more:
                    break
                data += more
        return data
    finally:
        writer.close()


def kinds(gw: Gateway) -> list[type]:
    return [type(conn) for conn in gw.app[node_key].connections.values()]


async def test_fresh_sockets_are_native_and_keep_alive_upgrades_go_through_aiohttp(
    gw: Gateway,
) -> None:
    native = await gw.connect("alice")
    await native.ok("subscribe", channel="news")
    # One pooled connection: the upgrade rides on the keep-alive connection of the GET before it.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async with session.get(gw.url("/stats")) as resp:
            assert resp.status == 200
        headers = {"Authorization": f"Bearer {gw.make_token('bob')}"}
        reused = Client(await session.ws_connect(gw.url("/ws"), headers=headers))
        await reused.ok("subscribe", channel="news")
        assert sorted(kinds(gw), key=str) == [AiohttpConnection, NativeConnection]
        await still_delivers(gw, native, reused)
        await reused.close()
    await native.close()
    await wait_until(lambda: not kinds(gw), what="both sockets detached")


async def test_upgrade_in_pieces_with_a_frame_in_the_last_piece(gw: Gateway) -> None:
    port = gw.http.port
    request = upgrade_request(port, gw.make_token("alice"))
    ping = masked(OP_TEXT, json.dumps({"id": 7, "op": "ping"}).encode())
    # A byte, a few more (still not enough to tell /ws from /wsx), the rest with a frame after it.
    data = await raw_exchange(port, [request[:1], request[1:6], request[6:] + ping], b'"id":7')
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b'{"id":7,"result":{}}' in data


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        ("/ws", {"Upgrade": "h2c"}, 400),  # not a WebSocket upgrade: aiohttp's view answers
        ("/ws", {"Sec-WebSocket-Version": "12"}, 400),
        ("/ws", {"Sec-WebSocket-Key": "short"}, 400),
        ("/wsx", {}, 404),
        ("/stats", {}, 200),
    ],
)
async def test_other_requests_are_answered_by_aiohttp(
    gw: Gateway, path: str, extra: dict[str, str], status: int
) -> None:
    port = gw.http.port
    data = await raw_exchange(
        port, [upgrade_request(port, gw.make_token("a"), path, **extra)], b"\r\n\r\n"
    )
    assert data.split(b"\r\n", 1)[0].split()[1] == str(status).encode(), data[:200]
    assert not kinds(gw)


async def test_a_plain_get_of_ws_gets_aiohttps_answer(gw: Gateway) -> None:
    async with gw.http.session.get(gw.url("/ws")) as resp:
        assert resp.status == 400
        assert "Upgrade" in await resp.text()


async def test_an_oversized_request_head_is_refused(gw: Gateway) -> None:
    port = gw.http.port
    request = b"GET /ws HTTP/1.1\r\nX-Pad: " + b"x" * 20_000
    data = await raw_exchange(port, [request], b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]


async def test_a_refused_token_gets_the_json_error_on_the_native_path(gw: Gateway) -> None:
    port = gw.http.port
    data = await raw_exchange(port, [upgrade_request(port, "not-a-jwt")], b"}}")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized")
    assert json.loads(body)["error"]["code"] == 101
    assert not kinds(gw)


async def test_fragments_pings_and_a_client_close(gw: Gateway) -> None:
    ws = await RawWebSocket.open(gw.http.port, token=gw.make_token("alice"))
    try:
        assert kinds(gw) == [NativeConnection]
        text = json.dumps({"id": 1, "op": "ping"}).encode()
        await ws.send_frame(OP_TEXT, text[:5], fin=False)
        await ws.send_frame(OP_PING, b"between fragments")  # control frames may interleave
        await ws.send_frame(0x0, text[5:])  # continuation, final
        assert await ws.recv_frame() == (OP_PONG, b"between fragments")
        assert await ws.recv_json() == [{"id": 1, "result": {}}]
        await ws.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
        opcode, payload = await ws.recv_frame()
        assert (opcode, close_code(payload)) == (OP_CLOSE, 1000)
        with pytest.raises((EOFError, ConnectionError)):
            await ws.recv_frame()
    finally:
        ws.close()
    await wait_until(lambda: not kinds(gw), what="socket detached")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked(OP_TEXT, b'{"op": "\xff"}'), 1007),  # text that is not UTF-8
        (masked(0x3, b"x"), 1002),  # a reserved opcode
        (masked(0x0, b"x"), 1002),  # a continuation with nothing to continue
        (bytes((0xC1, 0x80)) + os.urandom(4), 1002),  # RSV1 set without an extension
    ],
    ids=["bad-utf8", "reserved-opcode", "stray-continuation", "rsv1"],
)
async def test_broken_framing_closes_with_its_code_and_others_go_on(
    gw: Gateway, frame: bytes, code: int
) -> None:
    bystander = await gw.connect("carol")
    await bystander.ok("subscribe", channel="news")
    ws = await RawWebSocket.open(gw.http.port, token=gw.make_token("alice"))
    try:
        await asyncio.get_running_loop().sock_sendall(ws.sock, frame)
        opcode, payload = await ws.recv_frame()
        assert (opcode, close_code(payload)) == (OP_CLOSE, code)
    finally:
        ws.close()
    await still_delivers(gw, bystander)
    await wait_until(lambda: len(kinds(gw)) == 1, what="broken socket detached")


async def test_a_client_that_vanishes_mid_handshake_leaves_nothing(gw: Gateway) -> None:
    port = gw.http.port
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port, gw.make_token("alice"))[:30])
    await writer.drain()
    writer.close()
    bystander = await gw.connect("carol")
    await bystander.ok("subscribe", channel="news")
    await still_delivers(gw, bystander)
    assert kinds(gw) == [NativeConnection]


async def test_sockets_gone_right_after_a_subscribe_leave_nothing_behind(gw: Gateway) -> None:
    """No subscriber and no presence entry (added at the end of the subscribe) outlives a socket
    that closed while its subscribe was on its way."""
    node = gw.app[node_key]
    port = gw.http.port
    for i in range(20):
        channel = f"news-{i}"  # a new channel each time: the subscribe waits for Redis
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port, gw.make_token("alice")))
        await reader.readuntil(b"\r\n\r\n")  # the 101
        frame = json.dumps({"id": 1, "op": "subscribe", "channel": channel}).encode()
        writer.write(masked(OP_TEXT, frame))
        await writer.drain()
        writer.close()  # gone at once, while the subscribe is in flight
    await wait_until(lambda: not node.connections, what="every socket detached")
    await asyncio.sleep(0.2)
    assert [node.hub.subscribers(f"news-{i}") for i in range(20)] == [0] * 20
    for i in range(20):
        status, body = await gw.api("GET", "/api/presence", params={"channel": f"news-{i}"})
        assert (status, body) == (200, {"clients": {}}), i


async def test_a_request_head_that_never_ends_is_dropped(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native_ws, "HEAD_TIMEOUT_S", 0.3)
    port = gw.http.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port, gw.make_token("alice"))[:-4])  # no blank line
    await writer.drain()
    async with asyncio.timeout(3.0):
        assert await reader.read() == b""  # closed, nothing answered
    writer.close()
    assert not kinds(gw)
