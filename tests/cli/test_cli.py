"""The `switchboard` command line: TTL and claim parsing, `token`, `publish` against a stub."""

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from services.cli.main import format_status, parse_claim, parse_ttl
from services.common.auth import TokenVerifier
from services.common.settings import Env, JwtSettings
from tests.helpers import clean_env
from tests.helpers import run_cli as cli

REPO = Path(__file__).resolve().parents[2]
KEY = "k" * 48


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(SWITCHBOARD_STATE_DIR=str(tmp_path / "state"), LOG_JSON="false")
    env.update(extra)
    return env


async def cli_async(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The CLI in a subprocess without blocking the loop (a stub server runs in this test)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def verifier(key: str) -> TokenVerifier:
    return TokenVerifier(JwtSettings.from_env(Env({"SECRET_KEY": key})))


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800), ("90", 90), ("0", None)],
)
def test_parse_ttl(raw: str, seconds: int | None) -> None:
    assert parse_ttl(raw) == seconds
    assert parse_ttl("never") is None


@pytest.mark.parametrize("raw", ["1y", "-5", "1.5h", "", "h"])
def test_parse_ttl_refuses_garbage(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid TTL"):
        parse_ttl(raw)


def test_parse_claim_reads_json_values_and_falls_back_to_strings() -> None:
    assert parse_claim("room=42") == ("room", 42)
    assert parse_claim('channels=["news"]') == ("channels", ["news"])
    assert parse_claim("name=alice") == ("name", "alice")
    assert parse_claim("empty=") == ("empty", "")
    for bad in ("novalue", "=x", "sub=bob", "exp=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_claim(bad)


def test_format_status_aligns_long_service_names() -> None:
    row = {"state": "running", "pid": 10, "restarts": 2, "uptime_s": 75.0}
    text = format_status(
        {
            "pid": 1,
            "state_dir": "/srv/state",
            "redis": {"url": "redis://127.0.0.1:6400/0", "private": True, **row},
            "services": {"a_rather_long_name": row},
        }
    )
    lines = text.splitlines()
    assert "redis://127.0.0.1:6400/0 (private)" in lines[1]
    assert lines[-1].split() == ["a_rather_long_name", "running", "10", "2", "1m15s"]


def test_token_verifies_with_the_key_the_supervisor_generated(tmp_path: Path) -> None:
    env = cli_env(tmp_path, SWITCHBOARD_SERVICES="tests.common.dummy_service")
    key_path = tmp_path / "state" / "secret.key"
    with (tmp_path / "supervisor.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "run"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 10
        while not (key_path.exists() and (tmp_path / "state" / "control.sock").exists()):
            assert proc.poll() is None, (tmp_path / "supervisor.log").read_text()
            assert time.monotonic() < deadline, "the supervisor did not start"
            time.sleep(0.05)

        result = cli(env, "token", "--sub", "alice", "--scope", "publish", "--ttl", "1h")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = verifier(key_path.read_text().strip()).verify(token)
    assert claims.user == "alice"
    assert claims.scopes == {"publish"}
    assert claims.expires_at is not None
    assert abs(claims.expires_at - (time.time() + 3600)) < 60


def test_token_never_expires_and_carries_extra_claims(tmp_path: Path) -> None:
    env = cli_env(tmp_path, SECRET_KEY=KEY)
    result = cli(
        env, "token", "--sub", "bob", "--ttl", "never", "--claim", "room=42",
        "--claim", 'channels=["news"]', "--scope", "publish", "--scope", "admin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = jwt.decode(result.stdout.strip(), KEY, algorithms=["HS256"])
    assert "exp" not in payload
    assert payload["sub"] == "bob"
    assert payload["room"] == 42
    assert payload["channels"] == ["news"]
    assert payload["scope"] == "publish admin"


def test_token_without_any_key_fails_with_one_line(tmp_path: Path) -> None:
    result = cli(cli_env(tmp_path), "token", "--sub", "alice")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SECRET_KEY" in lines[0]
    assert "switchboard run" in lines[0]


def test_token_with_a_bad_ttl_is_a_usage_error(tmp_path: Path) -> None:
    result = cli(cli_env(tmp_path, SECRET_KEY=KEY), "token", "--sub", "a", "--ttl", "soon")
    assert result.returncode == 2
    assert "invalid TTL 'soon'" in result.stderr


async def test_publish_posts_the_event_with_a_publish_token(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    seen: list[tuple[str, Any]] = []

    async def publish(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization", ""), await request.json()))
        return web.json_response({"offset": "1732250-3", "epoch": "e1"})

    app = web.Application()
    app.router.add_post("/api/publish", publish)
    server = await aiohttp_server(app)
    env = cli_env(tmp_path, SECRET_KEY=KEY, SWITCHBOARD_URL=str(server.make_url("/")))

    code, out, err = await cli_async(env, "publish", "news", '{"text": "hi"}', "--event", "note")

    assert code == 0, err
    assert json.loads(out) == {"offset": "1732250-3", "epoch": "e1"}
    [(authorization, body)] = seen
    assert body == {"channel": "news", "data": {"text": "hi"}, "event": "note"}
    claims = verifier(KEY).verify(authorization.removeprefix("Bearer "))
    assert claims.user == "switchboard-cli"
    assert claims.scopes == {"publish"}


async def test_publish_failure_prints_the_error_body(aiohttp_server: Any, tmp_path: Path) -> None:
    async def publish(request: web.Request) -> web.Response:
        error = {"error": {"code": 103, "message": "permission denied"}}
        return web.json_response(error, status=403)

    app = web.Application()
    app.router.add_post("/api/publish", publish)
    server = await aiohttp_server(app)
    env = cli_env(tmp_path, SECRET_KEY=KEY, SWITCHBOARD_URL=str(server.make_url("")))

    code, out, err = await cli_async(env, "publish", "news", "{}")

    assert code == 1
    assert out == ""
    assert "HTTP 403" in err
    assert "permission denied" in err


def test_publish_to_nothing_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    env = cli_env(tmp_path, SECRET_KEY=KEY, SWITCHBOARD_URL=f"http://127.0.0.1:{port}")
    result = cli(env, "publish", "news", "{}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach" in lines[0]


def test_publish_refuses_invalid_json(tmp_path: Path) -> None:
    result = cli(cli_env(tmp_path, SECRET_KEY=KEY), "publish", "news", "{oops")
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr
