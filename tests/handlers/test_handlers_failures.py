"""Failures: retries with backoff, the dead-letter stream and its REST API, timeouts, and
handlers that crash or hang their isolation worker."""

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from tests.handlers.conftest import PROBE, group_settled, publish, write
from tests.helpers import wait_until

FLAKY = (
    PROBE
    + """
def handle_event(data):
    attempt = probe().incr("attempts")
    raise RuntimeError(f"boom {attempt} for {data['n']}")
"""
)
HEALED = PROBE + "def handle_event(data):\n    probe().rpush('healed', data['n'])\n"


async def test_a_failing_handler_is_retried_then_dead_lettered_then_retried_from_the_dlq(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_order_paid.py", FLAKY)
    write(handlers, "on_order_any.py", PROBE + "def handle_event(data):\n    probe().incr('ok')\n")
    service = await start_handlers(HANDLERS_RETRIES="2")
    entry = await publish(redis, "order:paid", {"n": 7})
    await publish(redis, "order:any", {"n": 8})

    await wait_until(lambda: group_settled(redis), what="both events settled")
    assert await redis.get("attempts") == b"3"  # the first attempt and two retries
    assert await redis.get("ok") == b"1"
    status, body = await service.api("GET", "/dlq")
    assert status == 200 and body["total"] == 1
    [dead] = body["entries"]
    assert dead["handler"] == "on_order_paid" and dead["kind"] == "event"
    assert (dead["event"], json.loads(dead["data"]), dead["entry"]) == (
        "order:paid",
        {"n": 7},
        entry,
    )
    assert dead["attempts"] == 3 and dead["error"] == "RuntimeError: boom 3 for 7"
    assert 'raise RuntimeError(f"boom {attempt}' in dead["traceback"]
    assert (dead["source"], dead["channel"]) == ("api", "news")

    status, body = await service.api("GET", "/handlers")
    paid = next(h for h in body["handlers"] if h["id"] == "on_order_paid")
    assert (paid["runs"], paid["failures"], paid["dead_lettered"]) == (3, 3, 1)
    assert body["last_error"]["name"] == "on_order_paid"
    metrics = await _metrics(service)
    assert 'switchboard_handlers_retries_total{handler="on_order_paid"} 2.0' in metrics
    assert 'switchboard_handlers_dead_lettered_total{handler="on_order_paid"} 1.0' in metrics
    await wait_until(
        lambda: _has(service, "switchboard_handlers_dlq_size 1.0"), what="the DLQ size metric"
    )

    # Still broken: the retry fails again and the entry is replaced, its attempts counted.
    status, again = await service.api("POST", f"/dlq/{dead['id']}/retry")
    assert status == 200 and again["ok"] is False and again["error"] == "RuntimeError: boom 4 for 7"
    status, body = await service.api("GET", "/dlq")
    [replaced] = body["entries"]
    assert replaced["id"] == again["dlq_id"] and replaced["attempts"] == 4

    # Fixed (the watcher reloads it), the retry runs the handler once and clears the entry.
    generation = (await service.api("GET", "/handlers"))[1]["generation"]
    write(handlers, "on_order_paid.py", HEALED)

    async def reloaded() -> bool:
        return (await service.api("GET", "/handlers"))[1]["generation"] > generation

    await wait_until(reloaded, what="the fixed file reloaded")
    status, done = await service.api("POST", f"/dlq/{replaced['id']}/retry")
    assert (status, done) == (200, {"id": replaced["id"], "ok": True})
    assert await redis.lrange("healed", 0, -1) == [b"7"]
    assert (await service.api("GET", "/dlq"))[1] == {"entries": [], "total": 0}
    status, body = await service.api("POST", f"/dlq/{replaced['id']}/retry")
    assert (status, body["error"]["code"]) == (404, 104)


async def test_dead_letters_are_listed_in_pages_and_deleted(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_order_paid.py", FLAKY)
    service = await start_handlers(HANDLERS_RETRIES="0")
    for n in range(3):
        await publish(redis, "order:paid", {"n": n})
    await wait_until(lambda: group_settled(redis), what="events settled")
    status, first = await service.api("GET", "/dlq?limit=2")
    assert status == 200 and first["total"] == 3 and len(first["entries"]) == 2
    status, rest = await service.api("GET", f"/dlq?limit=2&after={first['entries'][-1]['id']}")
    assert len(rest["entries"]) == 1
    pages = [json.loads(e["data"])["n"] for e in first["entries"] + rest["entries"]]
    assert sorted(pages) == [0, 1, 2]  # events run concurrently: dead letters in any order
    status, body = await service.api("DELETE", f"/dlq/{first['entries'][0]['id']}")
    assert (status, body) == (200, {"id": first["entries"][0]["id"], "deleted": True})
    status, left = await service.api("GET", "/dlq")
    assert [json.loads(e["data"])["n"] for e in left["entries"]] == pages[1:]
    status, body = await service.api("GET", "/dlq?limit=0")
    assert (status, body["error"]["code"]) == (400, 107)


async def test_a_hung_handler_is_timed_out_and_the_others_keep_running(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(
        handlers,
        "on_slow_sync.py",
        PROBE
        + "import time\nTIMEOUT = 0.2\n"
        + "def handle_event(data):\n    probe().incr('sync-started')\n    time.sleep(1)\n",
    )
    write(
        handlers,
        "on_slow_async.py",
        PROBE
        + "import asyncio\n"
        + "async def handle_event(data):\n    probe().incr('async-started')\n"
        + "    await asyncio.sleep(3600)\n",
    )
    write(handlers, "on_fast.py", PROBE + "def handle_event(data):\n    probe().incr('fast')\n")
    service = await start_handlers(HANDLERS_RETRIES="1", HANDLERS_TIMEOUT_S="0.3")
    await publish(redis, "slow:sync", {})
    await publish(redis, "slow:async", {})
    await publish(redis, "fast", {})
    await wait_until(lambda: group_settled(redis), what="events settled", timeout_s=10)
    assert await redis.get("fast") == b"1"
    assert (await redis.get("sync-started"), await redis.get("async-started")) == (b"2", b"2")
    _, body = await service.api("GET", "/dlq")
    errors = {e["handler"]: e["error"] for e in body["entries"]}
    assert errors == {
        "on_slow_sync": "TimeoutError: timed out after 0.2 s",  # the module's TIMEOUT
        "on_slow_async": "TimeoutError: timed out after 0.3 s",
    }
    assert 'outcome="timeout"' in await _metrics(service)


async def test_a_handler_that_crashes_or_hangs_its_worker_process_is_killed_and_reported(
    handlers_process: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(
        handlers,
        "on_crash.py",
        PROBE
        + "import os\ndef handle_event(data):\n    probe().incr('crashes')\n    os._exit(3)\n",
    )
    write(
        handlers,
        "on_segv.py",
        "import ctypes\ndef handle_event(data):\n    ctypes.string_at(0)  # SIGSEGV\n",
    )
    write(
        handlers,
        "on_hang.py",
        PROBE
        + "import time\ndef handle_event(data):\n    probe().rpush('hang-pids', os.getpid())\n"
        + "    time.sleep(3600)\n",
    )
    write(
        handlers,
        "on_fine.py",
        PROBE
        + "from services.handlers.api import say\n"
        + "def handle_event(data):\n    probe().rpush('fine', os.getpid())\n"
        + "    say('fine', {'pid': os.getpid()})\n",
    )
    listener = redis.pubsub()
    await listener.subscribe("sb:say")
    service = await handlers_process(
        HANDLERS_ISOLATION="process",
        HANDLERS_PROCESSES="2",
        HANDLERS_RETRIES="1",
        HANDLERS_TIMEOUT_S="0.5",
    )
    await publish(redis, "crash", {})
    await publish(redis, "segv", {})
    await publish(redis, "hang", {})
    await wait_until(lambda: group_settled(redis), what="events settled", timeout_s=20)
    await publish(redis, "fine", {})
    await wait_until(lambda: group_settled(redis), what="the next event settled", timeout_s=20)

    assert await redis.get("crashes") == b"2"
    [fine_pid] = [int(p) for p in await redis.lrange("fine", 0, -1)]
    assert fine_pid != service.proc.pid  # it ran in a worker, and said so to the cluster
    said = None
    async with asyncio.timeout(5):
        while said is None:
            said = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
    await listener.aclose()
    assert json.loads(said["data"]) == {
        "event": "fine",
        "source": f"{socket.gethostname()}:{service.port}",
        "data": {"pid": fine_pid},
    }
    hung = [int(p) for p in await redis.lrange("hang-pids", 0, -1)]
    assert len(hung) == 2 and service.proc.pid not in hung
    for pid in hung:  # killed, not left running
        await wait_until(lambda pid=pid: not _alive(pid), what=f"worker {pid} gone")
    dead = {e[1][b"handler"].decode(): e[1] for e in await redis.xrange("sb:events:dlq")}
    assert dead[b"on_crash".decode()][b"error"] == b"WorkerDied: worker process died (exit code 3)"
    assert dead["on_hang"][b"error"] == b"TimeoutError: timed out after 0.5 s; worker killed"
    assert dead["on_segv"][b"error"] == b"WorkerDied: worker process died (exit code -11)"
    async with aiohttp.ClientSession() as session:
        async with session.get(service.url("/healthz")) as resp:
            assert resp.status == 200
        async with session.get(service.url("/metrics")) as resp:
            assert "switchboard_handlers_workers_replaced_total 6.0" in await resp.text()
    assert service.proc.poll() is None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that its parent has not reaped yet is as good as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


async def _metrics(service: Any) -> str:
    async with service.http.session.get(service.http.make_url("/metrics")) as resp:
        return str(await resp.text())


async def _has(service: Any, line: str) -> bool:
    return line in await _metrics(service)


async def test_an_event_whose_data_is_not_json_is_dead_lettered_at_once(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_x.py", PROBE + "def handle_event(data):\n    probe().incr('ran')\n")
    service = await start_handlers()
    await redis.xadd("sb:events", {"event": "x", "data": "{oops", "source": "api", "ts": "1"})
    await publish(redis, "x", {})
    await wait_until(lambda: group_settled(redis), what="settled")
    assert await redis.get("ran") == b"1"
    _, body = await service.api("GET", "/dlq")
    [dead] = body["entries"]
    assert (dead["handler"], dead["data"], dead["attempts"]) == ("*", "{oops", 0)
    assert dead["error"].startswith("malformed data: ")
