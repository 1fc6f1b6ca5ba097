"""Fixtures for the handlers service: in-process apps and real processes, handler folders, and
the Redis side of the gateway contracts (XADD to sb:events / sb:rpc, a reply channel)."""

import asyncio
import json
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from services.common.events import event_fields
from services.common.rpc import RpcCall
from services.handlers.app import create_app
from services.handlers.settings import HandlersSettings
from tests.conftest import (
    RedisProcess,
    ServiceProcess,
    gateway_env,
    launch_service,
    serve_ready,
    stop_services,
)
from tests.helpers import clean_env, free_port

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Handler code in the tests proves it ran by writing to this Redis (its URL in this variable).
PROBE_ENV = "HANDLERS_TEST_REDIS"

# Fast defaults for tests: short blocks, quick retries, a watcher that notices at once.
FAST = {
    "HANDLERS_BLOCK_MS": "100",
    "HANDLERS_BACKOFF_S": "0.05",
    "HANDLERS_BACKOFF_MAX_S": "0.2",
    "HANDLERS_WATCH_INTERVAL_S": "0.1",
    "HANDLERS_STATS_INTERVAL_S": "0.2",
    "HANDLERS_CLAIM_IDLE_MS": "1000",
}


def write(folder: Path, name: str, source: str) -> Path:
    """Write a handler or task file (dedented); the folder is created if needed."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path


# A prelude for handler files: `probe()` is a Redis client on the suite's server.
PROBE = """
import os
import redis
def probe():
    return redis.Redis.from_url(os.environ["HANDLERS_TEST_REDIS"])
"""


@dataclass
class Handlers:
    """An in-process handlers service served on a real port."""

    http: TestClient
    make_token: Callable[..., str]

    @property
    def app(self) -> Any:
        return self.http.app

    async def api(
        self, method: str, path: str, *, scope: str | None = "admin", **kw: Any
    ) -> tuple[int, Any]:
        headers = {}
        if scope is not None:
            headers["Authorization"] = f"Bearer {self.make_token('operator', scope=scope)}"
        url = self.http.make_url(path)
        async with self.http.session.request(method, url, headers=headers, **kw) as resp:
            return resp.status, await resp.json()


def handlers_env(redis_url: str, handlers: Path, tasks: Path, **extra: str) -> dict[str, str]:
    env = gateway_env(
        redis_url, EVENT_HANDLERS_FOLDER=str(handlers), TASKS_FOLDER=str(tasks), **FAST
    )
    env.update(extra)
    return env


@pytest.fixture
def folders(tmp_path: Path, redis_server: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    """(handlers folder, tasks folder) in the test's temporary directory."""
    monkeypatch.setenv(PROBE_ENV, redis_server.url)
    handlers, tasks = tmp_path / "event_handlers", tmp_path / "tasks"
    handlers.mkdir()
    tasks.mkdir()
    return handlers, tasks


@pytest.fixture
async def start_handlers(
    redis: Redis, redis_server: RedisProcess, make_token: Callable[..., str], folders: Any
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_handlers(HANDLERS_RETRIES="1")`: an in-process service on the suite's Redis,
    reading the `folders` fixture's folders unless EVENT_HANDLERS_FOLDER is given."""
    started: list[TestClient] = []

    async def start(**env: str) -> Handlers:
        env.setdefault("HANDLERS_CONSUMER", f"test-{len(started)}")
        settings = HandlersSettings.from_env(handlers_env(redis_server.url, *folders, **env))
        client = await serve_ready(
            create_app(settings, redis=redis), started, "handlers", timeout_s=10
        )
        return Handlers(client, make_token)

    yield start
    for client in reversed(started):
        await client.close()


@pytest.fixture
async def handlers_process(
    redis: Redis, redis_server: RedisProcess, folders: Any
) -> AsyncIterator[Callable[..., Any]]:
    """Start real `python -m services.handlers` processes; they are stopped after the test."""
    procs: list[ServiceProcess] = []

    async def start(*, port: int | None = None, **extra: str) -> ServiceProcess:
        port = port or free_port()
        env = {k: v for k, v in clean_env().items() if not k.startswith("HANDLERS_")}
        env.update(handlers_env(redis_server.url, *folders, **extra))
        env.update(HANDLERS_PORT=str(port), HANDLERS_HOST="127.0.0.1")
        env[PROBE_ENV] = redis_server.url
        procs.append(await launch_service("services.handlers", env, port))
        return procs[-1]

    yield start
    stop_services(procs)


async def publish(redis: Redis, event: str, data: Any, *, source: str = "api") -> str:
    """What the gateway does for a publication naming an event."""
    entry = await redis.xadd(
        "sb:events",
        event_fields(event, json.dumps(data), source=source, channel="news"),  # type: ignore[arg-type]
    )
    return entry.decode()


class RpcClient:
    """The gateway's half of the rpc contract: a reply channel and calls put on sb:rpc."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.node = uuid.uuid4().hex[:8]
        self.channel = f"sb:rpc:reply:{self.node}"
        self.pubsub = redis.pubsub()
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._next = 0

    async def start(self) -> None:
        await self.pubsub.subscribe(self.channel)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            body = json.loads(message["data"])
            future = self.replies.pop(body["req"], None)
            if future is not None and not future.done():
                future.set_result(body)

    async def send(
        self,
        method: str,
        data: Any = None,
        *,
        user: str = "alice",
        claims: dict[str, Any] | None = None,
        deadline_s: float = 5.0,
        room: str | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        self._next += 1
        req = str(self._next)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[req] = future
        call = RpcCall(
            req=req,
            reply=self.channel,
            method=method,
            data=data,
            user=user,
            client=f"client-{user}",
            deadline=int((time.time() + deadline_s) * 1000),
            room=room,
            claims=claims if claims is not None else {"sub": user},
        )
        await self.redis.xadd("sb:rpc", {"c": call.encode()})
        return future

    async def call(self, method: str, data: Any = None, **kw: Any) -> dict[str, Any]:
        future = await self.send(method, data, **kw)
        async with asyncio.timeout(10):
            return await future

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.pubsub.aclose()


@pytest.fixture
async def rpc(redis: Redis) -> AsyncIterator[RpcClient]:
    client = RpcClient(redis)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def probe_list(redis: Redis, key: str) -> list[Any]:
    return [json.loads(item) for item in await redis.lrange(key, 0, -1)]


async def group_settled(redis: Redis, stream: str = "sb:events") -> bool:
    """Every entry of `stream` delivered to the group and acked."""
    for group in await redis.xinfo_groups(stream):
        name = group.get("name", group.get(b"name"))
        if name in (b"handlers", "handlers"):
            lag = group.get("lag", group.get(b"lag"))
            pending = group.get("pending", group.get(b"pending"))
            return lag == 0 and pending == 0
    return False
