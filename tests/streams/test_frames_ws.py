"""Frames API over WebSocket: `/ws/frames`, `/ws/labels/{label}`, `/ws/stream/{label}/{key}`."""

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
import websockets
from redis.asyncio import Redis

from services.streams.frames.keys import hub_key
from services.streams.keys import registry_key
from tests.helpers import wait_until
from tests.streams import frames_helpers
from tests.streams.frames_helpers import (
    DELIM,
    JPEG,
    Frames,
    header,
    message,
    split,
)

# The fixtures live with the helpers (tests/streams/conftest.py belongs to the PTG tests).
start_frames = frames_helpers.start_frames
frames = frames_helpers.frames


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def stream_key(label: str = "site-a", key: str = "cam1") -> str:
    return f"sb:stream_frame:{b64(label)}|{b64(key)}"


async def receive_frame(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], bytes]:
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    return split(msg.data)


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], int | None]:
    """The error frame a refused socket gets, and its close code."""
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    return json.loads(msg.data), ws.close_code


async def test_ws_frames_upload_with_the_websockets_client(frames: Frames, redis: Redis) -> None:
    token = frames.make_token("producer")
    async with websockets.connect(frames.url(f"/ws/frames?token={token}", "ws")) as ws:
        # A delimiter inside a header string no longer corrupts the message.
        await ws.send(message(header(warnings_json="look: --IMG-- here"), JPEG))
        reply = json.loads(await ws.recv())
        await ws.send(message(header(key="cam2", width="1920"), JPEG[:10]))
        second = json.loads(await ws.recv())
    assert reply["status"] == "ok" and reply["message"] == "Frame stored successfully."
    assert second["status"] == "ok"
    entries = await redis.xrange(stream_key())
    assert [e[0].decode() for e in entries] == [reply["id"]]
    assert entries[0][1][b"frame"] == JPEG
    assert entries[0][1][b"warnings"] == b"look: --IMG-- here"
    assert (await redis.xrange(stream_key("site-a", "cam2")))[0][1][b"width"] == b"1920"


BAD_MESSAGES = [
    (b"just bytes", 107, "Invalid data format: no --IMG-- delimiter"),
    (b"{not json" + DELIM + JPEG, 107, "no JSON header"),
    (b"[1, 2]" + DELIM + JPEG, 107, "the header must be a JSON object"),
    (message(header(key=""), JPEG), 107, "missing field 'key'"),
    (message(header(label=7), JPEG), 107, "field 'label' must be a string"),
    (message(header(), b"x" * 4097), 106, "frame of 4097 bytes is over the 4096 limit"),
    (message(header(label="site-b"), JPEG), 103, "token may not write 'site-b'/'cam1'"),
]


async def test_ws_frames_bad_messages_get_error_frames(start_frames, redis: Redis) -> None:
    app = await start_frames(FRAMES_MAX_FRAME_BYTES="4096")
    bystander = await app.ws("/ws/frames", labels=["site-a"])
    ws = await app.ws("/ws/frames", labels=["site-a"])
    await ws.send_bytes(message(header(), JPEG))
    first = (await ws.receive_json(timeout=5))["id"]
    for data, code, text in BAD_MESSAGES:
        await ws.send_bytes(data)
        reply = await ws.receive_json(timeout=5)
        assert reply["status"] == "error" and reply["error"]["code"] == code, (data[:40], reply)
        assert text in reply["error"]["message"] and reply["message"] == reply["error"]["message"]
    await ws.send_str("a text message")
    reply = await ws.receive_json(timeout=5)
    assert reply["error"] == {
        "code": 107,
        "message": "Invalid data format: expected a binary message",
    }
    # The socket is still usable, the other socket too, and nothing stored was touched.
    await ws.send_bytes(message(header(), JPEG + b"2"))
    second = (await ws.receive_json(timeout=5))["id"]
    await bystander.send_bytes(message(header(key="cam9"), JPEG))
    assert (await bystander.receive_json(timeout=5))["status"] == "ok"
    assert [e[0].decode() for e in await redis.xrange(stream_key())] == [first, second]
    assert await redis.exists(stream_key("site-b")) == 0
    await ws.close()
    await bystander.close()


async def test_oversized_message_is_closed_with_1009(start_frames, redis: Redis) -> None:
    app = await start_frames(FRAMES_MAX_FRAME_BYTES="4096", FRAMES_MAX_HEADER_BYTES="1024")
    ws = await app.ws("/ws/frames")
    await ws.send_bytes(message(header(), b"x" * 8000))
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1009
    assert await redis.exists(stream_key()) == 0


async def test_ws_labels_pushes_each_camera_only_when_it_changes(frames: Frames) -> None:
    await frames.upload("site-a", "cam1", JPEG + b"1")
    await frames.upload("site-a", "cam2", JPEG + b"2")
    ws = await frames.ws("/ws/labels/site-a")
    got = [await receive_frame(ws) for _ in range(2)]
    assert sorted((h["key"], f) for h, f in got) == [("cam1", JPEG + b"1"), ("cam2", JPEG + b"2")]
    # The same frame stored twice is pushed once; the next different one is pushed.
    registry = frames.app[registry_key]
    await frames.upload("site-a", "cam1", JPEG + b"X")
    assert (await receive_frame(ws))[1] == JPEG + b"X"
    await frames.upload("site-a", "cam1", JPEG + b"X")
    await wait_until(
        lambda: registry.get_sample_value("switchboard_streams_frames_unchanged_total") == 1,
        what="the repeated frame read and dropped",
    )
    await frames.upload("site-a", "cam1", JPEG + b"Y")
    got = [await receive_frame(ws)]
    assert [(h["key"], f) for h, f in got] == [("cam1", JPEG + b"Y")]
    head = got[0][0]
    assert set(head) == {
        "id",
        "key",
        "label",
        "warnings",
        "cone_polygons",
        "pole_polygons",
        "detection_items",
        "width",
        "height",
    }
    assert (head["label"], head["width"], head["height"]) == ("site-a", 640, 480)
    # A camera that appears after the socket connected is picked up.
    await frames.upload("site-a", "cam3", JPEG + b"3")
    h, f = await receive_frame(ws)
    assert (h["key"], f) == ("cam3", JPEG + b"3")
    # Nothing else arrives: no re-sends of unchanged frames.
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.5)
    await ws.send_json({"action": "ping"})
    assert await ws.receive_json(timeout=5) == {"action": "pong"}
    await ws.close()


async def test_label_and_stream_watchers_share_one_read_loop(frames: Frames, redis: Redis) -> None:
    await frames.upload("site-a", "cam1", JPEG + b"0")
    viewers = [await frames.ws("/ws/labels/site-a") for _ in range(10)]
    pullers = [await frames.ws("/ws/stream/site-a/cam1") for _ in range(10)]
    for ws in viewers:
        await receive_frame(ws)
    assert frames.app[hub_key].watched_streams == 1
    await frames.upload("site-a", "cam1", JPEG + b"1")
    for ws in viewers:
        assert (await receive_frame(ws))[1] == JPEG + b"1"
    for ws in pullers:
        await ws.send_json({"action": "pull"})
        assert (await receive_frame(ws))[1] == JPEG + b"1"
    # 20 sockets, one reader: the only connection whose last command is XREAD.
    readers = [c for c in await redis.client_list() if c["cmd"] == "xread"]
    assert len(readers) == 1, readers
    for ws in viewers + pullers:
        await ws.close()


async def test_ws_stream_pull_and_ping(start_frames) -> None:
    app = await start_frames(FRAMES_PULL_TIMEOUT_S="0.3")
    first = await app.upload("site-a", "cam1", JPEG + b"1")
    ws = await app.ws("/ws/stream/site-a/cam1")
    await ws.send_json({"action": "ping"})
    assert await ws.receive_json(timeout=5) == {"action": "pong"}
    await ws.send_json({"action": "pull"})
    h, f = await receive_frame(ws)
    assert (h["id"], h["key"], f) == (first, "cam1", JPEG + b"1")
    # Nothing new: the pull waits, then says so (the backend re-sent the same frame).
    await ws.send_json({"action": "pull"})
    reply = await ws.receive_json(timeout=5)
    assert reply["error"]["code"] == 114
    # A pull waiting for a frame is answered when one arrives.
    await ws.send_json({"action": "pull"})
    second = await app.upload("site-a", "cam1", JPEG + b"2")
    h, f = await receive_frame(ws)
    assert (h["id"], f) == (second, JPEG + b"2")
    await ws.send_str("{nope")
    assert (await ws.receive_json(timeout=5))["error"] == {
        "code": 107,
        "message": "Invalid JSON format",
    }
    await ws.send_json({"action": "dance"})
    assert (await ws.receive_json(timeout=5))["error"] == {
        "code": 107,
        "message": "unknown action 'dance'",
    }
    await ws.send_json({"type": "ping"})  # what the backend's own frontend sent
    assert await ws.receive_json(timeout=5) == {"action": "pong"}
    await ws.close()


async def test_unknown_label_or_key_is_refused(frames: Frames) -> None:
    await frames.upload("site-a", "cam1")
    ws = await frames.ws("/ws/labels/nowhere")
    body, code = await closed_with(ws)
    assert body["error"] == {
        "code": 102,
        "message": "No keys found for label 'nowhere'",
        "close": 1000,
    }
    assert code == 1000
    ws = await frames.ws("/ws/stream/site-a/cam404")
    body, code = await closed_with(ws)
    assert (body["error"]["code"], code) == (102, 1000)


@pytest.mark.parametrize("path", ["/ws/frames", "/ws/labels/site-a", "/ws/stream/site-a/cam1"])
async def test_ws_auth_refusals(frames: Frames, path: str) -> None:
    await frames.upload("site-a", "cam1")
    session = frames.http.session
    ws = await session.ws_connect(frames.url(path))
    body, code = await closed_with(ws)
    assert (body["error"]["code"], code) == (101, 4500)
    token = frames.make_token("alice", key="another-secret-0123456789-abcdefghijklmnop")
    ws = await session.ws_connect(frames.url(f"{path}?token={token}"))
    body, code = await closed_with(ws)
    assert (body["error"]["code"], code) == (101, 4500)
    token = frames.make_token("alice", ttl=-60)
    ws = await session.ws_connect(frames.url(f"{path}?token={token}"))
    body, code = await closed_with(ws)
    assert (body["error"]["code"], code) == (109, 4001)


@pytest.mark.parametrize("path", ["/ws/labels/site-b", "/ws/stream/site-b/cam1"])
async def test_watching_another_label_is_forbidden(frames: Frames, path: str) -> None:
    await frames.upload("site-b", "cam1")
    ws = await frames.ws(path, labels=["site-a"])
    body, code = await closed_with(ws)
    assert (body["error"]["code"], code) == (103, 4503)


async def test_label_viewer_gets_only_the_cameras_it_may_read(frames: Frames) -> None:
    await frames.upload("site-a", "cam1", JPEG + b"1")
    await frames.upload("site-a", "cam2", JPEG + b"2")
    ws = await frames.ws("/ws/labels/site-a", labels=["site-a|cam2"])
    h, _ = await receive_frame(ws)
    assert h["key"] == "cam2"
    await frames.upload("site-a", "cam1", JPEG + b"1b")
    await frames.upload("site-a", "cam2", JPEG + b"2b")
    h, f = await receive_frame(ws)
    assert (h["key"], f) == ("cam2", JPEG + b"2b")
    ws2 = await frames.ws("/ws/stream/site-a/cam1", labels=["site-a|cam2"])
    body, code = await closed_with(ws2)
    assert (body["error"]["code"], code) == (103, 4503)
    await ws.close()


async def test_session_limit_and_token_expiry_close_sockets(start_frames, make_token: Any) -> None:
    app = await start_frames(FRAMES_MAX_SESSION_S="0.6")
    await app.upload("site-a", "cam1")
    ws = await app.ws("/ws/labels/site-a")
    await receive_frame(ws)
    msg = await ws.receive(timeout=5)
    assert json.loads(msg.data) == {
        "status": "closing",
        "reason": "session_timeout",
        "message": "WebSocket session reached its 0.01-minute limit.",
    }
    assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1000
    app2 = await start_frames()
    token = make_token("alice", ttl=1)  # valid for a second (verification has 5 s leeway)
    ws = await app2.http.session.ws_connect(app2.url(f"/ws/stream/site-a/cam1?token={token}"))
    body, code = await closed_with(ws)
    assert (body["error"]["code"], code) == (109, 4001)


async def test_silent_socket_is_closed_after_the_idle_timeout(start_frames) -> None:
    app = await start_frames(FRAMES_IDLE_TIMEOUT_S="0.3")
    ws = await app.ws("/ws/frames")
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert (ws.close_code, msg.extra) == (1000, "Receive timeout")


async def test_shutdown_closes_frames_sockets_with_1012(start_frames) -> None:
    app = await start_frames()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(app.url("/ws/frames"), headers=app.auth())
        closing = asyncio.create_task(ws.receive(timeout=10))
        await app.http.server.close()  # runs on_shutdown, as SIGTERM does
        msg = await closing
    assert (msg.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 1012)


async def test_a_new_camera_joins_the_blocking_read_at_once(start_frames) -> None:
    # With a 20 s XREAD BLOCK, a camera added while the loop blocks is only read promptly
    # because the hub unblocks its reader (CLIENT UNBLOCK); otherwise the pull times out (2 s).
    app = await start_frames(FRAMES_READ_BLOCK_MS="20000")
    await app.upload("site-a", "cam1")
    await app.upload("site-b", "cam1")
    first = await app.ws("/ws/labels/site-a")
    await receive_frame(first)
    await wait_until(lambda: app.app[hub_key].blocked, what="the read loop blocked on site-a/cam1")
    second = await app.ws("/ws/stream/site-b/cam1")
    await second.send_json({"action": "pull"})
    await receive_frame(second)  # the latest frame, from the watch itself
    await app.upload("site-b", "cam1", JPEG + b"new")
    await second.send_json({"action": "pull"})
    assert (await receive_frame(second))[1] == JPEG + b"new"
    await first.close()
    await second.close()


async def test_a_slow_viewer_skips_to_the_newest_frame(frames: Frames) -> None:
    await frames.upload("site-a", "cam1", b"first")
    slow = await frames.ws("/ws/labels/site-a")  # connected, but reads nothing for now
    producer = await frames.ws("/ws/frames")
    big = bytes(256 * 1024)
    for n in range(40):
        await producer.send_bytes(message(header(), big + n.to_bytes(2, "big")))
        assert (await producer.receive_json(timeout=5))["status"] == "ok"
    registry = frames.app[registry_key]
    await wait_until(
        lambda: (registry.get_sample_value("switchboard_streams_frames_skipped_total") or 0) > 0,
        what="frames skipped for the slow viewer",
    )
    seen = []
    while not seen or seen[-1] != 39:
        _, frame = await receive_frame(slow)
        seen.append(-1 if frame == b"first" else int.from_bytes(frame[-2:], "big"))
    # It ends on the newest frame, in order, without having been sent every one of them.
    assert seen == sorted(seen) and len(seen) < 41, seen
    await slow.close()
    await producer.close()


def test_a_watcher_holds_one_frame_per_camera() -> None:
    from prometheus_client import CollectorRegistry

    from services.streams.frames.codec import Frame
    from services.streams.frames.hub import Watcher
    from services.streams.frames.metrics import FramesMetrics

    watcher = Watcher(FramesMetrics(CollectorRegistry()))
    for n in range(100):
        watcher.offer(Frame(stream="a", id=f"{n}-0", digest=b"", message=b""))
    watcher.offer(Frame(stream="b", id="7-0", digest=b"", message=b""))
    assert [(f.stream, f.id) for f in watcher.take()] == [("a", "99-0"), ("b", "7-0")]
    assert watcher.take() == []


async def test_viewers_keep_receiving_after_the_read_connection_is_killed(
    frames: Frames, redis: Redis
) -> None:
    await frames.upload("site-a", "cam1", JPEG + b"1")
    ws = await frames.ws("/ws/labels/site-a")
    await receive_frame(ws)
    await wait_until(lambda: frames.app[hub_key].blocked, what="the read loop in its XREAD")
    readers = [c for c in await redis.client_list() if c["cmd"] == "xread"]
    assert len(readers) == 1
    await redis.client_kill_filter(_id=readers[0]["id"])
    await frames.upload("site-a", "cam1", JPEG + b"2")
    assert (await receive_frame(ws))[1] == JPEG + b"2"
    new_readers = [c for c in await redis.client_list() if c["cmd"] == "xread"]
    assert [c["id"] for c in new_readers] != [readers[0]["id"]]
    await ws.close()
