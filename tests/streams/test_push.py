"""WebSocket /data/{ids}/push: header shapes, both offset conventions, acks, explicit ids."""

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from redis.asyncio import Redis

from tests.helpers import wait_until
from tests.streams.conftest import Streams, stored


async def _push(ws: Any, header: Any, data: bytes) -> list[str]:
    await ws.send_str(json.dumps(header))
    await ws.send_bytes(data)
    return str(await ws.receive_str(timeout=5)).split(",")


async def test_end_offsets_as_ptgctl_sends_them(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/cam+imu/push?batch=true&ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        ids = await _push(ws, [["cam", 3], ["imu", 5], ["cam", 9]], b"abcdeFGHIJ"[:9])
        assert len(ids) == 3
        # The ack comes after the XADDs: the entries are readable at once.
        assert await stored(redis, "cam") == [(ids[0], b"abc"), (ids[2], b"FGHI")]
        assert await stored(redis, "imu") == [(ids[1], b"de")]


async def test_readme_start_offsets_keep_the_last_entry(streams: Streams, redis: Redis) -> None:
    """PTG dropped the last entry of a batch with start offsets (its README's convention)."""
    url = streams.ws_url("/data/*/push?batch=true&ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        data = b"x" * 100 + b"y" * 50 + b"z" * 7
        ids = await _push(ws, [["stream0", 0], ["stream2", 100], ["stream0", 150]], data)
    assert [d for _, d in await stored(redis, "stream0")] == [b"x" * 100, b"z" * 7]
    assert await stored(redis, "stream2") == [(ids[1], b"y" * 50)]


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [([2, 5, 6], [b"ab", b"cde", b"f"]), ([0, 2, 5], [b"ab", b"cde", b"f"]), ([6], [b"abcdef"])],
)
async def test_plain_offsets_for_the_path_stream(
    streams: Streams, redis: Redis, offsets: list[int], expected: list[bytes]
) -> None:
    url = streams.ws_url("/data/cam/push?batch=1&ack=1&parse_meta=false")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await _push(ws, offsets, b"abcdef")
    assert [d for _, d in await stored(redis, "cam")] == expected


async def test_plain_offsets_with_a_plus_b_are_positional(streams: Streams, redis: Redis) -> None:
    # `a+b` implies batch (the README says so; PTG asserted it).
    url = streams.ws_url("/data/a+b/push?ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await _push(ws, [1, 3], b"abc")
    assert [d for _, d in await stored(redis, "a")] == [b"a"]
    assert [d for _, d in await stored(redis, "b")] == [b"bc"]


async def test_explicit_entry_ids(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/cam/push?batch=true&ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        header = [["cam", "1000-1", 2], ["cam", "1000-2", 4], ["cam", "1001", 6]]
        assert await _push(ws, header, b"aabbcc") == ["1000-1", "1000-2", "1001-0"]
        # `ms-*` in the same ms as the top continues its sequence; `*` lets Redis choose.
        ids = await _push(ws, [["cam", "1001-*", 1], ["cam", "*", 2]], b"de")
        assert ids[0] == "1001-1" and int(ids[1].split("-")[0]) > 1001
    assert [i for i, _ in await stored(redis, "cam")] == [
        "1000-1",
        "1000-2",
        "1001-0",
        "1001-1",
        ids[1],
    ]


async def test_unbatched_binary_frames_are_one_entry_each(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/mic0/push/?ack=true")  # trailing slash as on PTG
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        acks = []
        for chunk in (b"one", b"two", b""):
            await ws.send_bytes(chunk)
            acks.append(await ws.receive_str(timeout=5))
    assert await stored(redis, "mic0") == list(zip(acks, [b"one", b"two", b""], strict=True))


async def test_push_without_ack_stores_everything(streams: Streams, redis: Redis) -> None:
    url = streams.ws_url("/data/mic0/push")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        for i in range(50):
            await ws.send_bytes(b"%d" % i)

    async def all_there() -> bool:
        return len(await stored(redis, "mic0")) == 50

    await wait_until(all_there, what="50 entries")
    assert [d for _, d in await stored(redis, "mic0")] == [b"%d" % i for i in range(50)]


async def test_websockets_client_with_bearer_header_as_ptgctl(
    streams: Streams, redis: Redis
) -> None:
    url = streams.ws_url("/data/main+depth/push?batch=true&ack=true")
    async with websockets.connect(url, additional_headers=streams.auth()) as ws:
        await ws.send(json.dumps([["main", 4], ["depth", 6]]))
        await ws.send(b"jpegzz")
        ack = await ws.recv()
        assert isinstance(ack, str) and len(ack.split(",")) == 2
    assert [d for _, d in await stored(redis, "main")] == [b"jpeg"]


async def test_retention_maxlen_approximate_by_default_and_exact_on_request(
    start_streams: Callable[..., Any], redis: Redis
) -> None:
    streams: Streams = await start_streams(STREAMS_MAXLEN="5")
    async with streams.client.put(
        "/streams/exact", json={"maxlen_exact": True}, headers=streams.auth()
    ) as r:
        assert r.status == 200 and await r.json() == {"maxlen_exact": True}
    for stream in ("approx", "exact"):
        url = streams.ws_url(f"/data/{stream}/push?batch=true&ack=true")
        async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
            for _ in range(3):
                await _push(ws, list(range(0, 100)), bytes(100))
    assert len(await stored(redis, "exact")) == 5
    approx = len(await stored(redis, "approx"))
    assert 5 <= approx < 300  # `~` trims whole radix-tree nodes


async def test_retention_by_age(streams: Streams, redis: Redis) -> None:
    async with streams.client.put(
        "/streams/old",
        json={"max_age_s": 60, "maxlen": 0, "maxlen_exact": True},
        headers=streams.auth(),
    ) as r:
        assert r.status == 200
    url = streams.ws_url("/data/old/push?batch=true&ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        old = int(time.time() * 1000) - 120_000
        await _push(ws, [["old", f"{old}-0", 1], ["old", f"{old + 1}-0", 2]], b"ab")
        assert await stored(redis, "old") == []  # older than 60 s: trimmed by the same batch
        await _push(ws, [1], b"c")
    assert [d for _, d in await stored(redis, "old")] == [b"c"]


async def test_announce_on_the_gateway_channel(
    start_streams: Callable[..., Any], redis: Redis
) -> None:
    streams: Streams = await start_streams(STREAMS_ANNOUNCE="true")
    pubsub = redis.pubsub()
    await pubsub.subscribe("sb:ch:{streams:cam}")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    url = streams.ws_url("/data/cam/push?batch=true&ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        ids = await _push(ws, [2, 5], b"abcde")
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    await pubsub.aclose()
    assert msg is not None
    offset, _, frame = msg["data"].partition(b"\n")
    assert offset == b""
    assert json.loads(frame) == {
        "push": "pub",
        "channel": "streams:cam",
        "offset": "",
        "data": {"stream": "cam", "ids": ids, "sizes": [2, 3]},
    }
