"""The JavaScript client (clients/js), driven by Node's test runner against the live stack.

Node's tests reach the gateway process the clients use, the server API of the in-process one,
and a small control endpoint served here that kills and restarts the gateway process on demand.
"""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from aiohttp import web

from tests.clients.conftest import Stack
from tests.conftest import REPO, SECRET
from tests.helpers import free_port

JS = REPO / "clients" / "js"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH (`make test` installs it)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 10):  # --test-concurrency, --experimental-websocket
        pytest.fail(f"the JavaScript client's tests need Node 20.10 or newer, not {version}")
    if not (JS / "node_modules" / "ws").is_dir():
        pytest.fail("clients/js/node_modules is missing: run `npm ci` in clients/js")
    return node


async def control_server(stack: Stack) -> web.AppRunner:
    """POST /gateway/kill (SIGKILL) and /gateway/start (same port) for Node's recovery tests."""

    async def kill(_: web.Request) -> web.Response:
        stack.kill_gateway()
        return web.json_response({})

    async def stop(_: web.Request) -> web.Response:
        assert stack.gateway is not None
        stack.gateway.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(stack.gateway.proc.wait, 30)
        return web.json_response({})

    async def start(_: web.Request) -> web.Response:
        await stack.start_gateway()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/gateway/kill", kill)
    app.router.add_post("/gateway/stop", stop)
    app.router.add_post("/gateway/start", start)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


async def run_node(
    node: str, env: dict[str, str], files: list[str], timeout_s: float, *flags: str
) -> str:
    """`node --test FILES`; fail with node's output unless every test passed."""
    proc = await asyncio.create_subprocess_exec(
        node,
        *flags,
        "--test",
        "--test-reporter=spec",
        "--test-timeout=20000",
        "--test-concurrency=1",  # one file at a time: the recovery tests kill the gateway
        *files,
        cwd=JS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        output, _ = await proc.communicate()
        pytest.fail(f"node --test timed out:\n{output.decode()}")
    text = output.decode()
    sys.stdout.write(text)  # shown with `pytest -rP`, and on failure
    assert proc.returncode == 0, f"node --test failed ({proc.returncode}):\n{text}"
    summary = dict(re.findall(r"^\S+ (pass|fail|skipped) (\d+)$", text, re.MULTILINE))
    assert summary.get("fail") == "0" and int(summary.get("pass", 0)) > 0, text
    return text


@pytest.mark.parametrize("stack", [{"handlers": True}], indirect=True, ids=["handlers"])
async def test_js_client_suite(stack: Stack) -> None:
    node = node_binary()
    runner = await control_server(stack)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    env = dict(os.environ)
    env.update(
        SB_URL=stack.ws_url,
        SB_API=stack.api_url,
        SB_SECRET=SECRET,
        SB_CONTROL=f"http://127.0.0.1:{port}",
    )
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.js"))
    try:
        await run_node(node, env, files, timeout_s=40)
        # Again with Node's own WebSocket, the browser's API (undici): what a browser runs.
        browser_env = {**env, "SB_GLOBAL_WEBSOCKET": "1"}
        browser_files = ["test/channels.test.js", "test/rooms.test.js"]
        await run_node(node, browser_env, browser_files, 20, "--experimental-websocket")
    finally:
        await runner.cleanup()
