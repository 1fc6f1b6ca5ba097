"""Fixtures for the rooms service: in-process apps and real processes, beside the gateways."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from services.rooms.app import create_app
from services.rooms.settings import RoomsSettings
from tests.conftest import (
    RedisProcess,
    ServiceProcess,
    gateway_env,
    launch_service,
    serve_ready,
    stop_services,
)
from tests.helpers import clean_env, free_port


@dataclass
class Rooms:
    """An in-process rooms service served on a real port."""

    http: TestClient
    make_token: Callable[..., str]

    @property
    def app(self) -> Any:
        return self.http.app

    async def api(self, method: str, path: str, *, scope: str | None = "admin") -> Any:
        headers = {}
        if scope is not None:
            headers["Authorization"] = f"Bearer {self.make_token('operator', scope=scope)}"
        url = self.http.make_url(path)
        async with self.http.session.request(method, url, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def start_rooms(
    redis: Redis, redis_server: RedisProcess, make_token: Callable[..., str]
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_rooms(ROOMS_MAX="2")`: a rooms app with these settings, on the suite's Redis."""
    started: list[TestClient] = []

    async def start(**env: str) -> Rooms:
        env.setdefault("ROOMS_CONSUMER", f"test-{len(started)}")
        env.setdefault("ROOMS_BLOCK_MS", "100")
        settings = RoomsSettings.from_env(gateway_env(redis_server.url, **env))
        client = await serve_ready(create_app(settings, redis=redis), started, "rooms")
        return Rooms(client, make_token)

    yield start
    for client in reversed(started):
        await client.close()


@pytest.fixture
async def rooms(start_rooms: Callable[..., Any]) -> Rooms:
    return await start_rooms()  # type: ignore[no-any-return]


RoomsProcess = ServiceProcess


@pytest.fixture
async def rooms_process(
    redis: Redis, redis_server: RedisProcess
) -> AsyncIterator[Callable[..., Any]]:
    """Start real rooms processes; they are stopped after the test."""
    procs: list[ServiceProcess] = []

    async def start(*, port: int | None = None, **extra: str) -> ServiceProcess:
        port = port or free_port()
        env = {k: v for k, v in clean_env().items() if not k.startswith("ROOMS_")}
        env.update(
            gateway_env(redis_server.url, ROOMS_PORT=str(port), ROOMS_HOST="127.0.0.1", **extra)
        )
        procs.append(await launch_service("services.rooms", env, port))
        return procs[-1]

    yield start
    stop_services(procs)
