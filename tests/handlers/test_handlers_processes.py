"""The service as real processes: replicas sharing the work, SIGKILL and SIGTERM in the middle of
an event, say/subscribe between instances, and reload on SIGHUP from the supervisor."""

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from services.handlers.app import create_app
from tests.common.test_supervisor import shut_down, start_supervisor
from tests.conftest import SECRET, RedisProcess
from tests.handlers.conftest import FAST, PROBE, RpcClient, group_settled, publish, write
from tests.helpers import free_port, run_cli, wait_until

# Starts, says so, then waits (at most 20 s) for the test's go-ahead.
GATED = (
    PROBE
    + """
import time
def handle_event(data):
    r = probe()
    r.rpush("started", os.getpid())
    deadline = time.monotonic() + 20
    while not r.exists("go") and time.monotonic() < deadline:
        time.sleep(0.01)
    r.rpush("done", os.getpid())
"""
)


async def _pids(redis: Redis, key: str) -> list[int]:
    return [int(p) for p in await redis.lrange(key, 0, -1)]


async def test_an_event_whose_replica_was_killed_is_completed_by_another(
    handlers_process: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_job.py", GATED)
    first = await handlers_process(HANDLERS_CLAIM_IDLE_MS="1000")
    second = await handlers_process(HANDLERS_CLAIM_IDLE_MS="1000")
    by_pid = {first.proc.pid: first, second.proc.pid: second}
    await publish(redis, "job", {})

    async def started() -> bool:
        return await redis.llen("started") == 1

    await wait_until(started, what="the handler started", timeout_s=10)
    [victim_pid] = await _pids(redis, "started")
    victim = by_pid.pop(victim_pid)
    victim.kill()  # SIGKILL: no chance to ack or release anything
    [survivor] = by_pid.values()
    await redis.set("go", 1)

    async def done() -> bool:
        return await redis.llen("done") == 1 and await group_settled(redis)

    await wait_until(done, what="the survivor completed the event", timeout_s=15)
    assert await _pids(redis, "started") == [victim_pid, survivor.proc.pid]
    assert await _pids(redis, "done") == [survivor.proc.pid]
    assert await redis.xlen("sb:events:dlq") == 0


async def test_sigterm_finishes_the_event_in_hand_before_exiting(
    handlers_process: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_job.py", GATED)
    service = await handlers_process(HANDLERS_SHUTDOWN_TIMEOUT_S="6")
    await publish(redis, "job", {})

    async def started() -> bool:
        return await redis.llen("started") == 1

    await wait_until(started, what="the handler started")
    service.terminate()
    await asyncio.sleep(0.2)  # let the signal land while the handler is still running
    assert service.proc.poll() is None
    await redis.set("go", 1)
    code = await asyncio.to_thread(service.proc.wait, 10)
    assert code == 0
    assert await _pids(redis, "done") == [service.proc.pid]
    assert await group_settled(redis)  # acked before the process left


async def test_sigterm_releases_what_it_cannot_finish_to_another_replica_at_once(
    handlers_process: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_job.py", GATED)
    leaving = await handlers_process(HANDLERS_SHUTDOWN_TIMEOUT_S="1", HANDLERS_BLOCK_MS="100")
    await publish(redis, "job", {})

    async def started() -> bool:
        return await redis.llen("started") == 1

    await wait_until(started, what="the handler started")
    leaving.terminate()
    assert await asyncio.to_thread(leaving.proc.wait, 10) == 0
    # Claiming waits for an entry idle this long; a released entry is claimed much sooner.
    staying = await handlers_process(HANDLERS_CLAIM_IDLE_MS="60000")
    await redis.set("go", 1)

    async def done() -> bool:
        return staying.proc.pid in await _pids(redis, "done") and await group_settled(redis)

    await wait_until(done, what="the other replica completed the event", timeout_s=10)


async def test_say_reaches_the_other_instances_and_unsubscribe_stops_it(
    handlers_process: Callable[..., Any], redis: Redis, folders: Any, rpc: RpcClient
) -> None:
    _, tasks = folders
    write(
        tasks,
        "task_listen.py",
        PROBE
        + """
import json
from services.handlers.api import subscribe, unsubscribe

def heard(obj):
    probe().rpush("heard", json.dumps({"pid": os.getpid(), "obj": obj}))

async def heard_async(obj):
    probe().rpush("heard-async", os.getpid())

subscribe("ping", heard)
subscribe("ping", heard_async)

def run(request):
    unsubscribe("ping", heard)
    return os.getpid()
""",
    )
    write(
        tasks,
        "task_shout.py",
        "import os\nfrom services.handlers.api import say\n"
        "def run(request):\n    say('ping', request.data)\n    return os.getpid()\n",
    )
    a = await handlers_process()
    b = await handlers_process()
    pids = {a.proc.pid, b.proc.pid}

    shouter = (await rpc.call("shout", {"n": 1}))["result"]

    async def heard() -> bool:
        return await redis.llen("heard") == 1 and await redis.llen("heard-async") == 1

    await wait_until(heard, what="the other instance heard it")
    [message] = [json.loads(m) for m in await redis.lrange("heard", 0, -1)]
    [listener] = pids - {shouter}
    assert message == {"pid": listener, "obj": {"n": 1}}  # not the sender itself
    assert await _pids(redis, "heard-async") == [listener]

    # `listen` unsubscribes `heard` in whichever instance runs it; call it until both did.
    muted: set[int] = set()
    while muted != pids:
        muted.add((await rpc.call("listen"))["result"])
    await rpc.call("shout", {"n": 2})

    async def heard_again() -> bool:
        return await redis.llen("heard-async") == 2

    await wait_until(heard_again, what="the async listener heard the second say")
    assert await redis.llen("heard") == 1  # the unsubscribed listener did not


async def test_the_supervisor_runs_the_service_and_reload_handlers_sends_sighup(
    tmp_path: Path,
    redis: Redis,
    redis_server: RedisProcess,
    folders: Any,
    make_token: Callable[..., str],
) -> None:
    handlers, tasks = folders
    write(handlers, "on_one.py", PROBE + "def handle_event(data):\n    probe().incr('one')\n")
    port = free_port()
    running = start_supervisor(
        tmp_path,
        SWITCHBOARD_SERVICES="handlers",
        REDIS_URL=redis_server.url,
        SECRET_KEY=SECRET,
        HANDLERS_PORT=str(port),
        EVENT_HANDLERS_FOLDER=str(handlers),
        TASKS_FOLDER=str(tasks),
        HANDLERS_WATCH_INTERVAL_S="3600",  # only the signal reloads here
        HANDLERS_BLOCK_MS=FAST["HANDLERS_BLOCK_MS"],
        HANDLERS_TEST_REDIS=redis_server.url,
    )
    headers = {"Authorization": f"Bearer {make_token('operator', scope='admin')}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:

            async def loaded() -> list[str] | None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/handlers") as resp:
                        body = await resp.json()
                except aiohttp.ClientError:
                    return None
                return sorted(h["id"] for h in body["handlers"])

            async def has(ids: list[str]) -> bool:
                return await loaded() == ids

            await wait_until(lambda: has(["on_one"]), what="the service up", timeout_s=20)
            write(
                handlers, "on_two.py", PROBE + "def handle_event(data):\n    probe().incr('two')\n"
            )
            time.sleep(0.3)  # noqa: ASYNC251  # long enough for a watcher; none runs here
            assert await loaded() == ["on_one"]
            result = await asyncio.to_thread(run_cli, running.env, "ctl", "reload-handlers")
            assert result.returncode == 0, result.stderr
            await wait_until(lambda: has(["on_one", "on_two"]), what="reloaded on SIGHUP")
            await publish(redis, "two", {})

            async def ran() -> bool:
                return await redis.get("two") == b"1"

            await wait_until(ran, what="the new handler ran")
    finally:
        await asyncio.to_thread(shut_down, running)


def test_sighup_is_wired_only_in_the_real_process() -> None:
    # In-process apps (tests) must not take the test runner's SIGHUP.
    from services.handlers.settings import HandlersSettings

    settings = HandlersSettings.from_env({"REDIS_URL": "redis://x", "SECRET_KEY": SECRET})
    plain = create_app(settings)
    wired = create_app(settings, reload_on_sighup=True)
    assert len(wired.cleanup_ctx) == len(plain.cleanup_ctx) + 1
    assert signal.SIGHUP  # the signal the supervisor sends (services/common/supervisor.py)
