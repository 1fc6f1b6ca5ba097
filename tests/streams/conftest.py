"""Fixtures: the streams app in-process (aiohttp test server) and as a real subprocess."""

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from services.streams.app import create_app
from services.streams.settings import StreamsSettings
from tests.conftest import (
    SECRET,
    RedisProcess,
    ServiceProcess,
    launch_service,
    serve_ready,
    stop_services,
)
from tests.helpers import clean_env, free_port


def streams_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET,
        "LOG_JSON": "false",
        "JWT_REVOCATION_DB": "off",
    }
    env.update(extra)
    return env


@dataclass
class Streams:
    """A running streams app: `client` speaks HTTP to it, `url`/`ws_url` build addresses."""

    client: TestClient[Any, Any]
    token: str

    @property
    def app(self) -> Any:
        return self.client.app

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    def ws_url(self, path: str) -> str:
        return self.url(path).replace("http://", "ws://", 1)

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@pytest.fixture
async def start_streams(
    redis: Redis, redis_server: RedisProcess, make_token: Callable[..., str]
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_streams(STREAMS_MAXLEN="10")`: the app on a real socket, ready."""
    clients: list[TestClient[Any, Any]] = []

    async def start(**env: str) -> Streams:
        settings = StreamsSettings.from_env(streams_env(redis_server.url, **env))
        client = await serve_ready(create_app(settings), clients, "streams")
        return Streams(client, make_token("alice"))

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def streams(start_streams: Callable[..., Any]) -> Streams:
    result: Streams = await start_streams()
    return result


@pytest.fixture
async def streams_process(
    redis: Redis, redis_server: RedisProcess
) -> AsyncIterator[Callable[..., Any]]:
    """Start `python -m services.streams` on a free port; every one is stopped after the test."""
    procs: list[ServiceProcess] = []

    async def start(port: int | None = None, **extra: str) -> ServiceProcess:
        port = port or free_port()
        env = {k: v for k, v in clean_env().items() if not k.startswith(("STREAMS_", "FRAMES_"))}
        env.update(
            streams_env(redis_server.url, STREAMS_PORT=str(port), STREAMS_HOST="127.0.0.1", **extra)
        )
        procs.append(await launch_service("services.streams", env, port))
        return procs[-1]

    yield start
    stop_services(procs)


PREFIX = "sb:data:"


async def stored(redis: Redis, stream: str, prefix: str = PREFIX) -> list[tuple[str, bytes]]:
    """(id, data) of every entry of a stream, read straight from Redis."""
    return [(i.decode(), f[b"d"]) for i, f in await redis.xrange(prefix + stream)]


async def expect_refusal(ws: Any, code: int, close: int) -> str:
    """The next frames are `{"error": {...}}` with `code`, then a close with `close`."""
    msg = await ws.receive(timeout=5)
    assert msg.type.name == "TEXT", msg
    error = json.loads(msg.data)["error"]
    assert (error["code"], error["close"]) == (code, close), error
    closing = await ws.receive(timeout=5)
    assert closing.type.name in ("CLOSE", "CLOSED", "CLOSING"), closing
    assert ws.close_code == close
    return str(error["message"])
