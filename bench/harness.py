"""Processes under test: a private redis-server, server subprocesses, and their CPU and memory.

Each server runs in its own process so that its CPU time can be read alone from /proc, apart
from the load client and Redis that share the same two cores.
"""

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "bench" / "results" / "logs"

# File descriptors for the load client and each server: 10,000 sockets and then some.
WANTED_NOFILE = 65536


def free_port() -> int:
    """A port that was free a moment ago; callers retry if it is taken before they bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile(wanted: int = WANTED_NOFILE) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (root may raise the hard limit too); return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, target), target))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds (user + system, all threads) and resident memory of one process.

    `cpu_s` sums the scheduler's nanosecond run time of every thread (/proc/<pid>/task/*/
    schedstat); `tick_cpu_s` is utime+stime from /proc/<pid>/stat, counted in 10 ms clock ticks,
    too coarse for a run of a few seconds at low load but kept as a cross-check. `system_s` is
    the stime part alone: the kernel's work for the process (its socket writes and reads, and
    on loopback the receiving side's softirq work that runs in the writer's context).
    """

    cpu_s: float
    tick_cpu_s: float
    rss_kb: int
    system_s: float = 0.0


def _schedstat_s(pid: int) -> float | None:
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def sample(pid: int) -> ProcSample:
    """Read CPU time from /proc/<pid> (schedstat, stat) and VmRSS from /proc/<pid>/status."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(b")") + 2 :].split()
    tick_cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    system_s = int(fields[12]) / CLOCK_TICKS
    rss_kb = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                rss_kb = int(line.split()[1])
                break
    precise = _schedstat_s(pid)
    return ProcSample(
        cpu_s=tick_cpu_s if precise is None else precise,
        tick_cpu_s=tick_cpu_s,
        rss_kb=rss_kb,
        system_s=system_s,
    )


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds since boot, summed over all cores (/proc/stat): (busy, stolen).

    Busy is user + nice + system + irq + softirq; stolen is the time the hypervisor ran
    something else while this machine's virtual CPUs wanted to run, which slows a run too.
    """
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, name: str) -> None:
    """Poll until the port accepts TCP connections; fail at once if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} (see {LOG_DIR})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{name} did not listen on port {port} within {timeout_s}s")


@dataclass(slots=True)
class Placement:
    """Which cores the server under test runs on, and which everything else runs on."""

    server: set[int]
    others: set[int]


ALL_CPUS = sorted(os.sched_getaffinity(0))
PLACEMENT = Placement(set(ALL_CPUS), set(ALL_CPUS))


def split_cores() -> Placement:
    """Give the server under test the last core to itself; keep this process (the load client
    and publisher) and Redis, started after this call, on the others.

    The client then never takes CPU from the server it measures, and the server is the
    bottleneck whenever the client keeps up. Needs two cores or more; a no-op otherwise.
    """
    if len(ALL_CPUS) > 1:
        PLACEMENT.server, PLACEMENT.others = set(ALL_CPUS[-1:]), set(ALL_CPUS[:-1])
        os.sched_setaffinity(0, PLACEMENT.others)
    return PLACEMENT


def _preexec_server() -> None:
    raise_nofile()
    os.sched_setaffinity(0, PLACEMENT.server)


class ServerProcess:
    """One server under test, started as a subprocess with a high file-descriptor limit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = LOG_DIR / f"{name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self, ready: Callable[["ServerProcess"], None] | None = None) -> None:
        """Start the process and wait until it listens (and `ready` passes, if given)."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_preexec_server,
            )
        wait_for_port(self.port, self.proc, timeout_s=20.0, name=self.name)
        if ready is not None:
            ready(self)

    def sample(self) -> ProcSample:
        return sample(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the process is still there after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RedisServer:
    """A private redis-server on a free port, persistence off, in a temporary directory."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (`make deps` installs it)")
        self.binary = binary
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis not started"
        return self.proc.pid

    def start(self) -> None:
        for _ in range(3):
            self.port = free_port()
            argv = [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._tmp.name,
                "--maxclients", "10000",
            ]  # fmt: skip
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            with contextlib.suppress(RuntimeError, TimeoutError):
                self._wait_for_ping(timeout_s=10.0)
                return
            self.stop()
        raise RuntimeError("could not start redis-server on a free port")

    def _wait_for_ping(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"redis-server did not answer PING on port {self.port}")

    def sample(self) -> ProcSample:
        return sample(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()


def python_argv(*args: str) -> list[str]:
    """Run a module with the interpreter running the harness (the project's virtualenv)."""
    return [sys.executable, *args]
