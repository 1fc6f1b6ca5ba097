"""Bad pushes get an error frame and a close code; acknowledged data and other sockets are fine."""

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.streams.conftest import Streams, expect_refusal, stored

GOOD = ([["cam", 2]], b"ok")


async def _acked_then(streams: Streams, redis: Redis, path: str, frames: list[Any]) -> Any:
    """Push one good batch (acked), then send `frames`; return the socket for the refusal."""
    ws = await streams.client.session.ws_connect(
        streams.ws_url(f"/data/{path}/push?batch=true&ack=true"), headers=streams.auth()
    )
    await ws.send_str(json.dumps(GOOD[0]))
    await ws.send_bytes(GOOD[1])
    acked = await ws.receive_str(timeout=5)
    for frame in frames:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
    return ws, acked


@pytest.mark.parametrize(
    ("frames", "code", "close"),
    [
        (["not json", b"x"], 107, 4501),
        (['{"a": 1}', b"x"], 107, 4501),  # not a list
        (['[["cam"]]', b"x"], 107, 4501),  # item without offset
        (['[["cam", "1"]]', b"x"], 107, 4501),  # offset not an integer
        (['[["elsewhere", 1]]', b"x"], 107, 4501),  # stream not in the path
        (['[["cam", 1]]', '[["cam", 1]]'], 107, 4501),  # two headers in a row
        ([b"no header"], 107, 4501),
        (['[["cam", 3], ["cam", 2]]', b"abc"], 107, 4508),  # decreasing
        (['[["cam", 9]]', b"abc"], 107, 4508),  # past the data
        (['[["cam", 2]]', b"abc"], 107, 4508),  # end offsets not ending at the data's end
        (['[["cam", "1-1", 1]]', b"a"], 107, 4506),  # not above the top
        (['[["cam", "x-y", 1]]', b"a"], 107, 4501),  # not an id
    ],
)
async def test_bad_batch_is_refused_and_acked_data_kept(
    streams: Streams, redis: Redis, frames: list[Any], code: int, close: int
) -> None:
    ws, acked = await _acked_then(streams, redis, "cam", frames)
    await expect_refusal(ws, code, close)
    assert await stored(redis, "cam") == [(acked, b"ok")]


async def test_explicit_id_refusal_writes_nothing_of_the_batch(
    streams: Streams, redis: Redis
) -> None:
    top = "9000000000000-5"
    header = [["cam", "9000000000000-6", 1], ["cam", top, 2]]  # second one not increasing
    ws, acked = await _acked_then(
        streams, redis, "cam", [json.dumps([["cam", top, 1]]), b"a", json.dumps(header), b"bc"]
    )
    assert await ws.receive_str(timeout=5) == top
    message = await expect_refusal(ws, 107, 4506)
    assert top in message
    assert await stored(redis, "cam") == [(acked, b"ok"), (top, b"a")]


async def test_text_on_an_unbatched_push_is_refused(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/cam/push?ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await ws.send_str("[1]")
        await expect_refusal(ws, 107, 4501)


async def test_star_with_plain_offsets_is_refused(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/*/push?batch=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await ws.send_str("[1]")
        await ws.send_bytes(b"a")
        await expect_refusal(ws, 107, 4501)
    assert await redis.keys("sb:data:*") == []


async def test_oversized_entry_is_refused(start_streams: Callable[..., Any], redis: Redis) -> None:
    streams: Streams = await start_streams(STREAMS_MAX_ENTRY_BYTES="100")
    ws, acked = await _acked_then(
        streams, redis, "cam", [json.dumps([["cam", 50], ["cam", 151]]), bytes(151)]
    )
    await expect_refusal(ws, 106, 4507)
    assert await stored(redis, "cam") == [(acked, b"ok")]
    # A stream's metadata may allow more.
    async with streams.client.put(
        "/streams/big", json={"max_entry_bytes": 1000}, headers=streams.auth()
    ) as r:
        assert r.status == 200
    url = streams.ws_url("/data/big/push?ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await ws.send_bytes(bytes(500))
        assert await ws.receive_str(timeout=5)


async def test_a_refused_socket_does_not_disturb_another(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/cam/push?batch=true&ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as good:
        bad, _ = await _acked_then(streams, redis, "cam", ["nope", b"x"])
        await expect_refusal(bad, 107, 4501)
        await good.send_str("[3]")
        await good.send_bytes(b"abc")
        assert await good.receive_str(timeout=5)
    assert [d for _, d in await stored(redis, "cam")] == [b"ok", b"abc"]


async def test_write_permission_from_token_claims(
    streams: Streams, redis: Redis, make_token: Callable[..., str]
) -> None:
    token = make_token("bob", streams={"read": ["*"], "write": ["cam*"]})
    headers = streams.auth(token)
    session = streams.client.session
    async with session.ws_connect(streams.ws_url("/data/imu/push"), headers=headers) as ws:
        await expect_refusal(ws, 103, 4503)
    url = streams.ws_url("/data/*/push?batch=true&ack=true")
    async with session.ws_connect(url, headers=headers) as ws:
        await ws.send_str('[["cam1", 1]]')
        await ws.send_bytes(b"a")
        assert await ws.receive_str(timeout=5)
        await ws.send_str('[["cam1", 1], ["imu", 2]]')
        await ws.send_bytes(b"ab")
        await expect_refusal(ws, 103, 4503)
    assert [d for _, d in await stored(redis, "cam1")] == [b"a"]
    assert await stored(redis, "imu") == []


async def test_handshake_without_a_valid_token_is_refused(
    streams: Streams, make_token: Callable[..., str]
) -> None:
    session = streams.client.session
    for headers in ({}, {"Authorization": "Bearer garbage"}, streams.auth(make_token(ttl=-30))):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(streams.ws_url("/data/cam/push"), headers=headers)
        assert info.value.status == 401
