"""The services' Redis client: commands packed by hiredis must reach Redis as redis-py's own
packer would send them."""

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from services.common.redis import make_client, packing_with_hiredis
from services.common.settings import RedisSettings
from tests.conftest import RedisProcess


def test_hiredis_packing_matches_redis_pys() -> None:
    packed, plain = packing_with_hiredis(Connection)(), Connection()
    for args in [
        ("SET", "k", "é" * 3, 1, 2.5, -7, 1e20, b"\x00\xff"),
        ("CONFIG GET", "maxmemory"),  # a two-word command name is sent as two words
        (b"CLIENT LIST",),
        ("XADD", "s", "*", "c", memoryview(b"data")),
    ]:
        assert b"".join(packed.pack_command(*args)) == b"".join(plain.pack_command(*args))
    with pytest.raises(DataError):
        packed.pack_command("SET", "k", None)


async def test_a_services_client_round_trips_values_through_redis(client: Redis) -> None:
    assert client.connection_pool.connection_class.__name__.startswith("HiredisPacked")
    await client.set("k", "é\x00" * 1000)
    assert await client.get("k") == "é\x00".encode() * 1000
    assert await client.eval("return ARGV[1] .. ARGV[2]", 0, 2.5, b"x") == b"2.5x"
    await client.xadd("s", {"c": b"\xff" * 70_000})  # larger than redis-py's buffer cutoff
    [(_, fields)] = await client.xrange("s")
    assert fields == {b"c": b"\xff" * 70_000}


async def test_idle_connections_closed_by_a_redis_restart_are_replaced(
    spare_redis: RedisProcess,
) -> None:
    """After Redis restarts, the first commands on the pool's idle connections succeed.

    redis-py 8.1 with RESP3 skipped its stale-connection check (maintenance notifications on by
    default): each idle connection failed its next command with "Connection closed by server",
    so a gateway answered 108 right after its /readyz said ready."""
    client = make_client(RedisSettings(url=spare_redis.url))
    try:
        await asyncio.gather(*(client.ping() for _ in range(4)))  # four idle connections
        idle = len(client.connection_pool._available_connections)
        assert idle >= 2
        spare_redis.stop()
        await asyncio.sleep(0.2)  # the event loop sees the closed sockets, as during an outage
        spare_redis.start()
        results = await asyncio.gather(*(client.eval("return 1", 0) for _ in range(idle)))
        assert results == [1] * idle
    finally:
        await client.aclose()
