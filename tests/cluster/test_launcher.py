"""`make cluster`'s launcher: the haproxy configuration it renders, its settings, and
`python -m deploy.local` run as a person runs it (banner, token command, clean stop on SIGINT)."""

import asyncio
import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from deploy.local import ClusterSettings, LocalCluster
from deploy.local.cluster import ClusterError
from deploy.local.haproxy import IngressConfig, Server, render_config
from services.common.settings import SettingsError
from services.common.supervisor import is_locked
from tests.conftest import REPO
from tests.helpers import clean_env, free_port


def config_for(*services: str, socket: Path = Path("/tmp/haproxy.sock")) -> str:
    backends = {
        service: [Server(f"{service}-{i}", 9000 + 10 * n + i) for i in (1, 2)]
        for n, service in enumerate(services)
    }
    return render_config(IngressConfig(port=8000, backends=backends, stats_socket=socket))


def test_routes_follow_the_chart_longest_prefix_first() -> None:
    lines = config_for("gateway", "rooms", "streams").splitlines()
    rules = [line.split()[1:] for line in lines if line.startswith("    use_backend")]
    order = [rule[2] for rule in rules]
    assert order.index("path_ws_labels") < order.index("path_ws")  # streams' sockets under /ws/
    assert dict((name, backend) for backend, _, name in rules) == {
        **dict.fromkeys(["path_ws", "path_socket_io", "path_zeph", "path_api"], "gateway"),
        **dict.fromkeys(
            ["path_data", "path_streams", "path_token", "path_frames", "path_labels"], "streams"
        ),
        **dict.fromkeys(
            ["path_mjpeg", "path_ws_labels", "path_ws_stream", "path_ws_frames"], "streams"
        ),
        "path_rooms": "rooms",
    }
    assert "    acl path_ws path /ws" in lines and "    acl path_ws path_beg /ws/" in lines
    assert "    default_backend gateway" in lines


def test_only_the_gateways_are_sticky_and_absent_services_get_no_route() -> None:
    config = config_for("gateway", "rooms")
    backends = {block.split()[0]: block for block in config.split("\nbackend ")[1:]}
    assert set(backends) == {"gateway", "rooms"}
    gateway, rooms = backends["gateway"], backends["rooms"]
    assert "cookie SBSERVER insert indirect nocache" in gateway
    assert "server gateway-1 127.0.0.1:9001 check cookie gateway-1" in gateway
    assert "cookie" not in rooms and "server rooms-2 127.0.0.1:9012 check" in rooms
    assert "streams" not in config
    assert "timeout tunnel 1h" in config and "uri /readyz" in config
    with pytest.raises(ValueError, match="gateway"):
        config_for("rooms")


def test_haproxy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy is not on PATH (`make test` installs it: Makefile target `deps`)")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config_for("gateway", "rooms", "streams", "handlers", socket=tmp_path / "s"))
    check = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "[WARNING]" not in check.stdout + check.stderr


def test_settings_from_the_environment() -> None:
    settings = ClusterSettings.from_env({"CLUSTER_PORT": "9000", "CLUSTER_SERVICES": "gateway"})
    assert (settings.port, settings.replicas, settings.services) == (9000, 2, ("gateway",))
    assert settings.state_dir == Path(".switchboard/cluster").absolute()
    for env, name in (
        ({"CLUSTER_PORT": "http"}, "CLUSTER_PORT"),
        ({"CLUSTER_REPLICAS": "0"}, "CLUSTER_REPLICAS"),
        ({"CLUSTER_SERVICES": "gateway,mail"}, "CLUSTER_SERVICES"),
    ):
        with pytest.raises(SettingsError, match=name):
            ClusterSettings.from_env(env)


async def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster = LocalCluster(ClusterSettings(state_dir=tmp_path, port=port), clean_env())
        with pytest.raises(ClusterError, match=f"port {port} is in use: set CLUSTER_PORT"):
            await cluster.start()
    assert cluster.redis is None and cluster.replicas == {}


async def test_the_launcher_prints_a_working_token_command_and_stops_on_sigint(
    tmp_path: Path,
) -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not on PATH (`make test` installs it: Makefile target `deps`)")
    state_dir = tmp_path / "state"
    env = {
        **clean_env(),
        "CLUSTER_PORT": str(free_port()),
        "CLUSTER_STATE_DIR": str(state_dir),
        "CLUSTER_SERVICES": "gateway",
    }
    launcher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.local",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert launcher.stdout is not None
    try:
        lines: dict[str, str] = {}
        async with asyncio.timeout(30):
            while "logs" not in lines:
                line = (await launcher.stdout.readline()).decode()
                assert line, f"the launcher exited: {lines}"
                key, sep, value = line.strip().partition(": ")
                if sep:
                    lines[key.strip()] = value.strip()
        url = f"http://127.0.0.1:{env['CLUSTER_PORT']}"
        assert lines["WebSocket"] == url.replace("http", "ws") + "/ws"
        assert (state_dir / "secret.key").stat().st_mode & 0o777 == 0o600

        # The printed token command, run as printed (from the repository), mints a token the
        # gateways behind haproxy accept.
        command = shlex.split(lines["token"])
        assignments = dict(word.split("=", 1) for word in command if "=" in word and "/" in word)
        argv = [word for word in command if word.split("=", 1)[0] not in assignments]
        token = subprocess.run(  # noqa: ASYNC221 - a short CLI run, nothing else to do meanwhile
            argv, cwd=REPO, env={**env, **assignments}, capture_output=True, text=True, check=True
        ).stdout.strip()
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{url}/ws", headers={"Authorization": f"Bearer {token}"}) as ws,
        ):
            await ws.send_json({"id": 1, "op": "subscribe", "channel": "news"})
            reply = json.loads((await ws.receive(timeout=5)).data)
            assert "result" in reply, reply

        launcher.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = (await launcher.stdout.read()).decode()
            assert await launcher.wait() == 0, rest
    finally:
        if launcher.returncode is None:
            launcher.kill()
            await launcher.wait()
    assert "cluster stopped" in rest
    assert not is_locked(state_dir / "cluster.lock")
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", int(env["CLUSTER_PORT"]))
        writer.close()
    leftovers = subprocess.run(  # noqa: ASYNC221 - one quick pgrep
        ["pgrep", "-f", str(state_dir)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == "", f"processes left running: {leftovers.stdout}"
