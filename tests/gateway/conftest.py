"""Fixtures of the gateway's tests."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio


@pytest.fixture
async def zou_publisher(redis_server: Any) -> AsyncIterator[Any]:
    """Zou's publisher: python-socketio's write-only Redis manager on `flask-socketio` (JSON
    messages since python-socketio 5.14)."""
    manager = socketio.AsyncRedisManager(
        redis_server.url, write_only=True, channel="flask-socketio"
    )
    yield manager
    if manager.redis is not None:
        await manager.redis.aclose()
