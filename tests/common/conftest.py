"""Fixtures of the shared code's tests."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.common.redis import make_client
from services.common.settings import RedisSettings
from tests.conftest import RedisProcess


@pytest.fixture
async def client(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    """A client made as the services make theirs, on the suite's Redis (emptied after)."""
    client = make_client(RedisSettings(url=redis_server.url))
    try:
        yield client
    finally:
        await client.flushall()
        await client.aclose()
