"""The consumer reads its next batch with the writes of the one in hand: nothing it read that
way may be lost, applied out of order or left pending, even when it is stopped meanwhile."""

from redis.asyncio import Redis

from services.common.redis import Keys
from services.common.rooms import RoomCommand
from services.rooms.keys import consumer_key
from tests.helpers import wait_until

KEYS = Keys()


async def _queue_updates(redis: Redis, count: int) -> None:
    await redis.xgroup_create(KEYS.rooms_cmd, "rooms", id="0", mkstream=True)
    join = RoomCommand(op="join", room="r", conn="c1", user="alice", gw="gw1", state={"n": 0})
    await redis.xadd(KEYS.rooms_cmd, {"c": join.encode()})
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1, count + 1):
            # Each one applies only right after the one before (`version`): out of order, it
            # would be refused with a conflict instead.
            update = RoomCommand(
                op="update",
                room="r",
                conn="c1",
                user="alice",
                gw="gw1",
                req=str(n),
                patch={"n": n},
                version=n,
            )
            pipe.xadd(KEYS.rooms_cmd, {"c": update.encode()})
        await pipe.execute()


async def _pending(redis: Redis) -> int:
    return int((await redis.xpending(KEYS.rooms_cmd, "rooms"))["pending"])


async def test_a_backlog_is_applied_in_order_and_all_of_it_acked(start_rooms, redis):
    await _queue_updates(redis, 500)
    service = await start_rooms(ROOMS_BATCH="16")

    async def done() -> bool:
        return await redis.hget(KEYS.room("r"), "version") == b"501"

    await wait_until(done, timeout_s=20, what="500 updates applied")
    state = await redis.hget(KEYS.room("r"), "state")
    assert state == b'{"n":500}'  # every update found the version it expected: in order
    await wait_until(lambda: _nothing_pending(redis), what="nothing left pending")
    assert service.app[consumer_key].applied == 501


async def _nothing_pending(redis: Redis) -> bool:
    return await _pending(redis) == 0


async def test_what_was_read_ahead_is_applied_before_stop_returns(start_rooms, redis):
    await _queue_updates(redis, 4000)
    service = await start_rooms(ROOMS_BATCH="8")
    consumer = service.app[consumer_key]
    await wait_until(lambda: consumer.applied >= 100, timeout_s=10, what="100 applied")
    await consumer.stop(5)
    stopped_at = consumer.applied
    assert 100 <= stopped_at < 4001
    # Everything this consumer read is applied and acked: nothing waits for a claim.
    assert await _pending(redis) == 0
    version = int(await redis.hget(KEYS.room("r"), "version"))
    assert version == stopped_at  # the join and every update applied, none twice
    # Another replica takes the rest, in order.
    await start_rooms(ROOMS_CONSUMER="other")

    async def all_applied() -> bool:
        return await redis.hget(KEYS.room("r"), "version") == b"4001"

    await wait_until(all_applied, timeout_s=20, what="the rest applied by another replica")
    assert await redis.hget(KEYS.room("r"), "state") == b'{"n":4000}'
