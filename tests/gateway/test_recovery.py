"""Recovery from history: `subscribe` with `since`, publications racing it, positions history no
longer covers, and the `history` op."""

import asyncio
import threading
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from services.common.bus import Bus, encode_data
from services.common.channels import Namespace
from services.common.redis import Keys
from services.gateway.keys import node_key
from tests.gateway.wsclients import WireClient
from tests.helpers import Client, wait_until

FEED = {"feed": {"history_size": 2000, "history_ttl_s": 600}}
SMALL = {"small": {"history_size": 10, "history_ttl_s": 600}}


async def _publish(gw: Any, channel: str, data: Any) -> dict[str, str]:
    """Publish through the gateway's bus; return {offset, epoch}."""
    node = gw.app[node_key]
    position = await node.bus.publish(
        channel, encode_data(data), node.settings.namespaces.of(channel)
    )
    return {"offset": position.offset, "epoch": position.epoch}


async def _pubs(client: Client, count: int) -> list[dict[str, Any]]:
    return [await client.push() for _ in range(count)]


# -- recovery of what was missed ---------------------------------------------------------------


async def test_1000_missed_publications_come_back_in_order_then_live_ones_follow(
    start_gateway, channels_file
):
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(FEED))
    channel = "feed:main"
    early = await gw.connect("alice")
    first = await early.ok("subscribe", channel=channel)
    assert first["recovered"] is False and first["publications"] == []
    epoch = first["epoch"]
    assert epoch

    client = await gw.connect("bob")
    await client.ok("subscribe", channel=channel)
    live = [await _publish(gw, channel, {"seq": seq}) for seq in range(5)]
    seen = await _pubs(client, 5)
    assert [p["data"]["seq"] for p in seen] == list(range(5))
    assert [p["offset"] for p in seen] == [p["offset"] for p in live]
    await client.close()
    await early.close()

    missed = [await _publish(gw, channel, {"seq": seq}) for seq in range(5, 1005)]
    assert {p["epoch"] for p in missed} == {epoch}

    # From the last publication seen.
    back = await gw.connect("bob")
    result = await back.ok(
        "subscribe", channel=channel, since={"offset": seen[-1]["offset"], "epoch": epoch}
    )
    assert result["recovered"] is True
    assert result["epoch"] == epoch
    assert [p["data"]["seq"] for p in result["publications"]] == list(range(5, 1005))
    assert [p["offset"] for p in result["publications"]] == [p["offset"] for p in missed]
    assert result["offset"] == missed[-1]["offset"]

    # From the position the first subscribe answered (nothing published yet then).
    again = await gw.connect("alice")
    result = await again.ok(
        "subscribe", channel=channel, since={"offset": first["offset"], "epoch": epoch}
    )
    assert result["recovered"] is True
    assert [p["data"]["seq"] for p in result["publications"]] == list(range(1005))

    # Live publications continue right after the recovered ones.
    after = [await _publish(gw, channel, {"seq": seq}) for seq in range(1005, 1015)]
    for client in (back, again):
        pushes = await _pubs(client, 10)
        assert [p["data"]["seq"] for p in pushes] == list(range(1005, 1015))
        assert [p["offset"] for p in pushes] == [p["offset"] for p in after]
        assert client.pushes.empty()
        await client.close()


def _feed_namespace() -> Namespace:
    return Namespace(name="feed", **FEED["feed"])  # type: ignore[arg-type]


class Publisher:
    """Publishes {"seq": n} on one channel from a thread of its own, as fast as Redis allows.

    A thread (with its own loop and Redis connection) rather than a task: the publications then
    really run alongside what the gateway and the client do, not only at their await points.
    """

    def __init__(self, redis_url: str, channel: str) -> None:
        self.redis_url = redis_url
        self.channel = channel
        self.offsets: list[str] = []  # appended by the thread only, in publication order
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            client = Redis.from_url(self.redis_url, protocol=3)
            bus = Bus(client, Keys())
            namespace = _feed_namespace()
            try:
                while not self._stop.is_set():
                    data = encode_data({"seq": len(self.offsets)})
                    position = await bus.publish(self.channel, data, namespace)
                    self.offsets.append(position.offset)
            finally:
                await client.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 10)
        assert not self._thread.is_alive(), "publisher thread did not stop"
        if self._error is not None:
            raise self._error


def _check_segment(index: int, start: int, recovered: int, seg: list[dict[str, Any]]) -> None:
    """One subscription's publications, in wire order, must be start, start+1, ... exactly."""
    seqs = [p["data"]["seq"] for p in seg]
    expected = list(range(start, start + len(seqs)))
    if seqs != expected:
        bad = next(i for i, (a, b) in enumerate(zip(seqs, expected, strict=True)) if a != b)
        where = "recovered" if bad < recovered else "live push"
        raise AssertionError(
            f"subscription {index} (from seq {start}; {recovered} recovered): item {bad} "
            f"({where}) is seq {seqs[bad]}, expected {expected[bad]}; "
            f"around it: {seqs[max(0, bad - 3) : bad + 3]}"
        )


async def _race(redis_url: str, connect: Any, channel: str, *, rounds: int, company: bool) -> None:
    """A client keeps leaving and coming back with `since` while a publisher never stops.

    Each round it consumes some publications (sometimes all that arrived, so that it comes back
    from the live edge, sometimes a few, so that it lags), leaves (unsubscribing on the same
    socket, or dropping the socket for a new one) and subscribes again from the last one it
    consumed. Every subscription's publications, recovered then pushed, in wire order, must
    continue exactly from its `since`; what the client consumed, end to end, must be every
    publication once, in order. With `company`, another socket stays subscribed throughout and
    must see every publication live, once, in order.
    """
    client = WireClient(await connect("alice"))
    reply, _ = await client.until_reply(await client.send("subscribe", channel=channel))
    epoch = reply["result"]["epoch"]
    watcher = None
    if company:
        watcher = WireClient(await connect("carol"))
        await watcher.until_reply(await watcher.send("subscribe", channel=channel))

    publisher = Publisher(redis_url, channel)
    consumed: list[dict[str, Any]] = []
    seg: list[dict[str, Any]] = []  # the current subscription's publications, in wire order
    pos = 0  # how many of them the client consumed
    start, recovered = 0, 0

    def arrived(objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            assert obj.get("push") == "pub", obj
            seg.append(obj)

    async def take() -> None:
        nonlocal pos
        while pos >= len(seg):
            arrived([await client.next()])
        consumed.append(seg[pos])
        pos += 1

    publisher.start()
    try:
        for round_no in range(rounds):
            if round_no % 3 == 0:
                count = len(seg) - pos + client.wire.qsize() + 1  # everything so far, and one
            else:
                count = 1 + round_no % 4
            for _ in range(count):
                await take()
            since = {"offset": consumed[-1]["offset"], "epoch": epoch}
            if round_no % 2:
                # Leave on the same socket: pushes before the reply were already in flight.
                reply, before = await client.until_reply(
                    await client.send("unsubscribe", channel=channel)
                )
                assert "result" in reply, reply
                arrived(before)
            else:
                await client.ws.close()
                while (obj := await client.wire.get()) is not None:
                    arrived([obj])
                await client.close()
                client = WireClient(await connect("alice"))
            _check_segment(round_no, start, recovered, seg)

            reply, before = await client.until_reply(
                await client.send("subscribe", channel=channel, since=since)
            )
            assert before == [], f"round {round_no}: pushed before the subscribe reply: {before}"
            result = reply.get("result")
            assert result is not None, reply
            assert result["recovered"] is True, f"round {round_no}: {result}"
            assert result["epoch"] == epoch
            seg, pos = [], 0
            start, recovered = consumed[-1]["data"]["seq"] + 1, len(result["publications"])
            arrived([{"push": "pub", **p} for p in result["publications"]])
    finally:
        await publisher.stop()
    published = publisher.offsets

    # Read on up to the last publication.
    while not consumed or consumed[-1]["offset"] != published[-1]:
        await take()
    _check_segment(rounds, start, recovered, seg)
    seqs = [p["data"]["seq"] for p in consumed]
    assert seqs == list(range(len(published))), f"{len(seqs)} consumed of {len(published)}"
    assert [p["offset"] for p in consumed] == published
    await client.close()

    if watcher is not None:
        seen: list[int] = []
        while not seen or seen[-1] != len(published) - 1:
            push = await watcher.next()
            if push.get("push") == "pub":
                seen.append(push["data"]["seq"])
        assert seen == list(range(len(published)))
        await watcher.close()


@pytest.mark.parametrize("company", [False, True], ids=["alone", "with-company"])
async def test_recovery_while_publications_race_the_subscribe(
    start_gateway, channels_file, make_token, redis_server, company
):
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(FEED))

    async def connect(user: str) -> aiohttp.ClientWebSocketResponse:
        headers = {"Authorization": f"Bearer {make_token(user)}"}
        return await gw.http.session.ws_connect(gw.url("/ws"), headers=headers)

    await _race(redis_server.url, connect, "feed:race", rounds=200, company=company)


async def test_recovery_race_against_a_gateway_process(
    gateway_process, channels_file, make_token, redis_server
):
    """The same race with the gateway in its own process."""
    gp = await gateway_process(SWITCHBOARD_CHANNELS=channels_file(FEED))
    async with aiohttp.ClientSession() as session:

        async def connect(user: str) -> aiohttp.ClientWebSocketResponse:
            headers = {"Authorization": f"Bearer {make_token(user)}"}
            return await session.ws_connect(gp.url("/ws"), headers=headers)

        await _race(redis_server.url, connect, "feed:race", rounds=200, company=True)


# -- recovered: false ------------------------------------------------------------------------------


@pytest.mark.parametrize("missed", [10, 11, 50])
async def test_recovery_only_while_history_covers_the_gap(start_gateway, channels_file, missed):
    """history_size 10: ten missed publications recover; eleven or more do not."""
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(SMALL))
    channel = "small:x"
    client = await gw.connect("alice")
    epoch = (await client.ok("subscribe", channel=channel))["epoch"]
    await _publish(gw, channel, {"seq": 0})
    last = await client.push()
    await client.close()

    offsets = [(await _publish(gw, channel, {"seq": s}))["offset"] for s in range(1, missed + 1)]

    back = await gw.connect("alice")
    result = await back.ok(
        "subscribe", channel=channel, since={"offset": last["offset"], "epoch": epoch}
    )
    assert result["epoch"] == epoch
    assert result["offset"] == offsets[-1]
    if missed <= 10:
        assert result["recovered"] is True
        assert [p["offset"] for p in result["publications"]] == offsets
    else:
        assert result["recovered"] is False
        assert result["publications"] == []
    # Either way, live publications follow from the latest offset.
    after = await _publish(gw, channel, {"seq": "live"})
    push = await back.push()
    assert (push["offset"], push["data"]) == (after["offset"], {"seq": "live"})
    await back.close()


async def test_wrong_epoch_is_not_recovered(start_gateway, channels_file):
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(FEED))
    channel = "feed:epoch"
    positions = [await _publish(gw, channel, {"seq": s}) for s in range(5)]
    client = await gw.connect("alice")
    result = await client.ok(
        "subscribe", channel=channel, since={"offset": positions[1]["offset"], "epoch": "nope"}
    )
    assert result["recovered"] is False
    assert result["publications"] == []
    assert result["offset"] == positions[-1]["offset"]
    assert result["epoch"] == positions[-1]["epoch"] != "nope"
    await client.close()


async def test_history_lost_in_a_flushed_redis_changes_the_epoch(
    start_gateway, channels_file, redis: Redis
):
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(FEED))
    channel = "feed:flush"
    old = [await _publish(gw, channel, {"seq": s}) for s in range(3)]
    since = {"offset": old[0]["offset"], "epoch": old[0]["epoch"]}

    await redis.flushall()

    # Nothing published since the flush: the history is empty, the epoch is new.
    client = await gw.connect("alice")
    result = await client.ok("subscribe", channel=channel, since=since)
    assert result["recovered"] is False
    assert result["publications"] == []
    assert result["epoch"] != since["epoch"]
    await client.close()

    # Publications after the flush have later offsets, but the two lost ones are not among
    # them: the old epoch must not recover.
    new = [await _publish(gw, channel, {"seq": s}) for s in range(3, 6)]
    assert new[0]["epoch"] == result["epoch"]
    client = await gw.connect("alice")
    result = await client.ok("subscribe", channel=channel, since=since)
    assert result["recovered"] is False, result
    assert result["publications"] == []
    assert result["epoch"] == new[0]["epoch"]
    assert result["offset"] == new[-1]["offset"]
    await client.close()


async def test_history_expired_while_subscribers_kept_reading_is_not_recovered(
    start_gateway, channels_file, redis: Redis
):
    """The history stream expires after its TTL with no publication. Subscribes and history
    reads in the meantime must not let a position from before the expiry "recover" across
    the publications that expired with it."""
    gw = await start_gateway(
        SWITCHBOARD_CHANNELS=channels_file({"brief": {"history_size": 100, "history_ttl_s": 0.5}})
    )
    channel = "brief:x"
    client = await gw.connect("alice")
    epoch = (await client.ok("subscribe", channel=channel))["epoch"]
    await _publish(gw, channel, {"seq": 0})
    seen = await client.push()
    await client.close()
    lost = [await _publish(gw, channel, {"seq": s}) for s in (1, 2)]  # missed, then expire

    history_key = gw.app[node_key].keys.history(channel)

    async def history_expired() -> bool:
        # Meanwhile others keep reading the channel's history (no rate limit on the API).
        status, body = await gw.api("GET", "/api/history", params={"channel": channel})
        assert status == 200, body
        return not await redis.exists(history_key)

    await wait_until(history_expired, timeout_s=10, what="history stream expired")
    after = await _publish(gw, channel, {"seq": 3})

    back = await gw.connect("alice")
    result = await back.ok(
        "subscribe", channel=channel, since={"offset": seen["offset"], "epoch": epoch}
    )
    recovered = [p["data"]["seq"] for p in result["publications"]]
    assert not (result["recovered"] is True and recovered == [3]), (
        f"recovered: true with only {after['offset']}, but {[p['offset'] for p in lost]} "
        f"were lost with the expired history (epoch {result['epoch']} unchanged)"
    )
    assert result["recovered"] is False, result
    await back.close()


# -- the history op ------------------------------------------------------------------------------


async def test_history_op(start_gateway, channels_file):
    gw = await start_gateway(
        SWITCHBOARD_CHANNELS=channels_file({**SMALL, "live": {"history_size": 0}})
    )
    channel = "small:h"
    positions = [await _publish(gw, channel, {"seq": s}) for s in range(15)]
    offsets = [p["offset"] for p in positions]
    epoch = positions[0]["epoch"]
    client = await gw.connect("alice")

    def seqs(result: dict[str, Any]) -> list[int]:
        return [p["data"]["seq"] for p in result["publications"]]

    last = await client.ok("history", channel=channel)
    assert seqs(last) == list(range(5, 15))  # the last history_size, oldest first
    assert [p["offset"] for p in last["publications"]] == offsets[5:]
    assert (last["offset"], last["epoch"]) == (offsets[-1], epoch)
    assert "recovered" not in last

    assert seqs(await client.ok("history", channel=channel, limit=3)) == [12, 13, 14]
    assert seqs(await client.ok("history", channel=channel, limit=100)) == list(range(5, 15))

    since = {"offset": offsets[9], "epoch": epoch}
    assert seqs(await client.ok("history", channel=channel, since=since)) == [10, 11, 12, 13, 14]
    assert seqs(await client.ok("history", channel=channel, since=since, limit=2)) == [10, 11]
    top = {"offset": offsets[-1], "epoch": epoch}
    assert seqs(await client.ok("history", channel=channel, since=top)) == []
    oldest_kept = {"offset": offsets[4], "epoch": epoch}
    assert seqs(await client.ok("history", channel=channel, since=oldest_kept)) == list(
        range(5, 15)
    )

    # Past history, or another epoch: error 112.
    for position in ({"offset": offsets[3], "epoch": epoch}, {**since, "epoch": "other"}):
        reply = await client.call("history", channel=channel, since=position)
        assert reply["error"]["code"] == 112, reply

    # No history in this namespace: 108.
    reply = await client.call("history", channel="live:x")
    assert reply["error"]["code"] == 108, reply

    # The server API agrees.
    status, body = await gw.api("GET", "/api/history", params={"channel": channel, "limit": "3"})
    assert status == 200, body
    assert [p["data"]["seq"] for p in body["publications"]] == [12, 13, 14]
    status, body = await gw.api(
        "GET", "/api/history", params={"channel": channel, "since": offsets[3], "epoch": epoch}
    )
    assert status == 410 and body["error"]["code"] == 112, body
    await client.close()
