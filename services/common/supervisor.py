"""Local supervisor (`switchboard run`): private Redis, services as children, a control socket.

The state folder (`SWITCHBOARD_STATE_DIR`, default `.switchboard/`) holds `supervisor.lock`
(flock + PID: one supervisor per folder), `control.sock`, `secret.key` (generated once when
`SECRET_KEY` is unset), `redis/` (data of the private Redis) and `logs/redis.log`.

Control protocol on `control.sock`: one JSON line in, one JSON line out, then the server closes.

    → {"cmd": "status"}
    ← {"ok": true, "result": {"pid": 7, "state_dir": "…", "redis": {…}, "services": {"gateway":
       {"state": "running", "pid": 9, "restarts": 0, "uptime_s": 12.5}}}}
    → {"cmd": "restart", "service": "gateway"}
    ← {"ok": true, "result": {"service": "gateway", "pid": 31}}
    → {"cmd": "stop"}
    ← {"ok": true, "result": {"pid": 7, "grace_s": 25.0}}    (then it stops everything and exits 0)
    → {"cmd": "reload-handlers"}
    ← SIGHUP sent to the `handlers` child, or an error while there is none
    ← {"ok": false, "error": "unknown service 'x' (known: gateway)"}
"""

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import uvloop

from .children import Child, Policy, RedisChild, StartError
from .logging import configure_logging
from .settings import (
    Env,
    JwtSettings,
    RedisSettings,
    SettingsError,
    load,
    parse_bool,
    parse_list,
    positive,
)

log = logging.getLogger(__name__)

KNOWN_SERVICES: Final = ("gateway", "rooms", "streams", "handlers")
LOCK_FILE: Final = "supervisor.lock"
SOCKET_FILE: Final = "control.sock"
SECRET_FILE: Final = "secret.key"
USERS_FILE: Final = "streams-users"  # who may log in to the streams service (`switchboard users`)
MAX_SOCKET_PATH_BYTES: Final = 107  # sun_path is 108 bytes including the NUL
_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class SupervisorError(Exception):
    """A fault the supervisor cannot recover from; it exits with this one-line message."""


def state_dir_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("SWITCHBOARD_STATE_DIR") or ".switchboard").absolute()


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str  # run as `python -m <module>`


def parse_services(raw: str) -> tuple[ServiceSpec, ...]:
    """`gateway`, `pkg.module` or `name=pkg.module`, comma- or space-separated."""
    specs: dict[str, ServiceSpec] = {}
    for item in parse_list(raw):
        name, _, module = item.rpartition("=")
        if not _MODULE_RE.match(module):
            raise ValueError(f"{module!r} is not a module name")
        if module in KNOWN_SERVICES:
            module = f"services.{module}"
        name = name or module.rpartition(".")[2]
        if name in specs:
            raise ValueError(f"service {name!r} is listed twice")
        specs[name] = ServiceSpec(name, module)
    return tuple(specs.values())


def discover_services() -> tuple[ServiceSpec, ...]:
    root = Path(__file__).resolve().parent.parent
    return tuple(
        ServiceSpec(name, f"services.{name}")
        for name in KNOWN_SERVICES
        if (root / name / "__main__.py").is_file()
    )


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """What `switchboard run` reads from the environment (knobs prefixed `SUPERVISOR_`)."""

    state_dir: Path
    services: tuple[ServiceSpec, ...]
    external_redis_url: str | None = field(repr=False)  # None: start a private redis-server
    grace_s: float = 25.0  # SIGTERM → SIGKILL delay for each child
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_s: float = 60.0  # a child that ran this long starts over at the initial backoff
    redis_start_timeout_s: float = 10.0
    log_level: str = "INFO"
    log_json: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "SupervisorSettings":
        env = Env(environ)
        external = any(env.raw(name) for name in ("REDIS_URL", "KV_HOST", "KV_PORT"))
        return cls(
            state_dir=state_dir_from_env(environ),
            services=env.get("SWITCHBOARD_SERVICES", parse_services, ()) or discover_services(),
            external_redis_url=RedisSettings.from_env(env).url if external else None,
            grace_s=env.get("SUPERVISOR_GRACE_S", positive(float), 25.0),
            backoff_initial_s=env.get("SUPERVISOR_BACKOFF_INITIAL_S", positive(float), 0.5),
            backoff_max_s=env.get("SUPERVISOR_BACKOFF_MAX_S", positive(float), 30.0),
            healthy_s=env.get("SUPERVISOR_HEALTHY_S", positive(float), 60.0),
            redis_start_timeout_s=env.get(
                "SUPERVISOR_REDIS_START_TIMEOUT_S", positive(float), 10.0
            ),
            log_level=env.get("LOG_LEVEL", str, "INFO"),
            log_json=env.get("LOG_JSON", parse_bool, True),
        )


# --- state folder: lock and secret -------------------------------------------------------------


def acquire_lock(path: Path) -> int:
    """Take the folder's lock (released by the kernel if we die) and write our PID in it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SupervisorError(
            f"another supervisor (pid {holder}) is running on {path.parent} (lock {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    # The file stays: unlinking a lock file lets two processes lock two different inodes.
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def is_locked(path: Path) -> bool:
    """True while a supervisor holds the lock of this folder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our shared lock at once
    return False


def read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise SupervisorError(f"{path} is empty: delete it to generate a new key")
    return secret


def load_or_create_secret(path: Path) -> str:
    """The folder's signing key: generated once (mode 0600), then reused so tokens stay valid."""
    if path.exists():
        return read_secret(path)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48) + "\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.rename(path)  # atomic: a concurrent `switchboard token` never reads half a key
    log.info("generated a signing key", extra={"path": str(path)})
    return read_secret(path)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# --- the supervisor ----------------------------------------------------------------------------


class Supervisor:
    """Starts Redis (unless external) then the services, serves the control socket, stops all."""

    def __init__(self, settings: SupervisorSettings, env: dict[str, str]) -> None:
        self.settings = settings
        self.socket_path = settings.state_dir / SOCKET_FILE
        policy = Policy(
            settings.backoff_initial_s,
            settings.backoff_max_s,
            settings.healthy_s,
            settings.grace_s,
        )
        self.redis: RedisChild | None = None
        if settings.external_redis_url is None:
            binary = shutil.which("redis-server")
            if binary is None:
                raise SupervisorError(
                    "redis-server is not on PATH: install it (`make run` installs it with apt) "
                    "or set REDIS_URL to an existing Redis"
                )
            self.redis = RedisChild(
                binary, settings.state_dir, policy, settings.redis_start_timeout_s
            )
        self._env = env  # shared by the children: REDIS_URL is added once Redis is up
        self.children = {
            spec.name: Child(spec.name, [sys.executable, "-m", spec.module], self._env, policy)
            for spec in settings.services
        }
        self._stop = asyncio.Event()
        self._requests: set[asyncio.Task[None]] = set()

    def request_stop(self, reason: str) -> None:
        if self._stop.is_set():
            log.warning("stop requested again; killing the children", extra={"reason": reason})
            for child in self.children.values():
                child.kill()
            return
        log.info("stopping", extra={"reason": reason})
        self._stop.set()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal should stop everything in order, not orphan the children.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise SupervisorError(
                f"control socket path is too long for a UNIX socket: {self.socket_path} "
                "(set SWITCHBOARD_STATE_DIR to a shorter path)"
            )
        self.socket_path.unlink(missing_ok=True)  # stale: we hold the lock, nobody serves it
        server = await asyncio.start_unix_server(self._serve_client, path=str(self.socket_path))
        self.socket_path.chmod(0o600)
        try:
            await self._start_all()
            log.info("supervisor ready", extra={"services": list(self.children)})
            await self._stop.wait()
        finally:
            server.close()
            await self._stop_all()
            await server.wait_closed()
            self.socket_path.unlink(missing_ok=True)
        log.info("supervisor stopped")
        return 0

    async def _start_all(self) -> None:
        if self.redis is not None:
            await self.redis.start()
            self._env["REDIS_URL"] = self.redis.url
            log.info("private redis ready", extra={"url": self.redis.url, "pid": self.redis.pid})
        if not self.children:
            log.warning("no service to run", extra={"known": list(KNOWN_SERVICES)})
        for child in self.children.values():
            if self._stop.is_set():
                return
            await child.start()

    async def _stop_all(self) -> None:
        # Services first, so they can finish their work while Redis is still there.
        await asyncio.gather(*(child.stop() for child in self.children.values()))
        if self.redis is not None:
            await self.redis.stop()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        if self.redis is not None:
            url = self.redis.url if self.redis.port else None
            redis = {"url": url, "private": True, **self.redis.status()}
        else:
            redis = {"url": redact_url(self.settings.external_redis_url or ""), "private": False}
        return {
            "pid": os.getpid(),
            "state_dir": str(self.settings.state_dir),
            "stopping": self._stop.is_set(),
            "redis": redis,
            "services": {name: child.status() for name, child in self.children.items()},
        }

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:  # stop waits for answers in flight (e.g. a restart)
            self._requests.add(task)
        stop_after = False
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 5.0)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("expected a JSON object")
            except (ValueError, TimeoutError) as exc:
                answer: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
            except ConnectionError:
                return
            else:
                answer = await self._safe_answer(request)
                stop_after = request.get("cmd") == "stop"
            writer.write(json.dumps(answer).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            if task is not None:
                self._requests.discard(task)
        if stop_after:
            self.request_stop("control socket")

    async def _safe_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._answer(request)
        except Exception as exc:  # boundary: a bug must not take the control socket down
            log.exception("control request failed", extra={"cmd": request.get("cmd")})
            return {"ok": False, "error": f"internal error: {exc!r}"}

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "result": self.status()}
        if cmd == "stop":
            return {"ok": True, "result": {"pid": os.getpid(), "grace_s": self.settings.grace_s}}
        if cmd == "restart":
            return await self._restart(request.get("service"))
        if cmd == "reload-handlers":
            handlers = self.children.get("handlers")
            if handlers is None:
                return {"ok": False, "error": "reload-handlers is not available yet: no handlers"}
            if not handlers.send_signal(signal.SIGHUP):
                return {"ok": False, "error": f"handlers is not running ({handlers.state})"}
            return {"ok": True, "result": {"service": "handlers", "pid": handlers.pid}}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _restart(self, name: object) -> dict[str, Any]:
        child = self.children.get(name) if isinstance(name, str) else None
        if child is None:
            known = ", ".join(self.children) or "none"
            return {"ok": False, "error": f"unknown service {name!r} (known: {known})"}
        if self._stop.is_set():
            return {"ok": False, "error": "the supervisor is stopping"}
        log.info("restart requested", extra={"service": child.name})
        pid = await child.restart()
        return {"ok": True, "result": {"service": child.name, "pid": pid}}


def run(environ: Mapping[str, str] = os.environ) -> int:
    """`switchboard run`: returns the exit code, or raises SystemExit with one line."""
    settings = load(SupervisorSettings.from_env, environ)
    configure_logging(settings.log_level, json_output=settings.log_json)
    try:
        # 0700: the folder holds the signing key and a socket that can stop everything.
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = acquire_lock(settings.state_dir / LOCK_FILE)
    except OSError as exc:
        raise SystemExit(f"cannot use state folder {settings.state_dir}: {exc}") from None
    except SupervisorError as exc:
        raise SystemExit(str(exc)) from None
    try:
        env = child_env(settings, environ)
        return uvloop.run(_serve(settings, env))
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    except (OSError, SupervisorError, StartError) as exc:
        raise SystemExit(f"supervisor: {exc}") from None
    finally:
        release_lock(lock_fd)


def child_env(settings: SupervisorSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment; fails early on a JWT setting every service would refuse."""
    env = dict(environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # children's logs interleave in real time
    if not env.get("SECRET_KEY"):
        env["SECRET_KEY"] = load_or_create_secret(settings.state_dir / SECRET_FILE)
    env.setdefault("STREAMS_USERS_FILE", str(settings.state_dir / USERS_FILE))
    JwtSettings.from_env(Env(env))
    return env


async def _serve(settings: SupervisorSettings, env: dict[str, str]) -> int:
    return await Supervisor(settings, env).serve()
