"""After the gateway's pub/sub link to Redis breaks and comes back, live subscribers get what
was published meanwhile from history, in order, exactly once, with no client action; when
history cannot fill the gap they are told to recover themselves (close 4007)."""

import asyncio

from redis.asyncio import Redis

from services.common.bus import encode_data
from services.gateway.keys import node_key
from tests.helpers import wait_until

FEED = {"feed": {"history_size": 1000, "history_ttl_s": 600}}


async def _kill_pubsub(redis: Redis) -> None:
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")


async def test_publications_during_a_pubsub_outage_are_delivered_in_order(
    start_gateway, channels_file, redis: Redis
):
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(FEED))
    node = gw.app[node_key]
    clients = [await gw.connect(f"u{i}") for i in range(3)]
    for client in clients:
        await client.ok("subscribe", channel="feed:x")
    namespace = node.settings.namespaces.of("feed:x")

    async def publish(seq: int) -> None:
        await node.bus.publish("feed:x", encode_data({"seq": seq}), namespace)

    for round_ in range(5):
        base = round_ * 100
        await publish(base)
        await _kill_pubsub(redis)
        # Published while the link is down or coming back: some only history has.
        for seq in range(base + 1, base + 40):
            await publish(seq)
            if seq % 10 == 0:
                await asyncio.sleep(0.005)
        for client in clients:
            got = [(await client.push(timeout_s=10))["data"]["seq"] for _ in range(40)]
            assert got == list(range(base, base + 40)), got
    await wait_until(lambda: node.subscriber.connected, what="pub/sub back")
    for client in clients:
        assert client.pushes.empty(), "a duplicate arrived"
        assert (await client.ok("ping")) == {}
        await client.close()


async def test_history_lost_during_an_outage_closes_subscribers_with_4007(
    start_gateway, channels_file, redis: Redis
):
    gw = await start_gateway(
        SWITCHBOARD_CHANNELS=channels_file({**FEED, "live": {"history_size": 0}})
    )
    node = gw.app[node_key]
    history_client = await gw.connect("alice")
    await history_client.ok("subscribe", channel="feed:y")
    plain = await gw.connect("bob")
    await plain.ok("subscribe", channel="live:z")
    namespace = node.settings.namespaces.of("feed:y")
    await node.bus.publish("feed:y", encode_data({"seq": 0}), namespace)
    await history_client.push()

    async with redis.pipeline(transaction=True) as pipe:
        pipe.flushall()
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await pipe.execute()

    disconnect = await history_client.push(kind="disconnect", timeout_s=10)
    assert disconnect["code"] == 4007 and disconnect["reconnect"] is True
    assert await history_client.closed() == 4007
    # A channel that needs nothing from history is not disturbed.
    assert (await plain.ok("ping")) == {}
    await plain.close()
