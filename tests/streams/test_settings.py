"""Streams settings: defaults, PTG's bare key layout, and bad values named."""

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.settings import SettingsError
from services.streams.settings import StreamsSettings
from tests.conftest import SECRET

BASE = {"REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": SECRET}


def test_defaults_and_empty_prefix() -> None:
    settings = StreamsSettings.from_env(BASE)
    assert (settings.port, settings.key_prefix, settings.maxlen) == (7890, "sb:data:", 1000)
    assert settings.default_access == "readwrite" and not settings.maxlen_exact
    assert StreamsSettings.from_env({**BASE, "STREAMS_KEY_PREFIX": ""}).key_prefix == ""
    assert settings.heap_keep_bytes == 64 * 1024 * 1024
    assert StreamsSettings.from_env({**BASE, "STREAMS_HEAP_KEEP_MB": "0"}).heap_keep_bytes == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMS_MAXLEN", "-1"),
        ("STREAMS_MAXLEN", "lots"),
        ("STREAMS_MAX_AGE_S", "-5"),
        ("STREAMS_MAX_ENTRY_BYTES", "0"),
        ("STREAMS_DEFAULT_ACCESS", "everything"),
        ("STREAMS_ANNOUNCE", "perhaps"),
        ("STREAMS_KEY_PREFIX", "a b"),
        ("STREAMS_READER_BUFFER", "0"),
        ("STREAMS_HEAP_KEEP_MB", "-1"),
    ],
)
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        StreamsSettings.from_env({**BASE, name: value})


async def test_empty_prefix_is_ptgs_exact_layout(
    start_streams: Callable[..., Any], redis: Redis
) -> None:
    streams = await start_streams(STREAMS_KEY_PREFIX="")
    async with streams.client.put("/streams/main", json={"fps": 5}, headers=streams.auth()) as r:
        assert r.status == 200
    url = streams.ws_url("/data/main/push?ack=true")
    async with streams.client.session.ws_connect(url, headers=streams.auth()) as ws:
        await ws.send_bytes(b"frame")
        entry_id = await ws.receive_str(timeout=5)
    assert await redis.xrange("main") == [(entry_id.encode(), {b"d": b"frame"})]
    assert await redis.get("XMETA:main") == b'{"fps": 5}'
