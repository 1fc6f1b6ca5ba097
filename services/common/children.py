"""Child processes kept running by the supervisor: restarted with capped backoff, stopped gently.

`Child` runs one command; `RedisChild` is the private redis-server, which counts as started only
once it answers PING. Both are driven by `services.common.supervisor`.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StartError(Exception):
    """A child could not be started (the message says why, in one line)."""


class ExitedEarly(StartError):
    """The process died while starting (for redis-server: usually its port was taken)."""


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn so children get SIGTERM if the supervisor is SIGKILLed (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return preexec


class State(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Policy:
    backoff_initial_s: float
    backoff_max_s: float
    healthy_s: float
    grace_s: float


class Child:
    """One process kept running: restarted with capped exponential backoff until `stop()`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], policy: Policy) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.policy = policy
        self.state = State.STOPPED
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._delay_s = policy.backoff_initial_s
        self._stopping = False
        self._restart_requested = False
        self._wake = asyncio.Event()
        self._launched = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def status(self) -> dict[str, Any]:
        uptime = time.monotonic() - self._started_at if self._proc is not None else None
        return {
            "state": str(self.state),
            "pid": self.pid,
            "restarts": self.restarts,
            "uptime_s": None if uptime is None else round(uptime, 1),
        }

    async def spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            # Own session: a terminal's Ctrl-C reaches only the supervisor, which then stops
            # the services before Redis instead of everything dying at once.
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    async def start(self) -> None:
        """First launch; a failure here is fatal for the supervisor."""
        self._proc = await self.spawn()
        self._started_at = time.monotonic()
        self.state = State.RUNNING
        log.info("started %s", self.name, extra={"service": self.name, "pid": self._proc.pid})
        self._task = asyncio.create_task(self._supervise(), name=f"supervise:{self.name}")

    async def _supervise(self) -> None:
        while self._proc is not None:
            code = await self._proc.wait()
            ran_s = time.monotonic() - self._started_at
            self._proc = None
            if self._stopping:
                break
            if self._restart_requested:
                self._restart_requested = False
                self._delay_s = self.policy.backoff_initial_s
                wait_s = 0.0
            else:
                if ran_s >= self.policy.healthy_s:
                    self._delay_s = self.policy.backoff_initial_s
                wait_s = self._next_delay()
                log.warning(
                    "%s exited with code %s; restarting in %.1fs",
                    self.name,
                    code,
                    wait_s,
                    extra={"service": self.name, "code": code, "backoff_s": wait_s},
                )
            await self._relaunch(wait_s)
        self.state = State.STOPPED

    def _next_delay(self) -> float:
        delay = self._delay_s
        self._delay_s = min(delay * 2, self.policy.backoff_max_s)
        return delay

    async def _relaunch(self, wait_s: float) -> None:
        while not self._stopping:
            self.state = State.RESTARTING
            self._wake.clear()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
            if self._stopping:
                return
            try:
                proc = await self.spawn()
            except (OSError, StartError) as exc:
                wait_s = self._next_delay()
                log.error(
                    "could not start %s: %s",
                    self.name,
                    exc,
                    extra={"service": self.name, "backoff_s": wait_s},
                )
                continue
            if self._stopping:  # stop() arrived while we were spawning: it did not see `proc`
                await self._terminate(proc)
                return
            self._proc = proc
            self._started_at = time.monotonic()
            self.restarts += 1
            self.state = State.RUNNING
            self._launched.set()
            log.info("restarted %s", self.name, extra={"service": self.name, "pid": self.pid})
            return

    async def restart(self) -> int | None:
        """Stop the process (gracefully) and start it again at once; return the new PID."""
        self._launched.clear()
        if self._proc is not None:
            self._restart_requested = True
            await self._terminate(self._proc)
        else:
            self._wake.set()  # skip the rest of the backoff wait
        await self._launched.wait()  # also set by stop()
        return self.pid

    def send_signal(self, signum: int) -> bool:
        if self._proc is None or self._proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signum)
        return True

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._launched.set()
        if self._proc is not None:
            proc = self._proc
            await self._terminate(proc)
            log.info(
                "stopped %s",
                self.name,
                extra={"service": self.name, "pid": proc.pid, "code": proc.returncode},
            )
        if self._task is not None:
            await self._task
        self.state = State.STOPPED

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self.policy.grace_s)
        except TimeoutError:
            log.warning(
                "%s ignored SIGTERM for %.0fs; killing it",
                self.name,
                self.policy.grace_s,
                extra={"service": self.name, "pid": proc.pid},
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class RedisChild(Child):
    """The private redis-server; a launch counts only once it answers PING."""

    def __init__(
        self, binary: str, state_dir: Path, policy: Policy, start_timeout_s: float
    ) -> None:
        super().__init__("redis", [], dict(os.environ), policy)
        self.binary = binary
        self.data_dir = state_dir / "redis"
        self.log_path = state_dir / "logs" / "redis.log"
        self.start_timeout_s = start_timeout_s
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between probing and binding: try a few.
        for attempt in range(3):
            self.port = free_port()
            try:
                await super().start()
                return
            except ExitedEarly:
                if attempt == 2:
                    raise

    async def spawn(self) -> asyncio.subprocess.Process:
        self.argv = [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)),
            *("--save", "", "--appendonly", "yes", "--daemonize", "no"),
            *("--logfile", str(self.log_path)),
        ]
        proc = await super().spawn()
        try:
            await self._wait_for_ping(proc)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return proc

    async def _wait_for_ping(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise ExitedEarly(
                    f"redis-server exited with code {proc.returncode} on port {self.port}: "
                    f"{_last_line(self.log_path)}"
                )
            with contextlib.suppress(OSError, EOFError, ValueError):  # TimeoutError is an OSError
                async with asyncio.timeout(1.0):
                    if await _answering_pid(self.port) == proc.pid:
                        return
            await asyncio.sleep(0.02)  # polling interval, bounded by the deadline
        raise StartError(
            f"redis-server did not answer PING on port {self.port} within "
            f"{self.start_timeout_s:.0f}s (see {self.log_path})"
        )


async def _answering_pid(port: int) -> int | None:
    """PING, then the PID of the Redis on `port`: the port may belong to someone else's Redis."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\nINFO server\r\n")
        if not (await reader.readline()).startswith(b"+PONG"):
            return None
        header = await reader.readline()  # `$<length>` of the bulk string
        if not header.startswith(b"$"):
            return None
        info = await reader.readexactly(int(header[1:]) + 2)
    finally:
        writer.close()
    for line in info.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1].strip()
    return f"see {path}"
