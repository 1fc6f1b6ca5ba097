"""A live stack for the client libraries: real redis-server, rooms service and gateway processes.

`stack.gateway` is the gateway the clients connect to; a test may kill it and start it again on
the same port (what a client sees when its gateway dies). `stack.api` is a second gateway for
the server API, so publications can be made while the first one is down.
"""

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import (
    REPO,
    Gateway,
    RedisProcess,
    ServiceProcess,
    gateway_env,
    launch_service,
    stop_services,
)
from tests.helpers import clean_env, free_port
from tests.rooms.conftest import start_rooms

__all__ = ["start_rooms"]  # the in-process rooms service fixture, shared with tests/rooms

# The Python client is importable from the repository root without being installed.
if str(REPO / "clients" / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "clients" / "python"))

# `chat`: everything on; `tiny`: a history of 3, so a longer gap cannot be recovered.
NAMESPACES = {
    "chat": {"allow_publish": True, "presence": True, "join_leave": True, "history_size": 100},
    "tiny": {"allow_publish": True, "history_size": 3},
}


# Tasks of the handlers service for the clients' rpc tests.
TASKS = {
    "task_echo.py": """
def run(request):
    return {"data": request.data, "user": request.user, "room": request.room}
""",
    "task_fail.py": """
def run(request):
    raise ValueError("no such shot")
""",
    "task_stuck.py": """
import asyncio

TIMEOUT = 0.3

async def run(request):
    await asyncio.sleep(3600)
""",
    "task_slow.py": """
import asyncio

async def run(request):
    await asyncio.sleep(2)
    return "late"
""",
    "task_admin.py": """
from services.handlers.api import requires

@requires("admin")
def run(request):
    return "done"
""",
}


@dataclass
class Stack:
    redis_url: str
    channels_file: str
    make_token: Callable[..., str]
    gateway: ServiceProcess | None = None
    api: ServiceProcess | None = None
    rooms: ServiceProcess | None = None
    handlers: ServiceProcess | None = None
    gateway_port: int = field(default_factory=free_port)
    started: list[ServiceProcess] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    @property
    def api_url(self) -> str:
        assert self.api is not None
        return f"http://127.0.0.1:{self.api.port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in clean_env().items() if not k.startswith(("ROOMS_", "HANDLERS_"))}
        env.update(gateway_env(self.redis_url, SWITCHBOARD_CHANNELS=self.channels_file, **extra))
        return env

    async def start_gateway(self) -> ServiceProcess:
        """The clients' gateway, on its fixed port (again, after `kill_gateway`)."""
        port = self.gateway_port
        env = self.env(GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1")
        self.gateway = await launch_service("services.gateway", env, port)
        self.started.append(self.gateway)
        return self.gateway

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        stop_services([self.gateway])

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.make_token('backend', scope='admin')}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.api_url}/api/publish",
                json={"channel": channel, "data": data},
                headers=headers,
            ) as resp,
        ):
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
            return body


@dataclass
class Live:
    """An in-process gateway and rooms service: quick to start, for what needs no restart."""

    gateway: Gateway
    rooms: Any

    @property
    def ws_url(self) -> str:
        return self.gateway.url("/ws")

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        body = {"channel": channel, "data": data}
        status, answer = await self.gateway.api("POST", "/api/publish", json=body)
        assert status == 200, answer
        return answer  # type: ignore[no-any-return]


@pytest.fixture
async def live(
    start_gateway: Callable[..., Any], start_rooms: Callable[..., Any], tmp_path: Path
) -> Live:
    channels = tmp_path / "channels.json"
    channels.write_text(json.dumps({"namespaces": NAMESPACES}))
    gateway, rooms = await asyncio.gather(
        start_gateway(SWITCHBOARD_CHANNELS=str(channels)), start_rooms()
    )
    return Live(gateway, rooms)


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest,
    redis: Redis,
    redis_server: RedisProcess,
    make_token: Callable[..., str],
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """The stack; with the handlers service (the TASKS) too when the test asks for it:
    `@pytest.mark.parametrize("stack", [{"handlers": True}], indirect=True)`."""
    with_handlers = bool(getattr(request, "param", {}).get("handlers"))
    channels = tmp_path / "channels.json"
    channels.write_text(json.dumps({"namespaces": NAMESPACES}))
    stack = Stack(redis_server.url, str(channels), make_token)
    try:
        rooms_port, api_port = free_port(), free_port()
        rooms_env = stack.env(ROOMS_PORT=str(rooms_port), ROOMS_HOST="127.0.0.1")
        rooms_env.update(ROOMS_CONSUMER=f"clients-{rooms_port}", ROOMS_BLOCK_MS="100")
        api_env = stack.env(GATEWAY_PORT=str(api_port), GATEWAY_HOST="127.0.0.1")
        handlers_port = free_port()
        tasks, event_handlers = tmp_path / "tasks", tmp_path / "event_handlers"
        tasks.mkdir()
        event_handlers.mkdir()
        for name, source in TASKS.items():
            (tasks / name).write_text(source)
        handlers_env = stack.env(
            HANDLERS_PORT=str(handlers_port),
            HANDLERS_HOST="127.0.0.1",
            HANDLERS_CONSUMER=f"clients-{handlers_port}",
            HANDLERS_BLOCK_MS="100",
            TASKS_FOLDER=str(tasks),
            EVENT_HANDLERS_FOLDER=str(event_handlers),
        )
        # Started side by side: each takes about a second to be ready.
        launches = [
            launch_service("services.rooms", rooms_env, rooms_port),
            launch_service("services.gateway", api_env, api_port),
            stack.start_gateway(),
        ]
        if with_handlers:
            launches.append(launch_service("services.handlers", handlers_env, handlers_port))
        started = await asyncio.gather(*launches, return_exceptions=True)
        stack.started.extend(s for s in started if isinstance(s, ServiceProcess))
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        stack.rooms, stack.api = started[0], started[1]  # type: ignore[assignment]
        if with_handlers:
            stack.handlers = started[3]  # type: ignore[assignment]
        yield stack
    finally:
        stop_services(stack.started)
