"""Processes of the local cluster: one Redis, replicas of every service, haproxy in front.

Every process runs under `services.common.children.Child` (the supervisor's): one that dies is
started again on the same port after a capped backoff, and `restart()` stops one gracefully
(SIGTERM) before starting it again. Each replica writes its output to `<state_dir>/logs/<name>.log`.

    cluster = LocalCluster(ClusterSettings(state_dir=Path("/tmp/c"), port=0))
    await cluster.start()         # returns once haproxy sees every replica ready
    cluster.kill("gateway-1")     # SIGKILL; started again after the backoff
    await cluster.wait_ready()
    await cluster.restart("gateway-2")   # SIGTERM, start, wait until haproxy routes to it
    await cluster.stop()
"""

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from services.common.children import Child, Policy, RedisChild, die_with_parent, free_port
from services.common.settings import Env, SettingsError, parse_list, parse_port, positive
from services.common.supervisor import (
    KNOWN_SERVICES,
    SECRET_FILE,
    acquire_lock,
    discover_services,
    load_or_create_secret,
    release_lock,
)

from .haproxy import ROUTES, IngressConfig, Server, render_config, server_states

log = logging.getLogger(__name__)

LOCK_FILE: Final = "cluster.lock"
DEFAULT_STATE_DIR: Final = ".switchboard/cluster"
REPO: Final = Path(__file__).resolve().parents[2]
FRONTED: Final = frozenset(route.service for route in ROUTES)  # services haproxy routes to


class ClusterError(Exception):
    """The cluster cannot start; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """What `python -m deploy.local` reads from the environment (`CLUSTER_*`)."""

    state_dir: Path  # lock, key, haproxy.cfg, Redis data, logs/
    port: int = 8000  # haproxy's; 0 picks a free one
    host: str = "127.0.0.1"  # haproxy's bind address; replicas always listen on 127.0.0.1
    replicas: int = 2  # of each service but streams
    streams_replicas: int = 1  # the layout: one streams process
    services: tuple[str, ...] = ()  # empty: every service present in services/
    secret_key: str | None = field(default=None, repr=False)  # None: SECRET_KEY, or generated
    extra_env: Mapping[str, str] = field(default_factory=dict)  # for every replica
    grace_s: float = 25.0  # SIGTERM -> SIGKILL for one process
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    start_timeout_s: float = 30.0  # until haproxy sees every replica ready

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ClusterSettings":
        env = Env(environ)
        services: tuple[str, ...] = env.get("CLUSTER_SERVICES", parse_list, ())
        unknown = sorted(set(services) - set(KNOWN_SERVICES))
        if unknown:
            raise SettingsError(f"CLUSTER_SERVICES is invalid: unknown {', '.join(unknown)}")
        return cls(
            state_dir=Path(env.get("CLUSTER_STATE_DIR", str, DEFAULT_STATE_DIR)).absolute(),
            port=env.get("CLUSTER_PORT", parse_port, 8000),
            host=env.get("CLUSTER_HOST", str, "127.0.0.1"),
            replicas=env.get("CLUSTER_REPLICAS", positive(int), 2),
            streams_replicas=env.get("CLUSTER_STREAMS_REPLICAS", positive(int), 1),
            services=services,
            grace_s=env.get("CLUSTER_GRACE_S", positive(float), 25.0),
        )


@dataclass(slots=True)
class Replica:
    """One service process behind haproxy; `name` (`gateway-1`) is its haproxy server name."""

    name: str
    service: str
    port: int
    child: "LoggedChild"

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class LoggedChild(Child):
    """A `Child` whose output goes to its own file: several replicas share one terminal."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], policy: Policy, log_path: Path
    ) -> None:
        super().__init__(name, argv, env, policy)
        self.log_path = log_path
        self._log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_fd,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only, which stops in order
            preexec_fn=die_with_parent(),
        )

    def close_log(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._log_fd)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as haproxy binds
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ClusterError(f"{binary} is not on PATH ({hint})")
    return path


class LocalCluster:
    """Start, observe, disturb and stop the local cluster (see the module docstring)."""

    def __init__(self, settings: ClusterSettings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.state_dir = settings.state_dir
        self.logs = self.state_dir / "logs"
        self.config_path = self.state_dir / "haproxy.cfg"
        self.stats_socket = self.state_dir / "haproxy.sock"
        self.port = settings.port
        self.policy = Policy(
            settings.backoff_initial_s, settings.backoff_max_s, 60.0, settings.grace_s
        )
        self.secret_key = ""
        self.redis: RedisChild | None = None
        self.haproxy: LoggedChild | None = None
        self.replicas: dict[str, Replica] = {}
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"http://{host}:{self.port}"

    @property
    def services(self) -> tuple[str, ...]:
        present = tuple(spec.name for spec in discover_services())
        wanted = self.settings.services or present
        return tuple(name for name in wanted if name in present)

    def replicas_of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas.values() if r.service == service]

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything and wait until haproxy routes to every replica; on a failure, stop
        what was started and raise (ClusterError, or the supervisor's StartError)."""
        haproxy = _require("haproxy", "`make cluster` installs it with apt")
        redis_server = _require("redis-server", "`make cluster` installs it with apt")
        if self.port == 0:
            self.port = free_port()
        elif port_in_use(self.settings.host, self.port):
            raise ClusterError(f"port {self.port} is in use: set CLUSTER_PORT to another one")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)  # it holds the signing key
        self._lock_fd = acquire_lock(self.state_dir / LOCK_FILE)
        try:
            self.secret_key = self._secret()
            self.redis = RedisChild(
                redis_server, self.state_dir, self.policy, self.settings.start_timeout_s
            )
            await self.redis.start()
            self._plan_replicas()
            for replica in self.replicas.values():
                await replica.child.start()
            await self._start_haproxy(haproxy)
            await self.wait_ready(timeout_s=self.settings.start_timeout_s)
        except BaseException:
            await self.stop()
            raise

    def _secret(self) -> str:
        if self.settings.secret_key:
            return self.settings.secret_key
        if self.environ.get("SECRET_KEY"):
            return self.environ["SECRET_KEY"]
        return load_or_create_secret(self.state_dir / SECRET_FILE)

    def _plan_replicas(self) -> None:
        assert self.redis is not None
        base = {
            **self.environ,
            "LOG_JSON": self.environ.get("LOG_JSON", "false"),
            "PYTHONUNBUFFERED": "1",
            **self.settings.extra_env,
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": self.secret_key,
        }
        for service in self.services:
            prefix = service.upper()
            count = self.settings.replicas
            if service == "streams":
                count = self.settings.streams_replicas
            for index in range(1, count + 1):
                name, port = f"{service}-{index}", free_port()
                env = {**base, f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(port)}
                if service in ("rooms", "handlers"):
                    env[f"{prefix}_CONSUMER"] = name  # a restarted replica resumes its own work
                argv = [sys.executable, "-m", f"services.{service}"]
                child = LoggedChild(name, argv, env, self.policy, self.logs / f"{name}.log")
                self.replicas[name] = Replica(name, service, port, child)

    async def _start_haproxy(self, binary: str) -> None:
        config = IngressConfig(
            port=self.port,
            host=self.settings.host,
            stats_socket=self.stats_socket,
            backends={
                service: [Server(r.name, r.port) for r in self.replicas_of(service)]
                for service in self.services
            },
        )
        self.config_path.write_text(render_config(config))
        check = await asyncio.create_subprocess_exec(
            binary,
            *("-c", "-q", "-f", str(self.config_path)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await check.communicate()
        if check.returncode != 0:
            raise ClusterError(f"haproxy refused {self.config_path}: {output.decode().strip()}")
        self.stats_socket.unlink(missing_ok=True)
        argv = [binary, "-db", "-f", str(self.config_path)]  # -db: foreground
        self.haproxy = LoggedChild("haproxy", argv, {}, self.policy, self.logs / "haproxy.log")
        await self.haproxy.start()

    async def stop(self) -> None:
        """Services first (gateways close their sockets with 1012), then haproxy, then Redis."""
        await asyncio.gather(*(r.child.stop() for r in self.replicas.values()))
        if self.haproxy is not None:
            await self.haproxy.stop()
        if self.redis is not None:
            await self.redis.stop()
        for child in [*(r.child for r in self.replicas.values()), self.haproxy]:
            if child is not None:
                child.close_log()
        self.stats_socket.unlink(missing_ok=True)
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    # -- observe and disturb -----------------------------------------------------------------

    async def wait_ready(self, *names: str, timeout_s: float = 15.0) -> None:
        """Until each replica (all by default) answers /readyz and haproxy routes to it."""
        wanted = [self.replicas[name] for name in names] if names else list(self.replicas.values())
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            while True:
                self._check_alive()
                routed = await self._routed()
                pending = [
                    r
                    for r in wanted
                    if (r.service in FRONTED and r.name not in routed)
                    or not await _answers_ready(session, r)
                ]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    details = "; ".join(f"{r.name}: {_tail(r.child.log_path)}" for r in pending)
                    raise ClusterError(f"not ready within {timeout_s:.0f}s: {details}")
                await asyncio.sleep(0.05)  # polling interval, bounded by the deadline

    async def _routed(self) -> set[str]:
        """Servers haproxy considers up after a passing check."""
        try:
            states = await server_states(self.stats_socket)
        except OSError:
            return set()
        return {name for name, state in states.items() if state.routed}

    def _check_alive(self) -> None:
        if self.haproxy is not None and self.haproxy.pid is None:
            raise ClusterError(f"haproxy is not running: {_tail(self.haproxy.log_path)}")

    def kill(self, name: str) -> int | None:
        """SIGKILL one replica (it is started again after the backoff); returns its PID."""
        replica = self.replicas[name]
        pid = replica.pid
        replica.child.send_signal(signal.SIGKILL)
        return pid

    async def restart(self, name: str, *, timeout_s: float = 30.0) -> None:
        """SIGTERM one replica, start it again, wait until haproxy routes to it."""
        await self.replicas[name].child.restart()
        await self.wait_ready(name, timeout_s=timeout_s)


async def _answers_ready(session: aiohttp.ClientSession, replica: Replica) -> bool:
    try:
        async with session.get(replica.url("/readyz")) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "empty log"
