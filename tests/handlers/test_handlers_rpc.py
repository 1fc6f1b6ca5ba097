"""rpc over the Redis contract: a call on sb:rpc, the answer on the caller's reply channel."""

import json
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from tests.handlers.conftest import PROBE, RpcClient, group_settled, write
from tests.helpers import wait_until

TASKS = {
    "task_echo.py": """
        def run(request):
            return {"data": request.data, "user": request.user, "client": request.client,
                    "room": request["room"], "method": request.method}
        """,
    "task_add.py": """
        import asyncio

        async def run(request):
            await asyncio.sleep(0)
            return request.data["a"] + request.data["b"]
        """,
    "task_slow.py": """
        import asyncio

        TIMEOUT = 0.2

        async def run(request):
            await asyncio.sleep(3600)
        """,
    "task_fail.py": """
        def run(request):
            raise ValueError("no such shot")
        """,
    "task_refuse.py": """
        from services.common.errors import BadRequest

        def run(request):
            raise BadRequest("frame must be positive")
        """,
    "task_unjson.py": """
        def run(request):
            return object()
        """,
    "task_admin.py": PROBE.replace("\n", "\n        ")
    + """
        from services.handlers.api import requires

        @requires("admin")
        def run(request):
            probe().incr("admin-ran")
            return "done"
        """,
    "task_supervise.py": """
        from services.handlers.api import requires

        @requires(role="supervisor")
        async def run(request):
            return request.claims["role"]
        """,
}


async def test_tasks_answer_with_their_result_or_a_typed_error(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any, rpc: RpcClient
) -> None:
    _, tasks = folders
    for name, source in TASKS.items():
        write(tasks, name, source)
    service = await start_handlers()

    reply = await rpc.call("echo", {"x": [1, 2]}, user="bob", room="r1")
    assert reply == {
        "req": reply["req"],
        "result": {
            "data": {"x": [1, 2]},
            "user": "bob",
            "client": "client-bob",
            "room": "r1",
            "method": "echo",
        },
    }
    assert (await rpc.call("add", {"a": 2, "b": 3}))["result"] == 5

    started = time.monotonic()
    assert (await rpc.call("slow"))["error"] == {
        "code": 114,
        "message": "method 'slow' timed out after 0.2 s",
        "temporary": True,
    }
    assert time.monotonic() - started < 2
    assert (await rpc.call("nope"))["error"] == {
        "code": 104,
        "message": "unknown method 'nope'",
    }
    assert (await rpc.call("fail"))["error"] == {"code": 115, "message": "no such shot"}
    assert (await rpc.call("refuse"))["error"] == {"code": 107, "message": "frame must be positive"}
    assert (await rpc.call("unjson"))["error"]["code"] == 115

    # requires(...): checked against the caller's claims before the task runs.
    denied = await rpc.call("admin", claims={"sub": "alice", "scope": "publish"})
    assert denied["error"] == {
        "code": 103,
        "message": "method 'admin' is not allowed for this token",
    }
    assert await redis.get("admin-ran") is None
    allowed = await rpc.call("admin", claims={"sub": "alice", "scope": "publish admin"})
    assert allowed["result"] == "done" and await redis.get("admin-ran") == b"1"
    assert (await rpc.call("supervise", claims={"role": "artist"}))["error"]["code"] == 103
    assert (await rpc.call("supervise", claims={"role": "supervisor"}))["result"] == "supervisor"

    await wait_until(lambda: group_settled(redis, "sb:rpc"), what="every call acked")
    _, body = await service.api("GET", "/handlers")
    by_name = {t["name"]: t for t in body["tasks"]}
    assert by_name["admin"]["requires"] == {"scopes": ["admin"], "claims": {}}
    assert (by_name["fail"]["failures"], by_name["fail"]["last_error"]) == (
        1,
        "ValueError: no such shot",
    )
    async with service.http.session.get(service.http.make_url("/metrics")) as resp:
        text = await resp.text()
    assert 'switchboard_handlers_task_calls_total{outcome="ok",task="echo"} 1.0' in text
    assert 'switchboard_handlers_task_calls_total{outcome="timeout",task="slow"} 1.0' in text
    assert 'switchboard_handlers_task_calls_total{outcome="method_not_found",task="nope"}' in text


async def test_a_call_past_its_deadline_is_not_run_and_a_malformed_one_is_dead_lettered(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any, rpc: RpcClient
) -> None:
    _, tasks = folders
    write(tasks, "task_count.py", PROBE + "def run(request):\n    return probe().incr('ran')\n")
    service = await start_handlers()
    late = await rpc.send("count", deadline_s=-1)
    await redis.xadd("sb:rpc", {"c": "{not json"})
    wrong_types = {
        "req": "9",
        "reply": rpc.channel,
        "method": "count",
        "data": None,
        "user": "alice",
        "client": "c",
        "deadline": int(time.time() * 1000) + 5000,
        "claims": ["not", "an", "object"],
    }
    await redis.xadd("sb:rpc", {"c": json.dumps(wrong_types)})
    assert (await rpc.call("count"))["result"] == 1  # later calls are answered
    await wait_until(lambda: group_settled(redis, "sb:rpc"), what="every call acked")
    assert not late.done() and await redis.get("ran") == b"1"
    status, body = await service.api("GET", "/dlq")
    by_call = {e["c"]: e for e in body["entries"]}
    dead, typed = by_call["{not json"], by_call[json.dumps(wrong_types)]
    assert dead["kind"] == typed["kind"] == "rpc"
    assert dead["error"].startswith("malformed rpc call")
    assert typed["error"] == ("malformed rpc call: claims must be an object, room a string or null")
    status, body = await service.api("POST", f"/dlq/{dead['id']}/retry")
    assert (status, body["error"]["code"]) == (400, 107)


async def test_many_calls_in_flight_are_answered_each_to_its_caller(
    start_handlers: Callable[..., Any], folders: Any, rpc: RpcClient
) -> None:
    _, tasks = folders
    write(tasks, "task_echo.py", "async def run(request):\n    return request.data\n")
    await start_handlers()
    futures = [await rpc.send("echo", {"i": i}) for i in range(200)]
    for i, future in enumerate(futures):
        reply = await future
        assert json.dumps(reply["result"]) == json.dumps({"i": i})
