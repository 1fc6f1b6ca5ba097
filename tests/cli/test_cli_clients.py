"""`switchboard subscribe|history|presence|publish|rooms` against a real gateway and rooms."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import SECRET
from tests.helpers import clean_env, wait_until

REPO = Path(__file__).resolve().parents[2]


def env_for(gw: Any, rooms: Any = None, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(SECRET_KEY=SECRET, SWITCHBOARD_URL=gw.url("").rstrip("/"))
    env.update(extra)
    if rooms is not None:
        env["SWITCHBOARD_ROOMS_URL"] = str(rooms.http.make_url("")).rstrip("/")
    return env


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_publish_then_history_and_a_live_subscriber(gateway):
    env = env_for(gateway)
    code, out, err = await cli(env, "publish", "news", '{"n": 1}')
    assert code == 0, err
    first = json.loads(out)
    subscriber = asyncio.create_task(cli(env, "subscribe", "news", "--count", "2"))

    async def subscribed() -> bool:
        status, body = await gateway.api("GET", "/api/presence?channel=news")
        return status == 200 and len(body["clients"]) == 1

    await wait_until(subscribed, what="the CLI subscribed", timeout_s=15)
    code, out, err = await cli(env, "presence", "news")
    assert code == 0, err
    assert out.split()[0] == "switchboard-cli"
    await cli(env, "publish", "news", '{"n": 2}', "--event", "tick")
    await cli(env, "publish", "news", '{"n": 3}')
    code, out, err = await subscriber
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(p["data"], p.get("event")) for p in lines] == [({"n": 2}, "tick"), ({"n": 3}, None)]

    code, out, err = await cli(env, "history", "news")
    assert code == 0, err
    assert [json.loads(line)["data"] for line in out.splitlines()] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert err.startswith("position ")
    # Resuming after the first publication gives the two after it, then stops at --count.
    since = f"{first['offset']}:{first['epoch']}"
    code, out, err = await cli(env, "subscribe", "news", "--since", since, "--count", "2")
    assert code == 0, err
    assert [json.loads(line)["data"] for line in out.splitlines()] == [{"n": 2}, {"n": 3}]


async def test_errors_are_one_line_and_a_non_zero_exit(gateway):
    env = env_for(gateway)
    code, out, err = await cli(env, "history", "bad channel")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "code 102" in err
    code, _, err = await cli(env_for(gateway, SECRET_KEY="x" * 40), "history", "news")
    assert code == 1 and err.count("\n") == 1 and "invalid token" in err  # the gateway refused it


async def test_rooms_list_get_and_delete(gateway, start_rooms):
    rooms = await start_rooms()
    member = await gateway.connect("alice")
    await member.ok("room.join", room="review-1", state={"frame": 12})
    env = env_for(gateway, rooms)
    code, out, err = await cli(env, "rooms", "list")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["review-1", "1", "1"]
    code, out, err = await cli(env, "rooms", "--json", "get", "review-1")
    assert code == 0, err
    room = json.loads(out)
    assert (room["state"], room["people"]) == ({"frame": 12}, ["alice"])
    code, out, err = await cli(env, "rooms", "delete", "review-1")
    assert code == 0, err
    while not (await member.push(kind="room")).get("deleted"):
        pass  # the join's push comes first; the member is then told of the deletion
    code, out, err = await cli(env, "rooms", "get", "review-1")
    assert code == 1 and "HTTP 404" in err
    await member.close()
