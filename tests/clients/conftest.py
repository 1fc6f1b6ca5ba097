"""A live stack for the client libraries: a real redis-server, the rooms service, gateways.

`live`: an in-process gateway and rooms service. `stack`: the same, plus a gateway process the
clients connect to, which a test may kill and start again on the same port (what a client sees
when its gateway dies) while the in-process one serves the server API; and the handlers service
for the rpc tests.
"""

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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
class Live:
    """An in-process gateway and rooms service: quick to start, for what needs no restart."""

    gateway: Gateway
    rooms: Any
    channels_file: str

    @property
    def ws_url(self) -> str:
        return self.gateway.url("/ws")

    @property
    def api_url(self) -> str:
        return self.gateway.url("").rstrip("/")

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
    return Live(gateway, rooms, str(channels))


@dataclass
class Stack:
    """`live`, plus the clients' gateway as a real process that a test may kill and start
    again on the same port; the in-process gateway serves the server API meanwhile."""

    live: Live
    redis_url: str
    gateway: ServiceProcess | None = None
    handlers: ServiceProcess | None = None
    gateway_port: int = field(default_factory=free_port)
    started: list[ServiceProcess] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    @property
    def api_url(self) -> str:
        return self.live.api_url

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in clean_env().items() if not k.startswith(("ROOMS_", "HANDLERS_"))}
        channels = self.live.channels_file
        env.update(gateway_env(self.redis_url, SWITCHBOARD_CHANNELS=channels, **extra))
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

    async def start_handlers(self, folder: Path) -> ServiceProcess:
        """The handlers service, running the TASKS."""
        port = free_port()
        tasks, event_handlers = folder / "tasks", folder / "event_handlers"
        tasks.mkdir()
        event_handlers.mkdir()
        for name, source in TASKS.items():
            (tasks / name).write_text(source)
        env = self.env(
            HANDLERS_PORT=str(port),
            HANDLERS_HOST="127.0.0.1",
            HANDLERS_CONSUMER=f"clients-{port}",
            HANDLERS_BLOCK_MS="100",
            TASKS_FOLDER=str(tasks),
            EVENT_HANDLERS_FOLDER=str(event_handlers),
        )
        self.handlers = await launch_service("services.handlers", env, port)
        self.started.append(self.handlers)
        return self.handlers

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        return await self.live.publish(channel, data)


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, live: Live, redis_server: RedisProcess, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The stack; with the handlers service (the TASKS) too when the test asks for it:
    `@pytest.mark.parametrize("stack", [{"handlers": True}], indirect=True)`."""
    stack = Stack(live, redis_server.url)
    try:
        launches: list[Any] = [stack.start_gateway()]
        if getattr(request, "param", {}).get("handlers"):
            launches.append(stack.start_handlers(tmp_path))
        for outcome in await asyncio.gather(*launches, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        yield stack
    finally:
        stop_services(stack.started)
