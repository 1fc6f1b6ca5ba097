"""The services' Redis client: commands packed by hiredis must reach Redis as redis-py's own
packer would send them."""

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from services.common.redis import packing_with_hiredis


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
