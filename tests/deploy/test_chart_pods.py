"""The services run as the chart configures them: each enabled component started as its
Deployment's command with the rendered environment (the Redis URL and port pointed at this
machine), answers the probes the chart declares, and stops on SIGTERM inside the chart's
shutdown budget."""

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

from services.common.settings import Env, RedisSettings
from tests.conftest import RedisProcess
from tests.deploy.chartkit import (
    SERVICES,
    VALUE_SETS,
    container_env,
    deployments,
    one,
    render,
)
from tests.helpers import clean_env, free_port, wait_until

SECRET = "chart-test-secret-0123456789-abcdefghijklmnop"


@pytest.mark.parametrize("component", ["gateway", "rooms"])
async def test_component_runs_with_the_rendered_env(
    component: str, redis_server: RedisProcess, tmp_path: Path
) -> None:
    assert (SERVICES / component / "__main__.py").is_file()
    docs = render(VALUE_SETS["external-redis-url"], tmp_path)
    deployment = deployments(docs)[component]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    rendered = container_env(docs, deployment)
    port = free_port()
    prefix = component.upper()
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env()
    env.update({k: v for k, v in rendered.items() if isinstance(v, str)})
    env.update(
        {
            "SECRET_KEY": SECRET,  # a secretKeyRef in the pod
            "REDIS_URL": redis_server.url,
            f"{prefix}_PORT": str(port),
            f"{prefix}_HOST": "127.0.0.1",
            "HOME": str(home),  # the pod's /tmp emptyDir
            "TMPDIR": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",  # as the image sets it
        }
    )
    command = container["command"]
    assert command[:2] == ["python", "-m"]
    # Popen returns at once (no waiting): the process is polled for readiness below.
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, *command[1:]],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        async def status(path: str) -> int:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"{component} exited: {out}")
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}{path}") as response,
                ):
                    return response.status
            except aiohttp.ClientError:
                return 0

        async def ready() -> bool:
            return await status(container["readinessProbe"]["httpGet"]["path"]) == 200

        await wait_until(ready, timeout_s=20, what=f"{component} ready")
        assert await status(container["livenessProbe"]["httpGet"]["path"]) == 200
        assert await status("/metrics") == 200

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        budget = pod["terminationGracePeriodSeconds"] - int(
            container["lifecycle"]["preStop"]["exec"]["command"][1]
        )
        assert proc.wait(timeout=budget) == 0
        assert time.monotonic() - started < budget
        assert list(home.iterdir()) == [], "the service wrote into HOME/TMPDIR"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


async def test_bundled_redis_starts_with_the_rendered_command(tmp_path: Path) -> None:
    """The StatefulSet's shell command with a password full of quoting traps, then the services'
    own URL from the KV_* names the chart gives them."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH (`make test` installs it)")
    docs = render(VALUE_SETS["bundled-redis"], tmp_path)
    statefulset = one(docs, "StatefulSet", "sb-switchboard-redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    shell, flag, script = container["command"]
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    script = script.replace("exec redis-server", f"exec {binary}").replace("/data", str(data))
    script = script.replace(" <<EOF", f" --port {port} --bind 127.0.0.1 --save '' <<EOF")
    password = 'p"a\\ss w$rd@/:'
    proc = subprocess.Popen(  # noqa: ASYNC220 - polled below
        [shell, flag, script],
        env={**clean_env(), "REDISCLI_AUTH": password},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        gateway = container_env(docs, deployments(docs)["gateway"])
        settings = RedisSettings.from_env(
            Env(
                {
                    "KV_HOST": "127.0.0.1",
                    "KV_PORT": str(port),
                    "KV_EVENTS_DB_INDEX": gateway["KV_EVENTS_DB_INDEX"],
                    "KV_PASSWORD": password,
                }
            )
        )
        assert gateway["KV_HOST"] == "sb-switchboard-redis" and gateway["KV_PORT"] == "6379"

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await wait_until(listening, timeout_s=10, what="bundled redis listening")
        client = Redis.from_url(settings.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
        wrong = Redis(host="127.0.0.1", port=port, password="wrong", retry=Retry(NoBackoff(), 0))
        try:
            with pytest.raises(AuthenticationError):
                await wrong.ping()
        finally:
            await wrong.aclose()
        # exec: SIGTERM reaches redis-server itself, which exits cleanly
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
