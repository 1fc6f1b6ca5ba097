"""Tokens from query, header and cookies; expiry and forgery refused; POST /token; users file."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from services.streams import users
from services.streams.auth import Principal, principal_from
from services.streams.users import UsersFile, add_user, check_password, hash_password
from tests.conftest import REPO
from tests.streams.conftest import Streams

FAST = 1000  # PBKDF2 iterations for test users; the CLI uses users.ITERATIONS


async def _ping(streams: Streams, **kw: Any) -> tuple[int, Any]:
    async with streams.client.get("/ping", **kw) as r:
        return r.status, await r.json()


async def test_token_from_query_header_and_both_cookies(streams: Streams) -> None:
    token = streams.token
    assert await _ping(streams, params={"token": token}) == (200, True)
    assert await _ping(streams, headers={"Authorization": f"Bearer {token}"}) == (200, True)
    for name, value in (("authorization", f'"Bearer {token}"'), ("access_token_cookie", token)):
        async with aiohttp.ClientSession() as s:
            headers = {"Cookie": f"{name}={value}"}
            async with s.get(streams.url("/ping/"), headers=headers) as r:
                assert (r.status, await r.json()) == (200, True), name


async def test_missing_forged_and_expired_tokens_are_refused(
    streams: Streams, make_token: Callable[..., str]
) -> None:
    status, body = await _ping(streams)
    assert (status, body["error"]["code"]) == (401, 101)
    forged = make_token("alice", key="another-secret-0123456789-abcdefghijklmnop")
    status, body = await _ping(streams, params={"token": forged})
    assert (status, body["error"]["code"]) == (401, 101)
    status, body = await _ping(streams, headers={"Authorization": "Bearer anything"})
    assert (status, body["error"]["code"]) == (401, 101)
    expired = make_token("alice", ttl=-60)
    status, body = await _ping(streams, params={"token": expired})
    assert (status, body["error"]["code"]) == (401, 109)


async def test_revoked_token_is_refused(
    start_streams: Callable[..., Any], make_token: Callable[..., str], redis: Any
) -> None:
    streams: Streams = await start_streams()
    token = make_token("alice", jti="j1")
    assert await _ping(streams, params={"token": token}) == (200, True)
    await redis.set("sb:revoked:j1", b"1")
    status, body = await _ping(streams, params={"token": token})
    assert (status, body["error"]["code"]) == (401, 101)


def test_stream_claims_and_default_access() -> None:
    anyone = principal_from({"sub": "a"}, "readwrite")
    assert anyone.can_read("x") and anyone.can_write("x")
    reader = principal_from({"sub": "a"}, "read")
    assert reader.can_read("x") and not reader.can_write("x")
    nobody = principal_from({"sub": "a"}, "none")
    assert not nobody.can_read("x")
    split = principal_from({"sub": "a", "streams": {"read": ["cam*"], "write": ["cam1"]}}, "none")
    assert split.can_read("cam2") and not split.can_write("cam2") and split.can_write("cam1")
    assert not split.can_read("imu")
    both = principal_from({"sub": "a", "streams": ["imu"]}, "readwrite")
    assert both.can_write("imu") and not both.can_read("cam1")
    admin = principal_from({"sub": "a", "streams": [], "scope": "admin"}, "none")
    assert admin.can_write("anything") and isinstance(admin, Principal)


def test_password_hash_is_salted_pbkdf2() -> None:
    one, two = hash_password("pw", iterations=FAST), hash_password("pw", iterations=FAST)
    assert one != two and one.startswith("pbkdf2_sha256$1000$")
    assert check_password("pw", one) and not check_password("pW", one)
    assert not check_password("pw", "garbage")


async def test_post_token_only_for_configured_users(
    start_streams: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "users"
    add_user(path, "ptg", "correct horse", iterations=FAST)
    streams: Streams = await start_streams(STREAMS_USERS_FILE=str(path))
    form = {"username": "ptg", "password": "ptg"}  # PTG's "user = password" is refused
    async with streams.client.post("/token", data=form) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == 101
    form = {"username": "nobody", "password": "nobody"}
    async with streams.client.post("/token", data=form) as r:
        assert r.status == 401
    form = {"username": "ptg", "password": "correct horse"}
    async with streams.client.post("/token", data=form, params={"exp": "120"}) as r:
        assert r.status == 200
        body = await r.json()
        assert body["token_type"] == "bearer"
        cookie = r.cookies["authorization"]
        assert cookie.value == f"Bearer {body['access_token']}" and cookie["httponly"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "ptg" and 100 <= claims["exp"] - claims["iat"] <= 120
    assert await _ping(streams, params={"token": body["access_token"]}) == (200, True)
    # A user added while the service runs can log in at once.
    add_user(path, "second", "another one", iterations=FAST)
    form = {"username": "second", "password": "another one"}
    async with streams.client.post("/token/", data=form) as r:
        assert r.status == 200
    async with streams.client.post("/token", data={"username": "ptg"}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == 107


def test_users_cli_adds_from_stdin_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "users"
    cmd = [sys.executable, "-m", "services.streams.users", "--file", str(path)]
    done = subprocess.run(
        [*cmd, "add", "alice"], input="s3cret\n", capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in path.read_text()
    assert UsersFile(str(path)).verify("alice", "s3cret")
    assert not UsersFile(str(path)).verify("alice", "wrong")
    assert (path.stat().st_mode & 0o777) == 0o600
    listed = subprocess.run([*cmd, "list"], capture_output=True, text=True, cwd=REPO)
    assert listed.stdout.split() == ["alice"]
    bad = subprocess.run(
        [*cmd, "add", "a:b"], input="x\n", capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode == 1 and "invalid user name" in bad.stderr
    assert users.main(["--file", str(path), "remove", "nobody"]) == 1


@pytest.mark.parametrize("line", ["alice:plain", "alice", "alice:pbkdf2_sha256$1$x"])
def test_malformed_users_file_is_refused(line: str) -> None:
    with pytest.raises(users.UsersFileError):
        users.parse(line + "\n")
