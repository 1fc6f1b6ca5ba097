"""WebSocket /data/{ids}/pull: parameters, resume, flow control, the shared read loop."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from redis.asyncio import Redis

from services.streams.readers import hub_key
from tests.helpers import wait_until
from tests.streams.conftest import PREFIX, Streams, expect_refusal

Item = tuple[str, str, bytes]


async def add(redis: Redis, stream: str, *values: bytes) -> list[str]:
    return [(await redis.xadd(PREFIX + stream, {"d": v})).decode() for v in values]


async def recv_batch(ws: Any, wait_s: float = 5) -> list[Item]:
    """One text header `[[sid, id, start], ...]` and one binary frame, unpacked."""
    header = json.loads(await ws.receive_str(timeout=wait_s))
    body = await ws.receive_bytes(timeout=wait_s)
    starts = [o for _, _, o in header] + [len(body)]
    return [(s, i, body[starts[n] : starts[n + 1]]) for n, (s, i, _) in enumerate(header)]


def pull_url(streams: Streams, ids: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return streams.ws_url(f"/data/{ids}/pull?{query}")


async def test_count_and_last_entry_id_zero(streams: Streams, redis: Redis) -> None:
    ids = await add(redis, "cam", b"a", b"b", b"c", b"d", b"e")
    url = pull_url(streams, "cam", count="2", last_entry_id="0", timeout="300")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        got = [await recv_batch(ws) for _ in range(3)]
        assert got == [
            [("cam", ids[0], b"a"), ("cam", ids[1], b"b")],
            [("cam", ids[2], b"c"), ("cam", ids[3], b"d")],
            [("cam", ids[4], b"e")],
        ]
        # `timeout`: no data for 300 ms ends the pull with a normal close.
        msg = await ws.receive(timeout=5)
        assert msg.type.name == "CLOSE" and ws.close_code == 1000


async def test_absolute_id_resumes_after_it_and_dollar_waits_for_new(
    streams: Streams, redis: Redis
) -> None:
    ids = await add(redis, "cam", b"a", b"b", b"c")
    url = pull_url(streams, "cam", count="10", last_entry_id=ids[0], timeout="300")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        assert await recv_batch(ws) == [("cam", ids[1], b"b"), ("cam", ids[2], b"c")]
    url = pull_url(streams, "cam", count="10")  # last_entry_id=$ by default
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await wait_until(lambda: streams.app[hub_key].readers_of("cam"), what="reader joined")
        new = await add(redis, "cam", b"d")
        assert await recv_batch(ws) == [("cam", new[0], b"d")]


async def test_blocking_pull_is_woken_by_a_push(streams: Streams, redis: Redis) -> None:
    await add(redis, "cam", b"old")
    url = pull_url(streams, "cam", last_entry_id="$")
    session = streams.client.session
    async with session.ws_connect(url, headers=streams.auth()) as reader:
        await wait_until(lambda: streams.app[hub_key].readers_of("cam"), what="reader joined")
        push = streams.ws_url("/data/cam/push?ack=true")
        async with session.ws_connect(push, headers=streams.auth()) as writer:
            await writer.send_bytes(b"fresh")
            entry_id = await writer.receive_str(timeout=5)
        assert await recv_batch(reader, wait_s=2) == [("cam", entry_id, b"fresh")]


async def test_latest_and_dash_send_only_the_newest(streams: Streams, redis: Redis) -> None:
    ids = await add(redis, "cam", b"a", b"b", b"c")
    for params in ({"last_entry_id": "-"}, {"last_entry_id": "0", "latest": "true"}):
        url = pull_url(streams, "cam", count="1", timeout="300", **params)
        async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
            assert await recv_batch(ws) == [("cam", ids[2], b"c")]
            assert (await ws.receive(timeout=5)).type.name == "CLOSE"


async def test_two_streams_with_per_stream_ids(streams: Streams, redis: Redis) -> None:
    a = await add(redis, "a", b"a1", b"a2")
    b = await add(redis, "b", b"b1", b"b2")
    # `+` in a query string decodes as a space: both separators are accepted.
    for sep in ("+", "%2B"):
        last = f"{a[0]}{sep}0"
        url = pull_url(streams, "a+b", count="5", last_entry_id=last, timeout="300")
        async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
            got = await recv_batch(ws)
        assert sorted(got) == sorted([("a", a[1], b"a2"), ("b", b[0], b"b1"), ("b", b[1], b"b2")])


async def test_resume_after_disconnect_without_loss_or_duplicate(
    streams: Streams, redis: Redis
) -> None:
    """Ids within one ms past seq 9 (PTG compared them as strings and re-sent entries)."""
    pipe = redis.pipeline(transaction=False)
    for seq in range(1, 25):
        pipe.xadd(PREFIX + "cam", {"d": b"%d" % seq}, id=f"5000-{seq}")
    await pipe.execute()
    seen: list[str] = []
    url = pull_url(streams, "cam", count="7", last_entry_id="0", timeout="300")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        seen += [i for _, i, _ in await recv_batch(ws)]
        seen += [i for _, i, _ in await recv_batch(ws)]
    url = pull_url(streams, "cam", count="7", last_entry_id=seen[-1], timeout="300")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type.name != "TEXT":
                break
            header = json.loads(msg.data)
            await ws.receive_bytes(timeout=5)
            seen += [i for _, i, _ in header]
    assert seen == [f"5000-{seq}" for seq in range(1, 25)]


async def test_ack_is_credit_flow_control(streams: Streams, redis: Redis) -> None:
    await add(redis, "cam", *[b"%d" % i for i in range(6)])
    url = pull_url(streams, "cam", count="1", last_entry_id="0", ack="true")
    async with websockets.connect(url, additional_headers=streams.auth()) as ws:
        assert isinstance(await ws.recv(), str) and await ws.recv() == b"0"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)  # no credit: nothing more
        await ws.send(b"")  # ptgctl's ack
        assert isinstance(await ws.recv(), str) and await ws.recv() == b"1"
        await ws.send("3")  # three batches at once
        got = []
        for _ in range(3):
            await ws.recv()
            got.append(await ws.recv())
        assert got == [b"2", b"3", b"4"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)


async def test_onebyone_sends_a_pair_per_entry(streams: Streams, redis: Redis) -> None:
    ids = await add(redis, "cam", b"a", b"b")
    url = pull_url(streams, "cam", count="5", last_entry_id="0", onebyone="true", timeout="300")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        assert await recv_batch(ws) == [("cam", ids[0], b"a")]
        assert await recv_batch(ws) == [("cam", ids[1], b"b")]


async def test_many_readers_share_one_read_loop_and_slow_ones_catch_up(
    start_streams: Callable[..., Any], redis: Redis
) -> None:
    streams: Streams = await start_streams(STREAMS_READER_BUFFER="4")
    session = streams.client.session
    await add(redis, "cam", b"start")
    url = pull_url(streams, "cam", count="100", last_entry_id="$", latest="false")
    fast = [await session.ws_connect(url, headers=streams.auth()) for _ in range(5)]
    slow = await session.ws_connect(
        pull_url(streams, "cam", count="1", last_entry_id="$", latest="false", ack="true"),
        headers=streams.auth(),
    )
    hub = streams.app[hub_key]
    await wait_until(lambda: len(hub.readers_of("cam")) == 6, what="6 readers")
    assert hub.streams() == ["cam"]  # one read loop, one stream in it
    sent = await add(redis, "cam", *[b"%d" % i for i in range(40)])
    for ws in fast:
        got: list[str] = []
        while len(got) < 40:
            got += [i for _, i, _ in await recv_batch(ws)]
        assert got == sent
        await ws.close()
    # The slow reader's buffer holds at most 4 entries; it reads the rest from Redis.
    (slow_reader,) = hub.readers_of("cam")
    assert slow_reader.buffered <= 4
    async with session.get(streams.url("/metrics")) as r:
        text = await r.text()
    assert "switchboard_streams_reader_fell_behind_total 1.0" in text
    got = []
    while len(got) < 40:
        got += [i for _, i, _ in await recv_batch(slow)]
        await slow.send_bytes(b"")
    assert got == sent
    await slow.close()


async def test_unknown_stream_and_bad_parameters_are_refused(
    streams: Streams, redis: Redis
) -> None:
    await add(redis, "cam", b"a")
    session = streams.client.session
    cases = [
        (pull_url(streams, "cam+nothing"), 102, 4505),
        (pull_url(streams, "cam", count="0"), 107, 4501),
        (pull_url(streams, "cam", count="x"), 107, 4501),
        (pull_url(streams, "cam", last_entry_id="yesterday"), 107, 4501),
        (pull_url(streams, "cam", latest="maybe"), 107, 4501),
        (pull_url(streams, "*"), 107, 4501),
    ]
    for url, code, close in cases:
        async with session.ws_connect(url, headers=streams.auth()) as ws:
            await expect_refusal(ws, code, close)


async def test_read_permission_from_token_claims(
    streams: Streams, redis: Redis, make_token: Callable[..., str]
) -> None:
    await add(redis, "cam", b"a")
    await add(redis, "imu", b"b")
    token = make_token("bob", streams={"read": ["cam"], "write": []})
    url = pull_url(streams, "cam+imu", last_entry_id="0")
    async with streams.client.session.ws_connect(url, headers=streams.auth(token)) as ws:
        message = await expect_refusal(ws, 103, 4503)
        assert "imu" in message
    url = pull_url(streams, "cam", last_entry_id="0", token=token)
    async with streams.client.session.ws_connect(url) as ws:
        assert [d for *_, d in await recv_batch(ws)] == [b"a"]


async def test_a_stream_deleted_under_its_readers_does_not_spin_them(
    streams: Streams, redis: Redis
) -> None:
    await add(redis, "cam", b"a", b"b")
    session, auth = streams.client.session, streams.auth()
    first = await session.ws_connect(pull_url(streams, "cam", latest="false"), headers=auth)
    await wait_until(lambda: streams.app[hub_key].readers_of("cam"), what="first reader")
    async with streams.client.delete("/streams/cam", headers=auth) as r:
        assert r.status == 200
    async with streams.client.put("/streams/cam", json={}, headers=auth) as r:
        assert r.status == 200
    # The read loop's position is above everything the stream holds now.
    second = await session.ws_connect(
        pull_url(streams, "cam", last_entry_id="0", latest="false"), headers=auth
    )
    await wait_until(lambda: len(streams.app[hub_key].readers_of("cam")) == 2, what="2nd")
    before = (await redis.info("commandstats")).get("cmdstat_xread", {}).get("calls", 0)
    await asyncio.sleep(0.3)
    after = (await redis.info("commandstats")).get("cmdstat_xread", {}).get("calls", 0)
    assert after - before < 10
    new = await add(redis, "cam", b"c")
    for ws in (first, second):
        assert await recv_batch(ws) == [("cam", new[0], b"c")]
        await ws.close()


async def test_rate_limit_trailing_slash_and_ignored_parameters(
    streams: Streams, redis: Redis
) -> None:
    ids = await add(redis, "cam", b"a", b"b", b"c")
    url = streams.ws_url(
        "/data/cam/pull/?last_entry_id=0&count=1&rate_limit=0.15&timeout=500"
        "&time_sync_id=0&input=raw&output=raw"
    )
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        started = time.monotonic()
        got = [await recv_batch(ws) for _ in range(3)]
        elapsed = time.monotonic() - started
    assert got == [[("cam", i, d)] for i, d in zip(ids, [b"a", b"b", b"c"], strict=True)]
    assert elapsed >= 0.3  # two pauses of 0.15 s between three batches
