"""Fixtures: a real redis-server on a free port, gateway apps and processes, tokens, clients."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from services.gateway.app import create_app
from services.gateway.runner import GatewayRunner
from services.gateway.settings import GatewaySettings
from tests.helpers import Client, clean_env, free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


class RedisProcess:
    """A redis-server of the suite's own, which a test may stop and start again on its port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (`make test` installs it)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(3):
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            if self._wait_for_ping(10.0):
                return
            self.port = free_port()  # the port was taken meanwhile: try another
        raise RuntimeError("could not start redis-server")

    def _wait_for_ping(self, timeout_s: float) -> bool:
        import socket

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, protocol=3)
    try:
        yield client
    finally:
        await client.flushall()
        await client.aclose()


def gateway_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {"REDIS_URL": redis_url, "SECRET_KEY": SECRET, "LOG_JSON": "false"}
    env.update(extra)
    return env


@pytest.fixture
def make_token() -> Callable[..., str]:
    """`make_token("alice", scope="publish", ttl=60)`: HS256, signed with the suite's key."""

    def make(
        sub: str | None = "alice",
        *,
        ttl: float | None = 3600,
        key: str = SECRET,
        algorithm: str = "HS256",
        **claims: Any,
    ) -> str:
        payload: dict[str, Any] = {"iat": int(time.time()), **claims}
        if sub is not None:
            payload["sub"] = sub
        if ttl is not None:
            payload["exp"] = int(time.time() + ttl)
        return jwt.encode(payload, key, algorithm=algorithm)

    return make


@pytest.fixture
def channels_file(tmp_path: Path) -> Callable[[dict[str, Any]], str]:
    """Write a namespaces file and return its path (for SWITCHBOARD_CHANNELS)."""

    def write(namespaces: dict[str, Any]) -> str:
        import json

        path = tmp_path / "channels.json"
        path.write_text(json.dumps({"namespaces": namespaces}))
        return str(path)

    return write


@dataclass
class Gateway:
    """An in-process gateway served on a real port, and ways to reach it."""

    http: TestClient
    make_token: Callable[..., str]

    @property
    def app(self) -> Any:
        return self.http.app

    def url(self, path: str) -> str:
        return str(self.http.make_url(path))

    async def connect(self, sub: str | None = "alice", **kw: Any) -> Client:
        headers = {"Authorization": f"Bearer {self.make_token(sub)}"} if sub else {}
        ws = await self.http.session.ws_connect(self.url("/ws"), headers=headers, **kw)
        return Client(ws)

    async def api(self, method: str, path: str, *, scope: str = "publish", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.make_token('backend', scope=scope)}"}
        async with self.http.session.request(method, self.url(path), headers=headers, **kw) as r:
            return r.status, await r.json()


@pytest.fixture
async def start_gateway(
    redis: Redis, redis_server: RedisProcess, make_token: Callable[..., str]
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_gateway(GATEWAY_MAX_SUBSCRIPTIONS="2")`: a gateway app with these settings."""
    started: list[TestClient] = []

    async def start(**env: str) -> Gateway:
        settings = GatewaySettings.from_env(gateway_env(redis_server.url, **env))
        app = create_app(settings, redis=redis)
        client = await serve_ready(app, started, "gateway", server=GatewayTestServer(app))
        return Gateway(client, make_token)

    yield start
    for client in reversed(started):
        await client.close()


class GatewayTestServer(TestServer):
    """aiohttp's test server with the gateway's runner, as `python -m services.gateway` runs."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return GatewayRunner(self.app, **kwargs)


async def serve_ready(
    app: Any, started: list[Any], what: str, timeout_s: float = 5.0, server: Any = None
) -> Any:
    """Serve `app` in-process on a real port (added to `started`, for the fixture to close) and
    return its test client once `/readyz` answers 200."""
    from tests.helpers import wait_until

    # A new TCP connection per request, as browsers open one per WebSocket: otherwise a socket
    # could reuse the keep-alive connection of an earlier request (tests/gateway/test_native_ws.py
    # covers that case on its own).
    connector = aiohttp.TCPConnector(force_close=True)
    client: TestClient = TestClient(server or TestServer(app), connector=connector)  # type: ignore[type-arg]
    await client.start_server()
    started.append(client)

    async def ready() -> bool:
        async with client.session.get(client.make_url("/readyz")) as resp:
            return resp.status == 200

    await wait_until(ready, what=f"{what} ready", timeout_s=timeout_s)
    return client


@pytest.fixture
async def gateway(start_gateway: Callable[..., Any]) -> Gateway:
    return await start_gateway()  # type: ignore[no-any-return]


@dataclass
class ServiceProcess:
    """`python -m services.<name>` as its own process."""

    proc: subprocess.Popen[str]
    port: int
    log: Path  # its stdout and stderr: a file, so that a chatty service never blocks on a pipe

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


GatewayProcess = ServiceProcess


async def launch_service(module: str, env: dict[str, str], port: int) -> ServiceProcess:
    """Start `python -m <module>` and return once its /readyz answers 200."""
    from tests.helpers import wait_until

    fd, log = tempfile.mkstemp(prefix=f"{module}-", suffix=".log")
    # Popen returns at once (no waiting): the process is polled for readiness below.
    with os.fdopen(fd, "w") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", module],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    service = ServiceProcess(proc, port, Path(log))

    async def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{module} exited: {service.output()}")
        try:
            async with aiohttp.ClientSession() as s, s.get(service.url("/readyz")) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_until(ready, timeout_s=15, what=f"{module} ready")
    except BaseException:
        stop_services([service])
        raise
    return service


def stop_services(services: list[ServiceProcess]) -> None:
    for service in services:
        if service.proc.poll() is None:
            service.proc.kill()
        service.proc.wait()
        service.log.unlink(missing_ok=True)


@pytest.fixture
async def gateway_process(
    redis: Redis, redis_server: RedisProcess
) -> AsyncIterator[Callable[..., Any]]:
    """Start real gateway processes on free ports; they are stopped after the test."""
    procs: list[ServiceProcess] = []

    async def start(**extra: str) -> ServiceProcess:
        port = free_port()
        env = clean_env()
        env.update(
            gateway_env(redis_server.url, GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1", **extra)
        )
        procs.append(await launch_service("services.gateway", env, port))
        return procs[-1]

    yield start
    stop_services(procs)


@pytest.fixture
def spare_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server for one test, which the test may kill and restart."""
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


__all__ = ["SECRET", "Gateway", "GatewayProcess", "RedisProcess", "os"]
