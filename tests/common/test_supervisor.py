"""The local supervisor run for real: `python -m services run` with its own private redis-server.

The children are `tests.common.dummy_service` (set through SWITCHBOARD_SERVICES), so these tests do
not depend on the real services being able to start.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from tests.helpers import clean_env
from tests.helpers import run_cli as cli

REPO = Path(__file__).resolve().parents[2]
DUMMY = "tests.common.dummy_service"

T = TypeVar("T")


def base_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(
        SWITCHBOARD_STATE_DIR=str(state_dir),
        SWITCHBOARD_SERVICES=DUMMY,
        SUPERVISOR_GRACE_S="5",
        LOG_JSON="false",
    )
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], T | None], *, what: str, timeout_s: float = 10.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def control(state_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """One request on the control socket; None while nobody listens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(state_dir / "control.sock"))
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline()
    except OSError:
        return None
    return json.loads(line) if line else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@dataclass
class Running:
    proc: "subprocess.Popen[bytes]"
    env: dict[str, str]
    state_dir: Path
    log_path: Path
    pids: set[int] = field(default_factory=set)  # every child pid seen, checked at teardown

    def status(self) -> dict[str, Any]:
        """`switchboard ctl --json status`, parsed."""
        result = cli(self.env, "ctl", "--json", "status")
        assert result.returncode == 0, result.stderr
        status: dict[str, Any] = json.loads(result.stdout)
        self._remember(status)
        return status

    def quick_status(self) -> dict[str, Any] | None:
        answer = control(self.state_dir, {"cmd": "status"})
        if answer is None or not answer["ok"]:
            return None
        status: dict[str, Any] = answer["result"]
        self._remember(status)
        return status

    def ready(self) -> dict[str, Any] | None:
        status = self.quick_status()
        if status is None:
            return None
        rows = [status["redis"], *status["services"].values()]
        return status if all(row["state"] == "running" for row in rows) else None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _remember(self, status: dict[str, Any]) -> None:
        rows = [status["redis"], *status["services"].values()]
        self.pids.update(row["pid"] for row in rows if row.get("pid"))


def start_supervisor(tmp_path: Path, **extra: str) -> Running:
    state_dir = tmp_path / "state"
    env = base_env(state_dir, **extra)
    log_path = tmp_path / "supervisor.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Running(proc, env, state_dir, log_path)


def shut_down(running: Running) -> None:
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait()
    leaked = [pid for pid in running.pids if pid_alive(pid)]
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes left behind: {leaked}\n{running.output()}"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Running]:
    running = start_supervisor(tmp_path)
    try:
        wait_until(running.ready, what=f"the supervisor to be ready\n{running.log_path}")
        yield running
    finally:
        shut_down(running)


def test_private_redis_answers_ping(supervisor: Running) -> None:
    redis = supervisor.status()["redis"]
    assert redis["private"] is True
    url = urlsplit(redis["url"])
    assert (url.scheme, url.hostname) == ("redis", "127.0.0.1")
    assert url.port is not None
    with socket.create_connection(("127.0.0.1", url.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16).startswith(b"+PONG")
    assert (supervisor.state_dir / "supervisor.lock").read_text().strip() == str(
        supervisor.proc.pid
    )
    assert (supervisor.state_dir / "secret.key").stat().st_mode & 0o777 == 0o600


def test_status_text_lists_every_process(supervisor: Running) -> None:
    result = cli(supervisor.env, "ctl", "status")
    assert result.returncode == 0, result.stderr
    status = supervisor.status()
    assert status["redis"]["url"] in result.stdout
    for name in ("redis", "dummy_service"):
        assert any(line.split()[:2] == [name, "running"] for line in result.stdout.splitlines())


def test_child_killed_with_sigkill_is_restarted(supervisor: Running) -> None:
    before = supervisor.status()["services"]["dummy_service"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        status = supervisor.quick_status()
        row = status["services"]["dummy_service"] if status else None
        return row if row and row["state"] == "running" and row["pid"] != before["pid"] else None

    after = wait_until(restarted, what="the child to come back")
    assert after["restarts"] == before["restarts"] + 1
    assert "dummy_service exited with code -9; restarting in 0.5s" in supervisor.output()


def test_private_redis_killed_is_restarted_on_the_same_port(supervisor: Running) -> None:
    before = supervisor.status()["redis"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        status = supervisor.quick_status()
        redis = status["redis"] if status else None
        return (
            redis
            if redis and redis["state"] == "running" and redis["pid"] != before["pid"]
            else None
        )

    after = wait_until(restarted, what="redis to come back")
    assert after["url"] == before["url"]
    assert after["restarts"] == 1


def test_second_run_on_the_same_state_dir_is_refused(supervisor: Running) -> None:
    result = cli(supervisor.env, "run")
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert f"pid {supervisor.proc.pid}" in line
    assert supervisor.quick_status() is not None  # the first one is unharmed


def test_ctl_stop_exits_0_and_stops_redis(supervisor: Running) -> None:
    status = supervisor.status()
    pids = [status["redis"]["pid"], status["services"]["dummy_service"]["pid"]]

    result = cli(supervisor.env, "ctl", "stop")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "stopped"
    assert supervisor.proc.wait(timeout=10) == 0
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not (supervisor.state_dir / "control.sock").exists()
    assert (supervisor.state_dir / "supervisor.lock").read_text() == ""


def test_sigterm_stops_like_ctl_stop(supervisor: Running) -> None:
    redis_pid = supervisor.status()["redis"]["pid"]
    supervisor.proc.send_signal(signal.SIGTERM)
    assert supervisor.proc.wait(timeout=15) == 0
    assert not pid_alive(redis_pid)
    assert not (supervisor.state_dir / "control.sock").exists()


def test_ctl_restart_replaces_the_child(supervisor: Running) -> None:
    before = supervisor.status()["services"]["dummy_service"]
    result = cli(supervisor.env, "ctl", "restart", "dummy_service")
    assert result.returncode == 0, result.stderr
    after = supervisor.status()["services"]["dummy_service"]
    assert after["state"] == "running"
    assert after["pid"] != before["pid"]
    assert f"(pid {after['pid']})" in result.stdout
    assert not pid_alive(before["pid"])


def test_ctl_restart_unknown_service_fails_clearly(supervisor: Running) -> None:
    result = cli(supervisor.env, "ctl", "restart", "nope")
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert "unknown service 'nope'" in line
    assert "dummy_service" in line


def test_reload_handlers_is_not_available_without_handlers(supervisor: Running) -> None:
    result = cli(supervisor.env, "ctl", "reload-handlers")
    assert result.returncode != 0
    assert "not available yet" in one_line(result.stderr)


def test_reload_handlers_sends_sighup_to_handlers(tmp_path: Path) -> None:
    running = start_supervisor(tmp_path, SWITCHBOARD_SERVICES=f"handlers={DUMMY}")
    try:
        wait_until(running.ready, what="the supervisor to be ready")
        result = cli(running.env, "ctl", "reload-handlers")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: "reloaded" in running.output(), what="the SIGHUP to arrive")
    finally:
        shut_down(running)


def test_ctl_without_a_supervisor_fails_with_one_line(tmp_path: Path) -> None:
    result = cli(base_env(tmp_path / "nothing-here"), "ctl", "status")
    assert result.returncode != 0
    assert "no supervisor running" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SUPERVISOR_GRACE_S", "abc"), ("SUPERVISOR_GRACE_S", "-1"), ("SWITCHBOARD_SERVICES", "a b!")],
)
def test_bad_setting_stops_start_up_with_one_line(tmp_path: Path, name: str, value: str) -> None:
    result = cli(base_env(tmp_path / "state", **{name: value}), "run")
    assert result.returncode != 0
    assert name in one_line(result.stderr)
    assert not (tmp_path / "state").exists()


def test_missing_redis_server_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = cli(base_env(tmp_path / "state", PATH=str(empty)), "run")
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert "redis-server" in line
    assert "make run" in line


def test_weak_secret_key_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = cli(base_env(tmp_path / "state", SECRET_KEY="changeme"), "run")
    assert result.returncode != 0
    assert "SECRET_KEY" in one_line(result.stderr)
