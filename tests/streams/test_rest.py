"""REST: /streams CRUD with XMETA metadata, GET/POST /data, trailing slashes, MJPEG, metrics."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from services.streams.readers import hub_key
from tests.helpers import wait_until
from tests.streams.conftest import PREFIX, Streams, stored

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-body\xff\xd9"


async def test_streams_metadata_listing_and_delete(streams: Streams, redis: Redis) -> None:
    client, auth = streams.client, streams.auth()
    async with client.put("/streams/cam", json={"fps": 30}, headers=auth) as r:
        assert (r.status, await r.json()) == (200, {"fps": 30})
    async with client.put("/streams/cam/", json={"kind": "rgb"}, headers=auth) as r:
        assert await r.json() == {"fps": 30, "kind": "rgb"}  # merged
    assert json.loads(await redis.get(PREFIX + "XMETA:cam")) == {"fps": 30, "kind": "rgb"}
    await redis.xadd(PREFIX + "imu", {"d": b"x"})
    async with client.post("/data/imu", headers=auth, data=_form([("imu", b"y")])) as r:
        assert r.status == 200
    # A stream with metadata only is listed too (PTG's SCAN TYPE stream missed it).
    for path in ("/streams", "/streams/"):
        async with client.get(path, headers=auth) as r:
            assert await r.json() == ["cam", "imu"]
    async with client.get("/streams/imu", headers=auth) as r:
        info = await r.json()
    assert info["sid"] == "imu" and info["length"] == 2 and info["meta"] == {}
    assert info["first-entry-time"].startswith("20")
    async with client.get("/streams", params={"info": "true"}, headers=auth) as r:
        assert [i["sid"] for i in await r.json()] == ["cam", "imu"]
    async with client.put(
        "/streams/cam", json={"x": 1}, params={"override": "true"}, headers=auth
    ) as r:
        assert await r.json() == {"x": 1}
    async with client.delete("/streams/cam+imu", headers=auth) as r:
        assert r.status == 200
    assert await redis.exists(PREFIX + "imu", PREFIX + "XMETA:cam") == 0
    async with client.get("/streams/imu", headers=auth) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (404, 102)
    async with client.put("/streams/cam", json={"maxlen": -1}, headers=auth) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (400, 107)
    async with client.put("/streams/cam", data="[1]", headers=auth) as r:
        assert r.status == 400


def _form(parts: list[tuple[str, bytes]]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, data in parts:
        form.add_field("entries", data, filename=name, content_type="application/octet-stream")
    return form


async def test_post_and_get_data(streams: Streams, redis: Redis) -> None:
    client, auth = streams.client, streams.auth()
    async with client.post("/data/*", headers=auth, data=_form([("a", b"1"), ("b", b"22")])) as r:
        ids = await r.json()
    assert await stored(redis, "a") == [(ids[0], b"1")]
    async with client.post("/data/a/", headers=auth, data=_form([("x", b"3"), ("y", b"4")])) as r:
        more = await r.json()
    assert [d for _, d in await stored(redis, "a")] == [b"1", b"3", b"4"]
    # Default `last_entry_id=*`: the newest `count` entries, oldest first.
    async with client.get("/data/a+b", params={"count": "2"}, headers=auth) as r:
        assert r.content_type == "application/octet-stream"
        offsets = json.loads(r.headers["entry-offset"])
        body = await r.read()
    assert offsets == [["a", more[0], 0], ["a", more[1], 1], ["b", ids[1], 2]]
    assert body == b"3422"
    async with client.get(
        "/data/a", params={"last_entry_id": ids[0], "count": "10"}, headers=auth
    ) as r:
        assert await r.read() == b"34"
    async with client.get("/data/a", params={"last_entry_id": "$"}, headers=auth) as r:
        assert (await r.read(), r.headers["entry-offset"]) == (b"", "[]")
    async with client.post("/data/a+b", headers=auth, data=_form([("c", b"1")])) as r:
        assert r.status == 400


async def test_ping_and_permissions_on_rest(
    streams: Streams, redis: Redis, make_token: Callable[..., str]
) -> None:
    client = streams.client
    await redis.xadd(PREFIX + "cam", {"d": b"x"})
    await redis.xadd(PREFIX + "imu", {"d": b"x"})
    await redis.sadd(PREFIX + "XINDEX", "cam", "imu")
    reader = streams.auth(make_token("r", streams={"read": ["cam"], "write": []}))
    async with client.get("/ping", headers=reader) as r:
        assert await r.json() is True
    async with client.get("/streams", headers=reader) as r:
        assert await r.json() == ["cam"]  # only what the token may read
    for method, path in (("GET", "/data/imu"), ("PUT", "/streams/cam"), ("DELETE", "/streams/cam")):
        async with client.request(method, path, headers=reader, json={}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (403, 103), path
    nobody = await _start_closed(streams, make_token)
    assert nobody == 403


async def _start_closed(streams: Streams, make_token: Callable[..., str]) -> int:
    token = make_token("x", streams=[])
    async with streams.client.get("/data/cam", headers=streams.auth(token)) as r:
        return r.status


async def test_default_access_none_refuses_tokens_without_claims(
    start_streams: Callable[..., Any], redis: Redis
) -> None:
    streams: Streams = await start_streams(STREAMS_DEFAULT_ACCESS="read")
    await redis.xadd(PREFIX + "cam", {"d": b"x"})
    async with streams.client.get("/data/cam", headers=streams.auth()) as r:
        assert r.status == 200
    async with streams.client.post(
        "/data/cam", headers=streams.auth(), data=_form([("c", b"1")])
    ) as r:
        assert r.status == 403


async def _mjpeg_parts(content: aiohttp.StreamReader, seen: bytearray, count: int) -> list[bytes]:
    """Read until `count` whole parts are in: a part is whole once the next boundary and its
    headers have arrived (what a browser waits for too)."""
    head = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"
    while seen.count(head) < count + 1:
        seen += await asyncio.wait_for(content.readany(), 5)
    parts = bytes(seen).split(head)[1:]
    return [part.removesuffix(b"\r\n") for part in parts[:count]]


async def test_mjpeg_is_read_by_an_http_client(streams: Streams, redis: Redis) -> None:
    await redis.xadd(PREFIX + "main", {"d": JPEG})
    url = streams.url("/mjpeg/main")
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params={"token": streams.token}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "multipart/x-mixed-replace;boundary=frame"
            seen = bytearray()
            # The only frame there is shows at once: its part is closed by the next one's head.
            assert await _mjpeg_parts(r.content, seen, 1) == [JPEG]
            await wait_until(lambda: streams.app[hub_key].readers_of("main"), what="viewer")
            await redis.xadd(PREFIX + "main", {"d": b"not a jpeg"})
            second_frame = JPEG.replace(b"fake", b"next")
            await redis.xadd(PREFIX + "main", {"d": second_frame})
            assert await _mjpeg_parts(r.content, seen, 2) == [JPEG, second_frame]
        async with session.get(url) as r:
            assert r.status == 401
        async with session.get(streams.url("/mjpeg/none"), params={"token": streams.token}) as r:
            assert r.status == 404
    await wait_until(lambda: streams.app[hub_key].readers_of("main") == [], what="viewer gone")


async def test_metrics_count_traffic_per_stream(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/cam/push?ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await ws.send_bytes(b"12345")
        await ws.receive_str(timeout=5)
    pull = streams.ws_url("/data/cam/pull?last_entry_id=0&timeout=200")
    async with streams.client.session.ws_connect(pull, headers=streams.auth()) as ws:
        await ws.receive_str(timeout=5)
        await ws.receive_bytes(timeout=5)
    async with streams.client.get("/metrics") as r:
        text = await r.text()
    for line in (
        'switchboard_streams_entries_in_total{stream="cam"} 1.0',
        'switchboard_streams_bytes_in_total{stream="cam"} 5.0',
        'switchboard_streams_entries_out_total{stream="cam"} 1.0',
        'switchboard_streams_bytes_out_total{stream="cam"} 5.0',
        "switchboard_streams_push_seconds_count 1.0",
    ):
        assert line in text, line
    assert "switchboard_streams_reader_lag_seconds_count 1.0" in text
    assert 'switchboard_streams_readers{stream="cam"}' in text
