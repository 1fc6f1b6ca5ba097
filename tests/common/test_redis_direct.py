"""A hot path's own connection: replies in order, error replies returned, a dropped connection
raised once and opened again, no interleaved calls."""

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.redis import make_client
from services.common.redis_direct import DirectConnection
from services.common.settings import RedisSettings
from tests.conftest import RedisProcess


async def test_replies_come_in_order_and_an_error_reply_does_not_stop_the_rest(
    client: Redis,
) -> None:
    direct = DirectConnection(client)
    replies = await direct.execute(
        ("SET", "k", "v"), ("INCR", "k"), ("XADD", "s", "*", "c", "x"), ("GET", "k")
    )
    assert replies[0] is True or replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError)
    assert "not an integer" in str(replies[1])
    assert await client.xlen("s") == 1
    assert replies[3] == b"v"


async def test_a_killed_connection_fails_one_call_and_the_next_opens_it_again(
    client: Redis,
) -> None:
    """As the client's own commands: its connections retry nothing (a command may have been
    applied when its connection broke)."""
    direct = DirectConnection(client)
    await direct.execute(("CLIENT", "SETNAME", "hot-path"))
    [mine] = [c for c in await client.client_list() if c["name"] == "hot-path"]
    await client.client_kill_filter(_id=mine["id"])
    with pytest.raises(ConnectionError):
        await direct.execute(("INCR", "n"))
    assert await direct.execute(("INCR", "n"), ("INCR", "n")) == [1, 2]


async def test_a_dead_redis_is_an_error_and_a_restarted_one_is_used_again(
    spare_redis: RedisProcess,
) -> None:
    client = make_client(RedisSettings(url=spare_redis.url))
    direct = DirectConnection(client)
    assert await direct.execute(("PING",)) in ([True], [b"PONG"])
    spare_redis.stop()
    with pytest.raises(ConnectionError):
        await direct.execute(("PING",))
    spare_redis.start()
    assert await direct.execute(("PING",)) in ([True], [b"PONG"])
    await client.aclose()


async def test_a_second_call_while_one_is_on_its_way_is_refused(client: Redis) -> None:
    direct = DirectConnection(client)
    first = asyncio.create_task(direct.execute(("BLPOP", "nothing", "0.2")))
    await asyncio.sleep(0.05)
    with pytest.raises(RuntimeError):
        await direct.execute(("PING",))
    assert await first == [None]


async def test_a_call_redis_does_not_answer_in_time_is_a_timeout(
    client: Redis, redis_server: RedisProcess
) -> None:
    impatient = make_client(RedisSettings(url=redis_server.url, socket_timeout_s=0.3))
    direct = DirectConnection(impatient)
    assert await direct.execute(("PING",)) in ([True], [b"PONG"])
    await client.client_pause(1000, all=True)  # Redis holds every command for a second
    with pytest.raises(RedisTimeoutError):
        await direct.execute(("INCR", "n"))
    await asyncio.sleep(1.0)
    assert await direct.execute(("PING",)) in ([True], [b"PONG"])  # on a new connection
    await impatient.aclose()
