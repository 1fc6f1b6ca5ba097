"""`switchboard streams list|push|pull` against a real streams service."""

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.streams.app import create_app
from services.streams.settings import StreamsSettings
from tests.cli.test_cli_clients import REPO, cli
from tests.conftest import SECRET, gateway_env
from tests.helpers import clean_env


@pytest.fixture
async def streams(redis: Any, redis_server: Any) -> AsyncIterator[TestClient]:
    settings = StreamsSettings.from_env(gateway_env(redis_server.url))
    client = TestClient(TestServer(create_app(settings, redis=redis)))
    await client.start_server()
    yield client
    await client.close()


def env_for(streams: TestClient) -> dict[str, str]:
    env = clean_env()
    env.update(SECRET_KEY=SECRET, SWITCHBOARD_STREAMS_URL=str(streams.make_url("")).rstrip("/"))
    return env


async def test_push_files_then_pull_them_back_byte_for_byte(streams, tmp_path: Path):
    files = []
    for i, size in enumerate([0, 1, 5000, 300_000]):  # an empty entry too
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * size)
        files.append(path)
    env = env_for(streams)
    code, out, err = await cli(env, "streams", "--json", "push", "cam", *map(str, files))
    assert code == 0, err
    ids = json.loads(out)["ids"]
    assert len(ids) == 4

    code, out, err = await cli(env, "streams", "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["cam", "4", ids[-1]]

    target = tmp_path / "pulled"
    code, out, err = await cli(
        env, "streams", "pull", "cam", "--since", "0", "--limit", "4", "--out", str(target)
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ids
    for entry_id, path in zip(ids, files, strict=True):
        assert (target / "cam" / entry_id).read_bytes() == path.read_bytes()


async def test_a_missing_file_and_an_unreachable_service_are_one_line(streams, tmp_path: Path):
    code, out, err = await cli(env_for(streams), "streams", "push", "cam", str(tmp_path / "no"))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "no such file" in err
    env = env_for(streams)
    env["SWITCHBOARD_STREAMS_URL"] = "http://127.0.0.1:9"
    code, out, err = await cli(env, "streams", "list")
    assert code == 1 and err.count("\n") == 1 and "cannot reach" in err


async def test_users_added_by_the_cli_log_in_to_the_streams_service(
    redis: Any, redis_server: Any, tmp_path: Path
):
    users = tmp_path / "users"
    env = clean_env()
    for args in (["--file", str(users), "add", "alice"], ["add", "bob"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "users", *args, cwd=REPO,
            env={**env, "STREAMS_USERS_FILE": str(users)}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate(b"s3cret\n")
        assert proc.returncode == 0, err
        assert out.decode().startswith(f"user {args[-1]} saved")
    settings = StreamsSettings.from_env(
        gateway_env(redis_server.url, STREAMS_USERS_FILE=str(users))
    )
    client = TestClient(TestServer(create_app(settings, redis=redis)))
    await client.start_server()
    try:
        for name, password, status in (("alice", "s3cret", 200), ("bob", "s3cret", 200),
                                       ("alice", "wrong", 401)):  # fmt: skip
            resp = await client.post("/token", data={"username": name, "password": password})
            assert resp.status == status, await resp.text()
    finally:
        await client.close()
