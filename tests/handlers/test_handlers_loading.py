"""The three handler forms: Zou's package (both folder layouts), one file per event, patterns."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.handlers.conftest import FIXTURES, PROBE, group_settled, probe_list, publish, write
from tests.helpers import wait_until


@pytest.mark.parametrize("layout", ["folder-is-the-package", "folder-holds-event_handlers"])
async def test_an_unmodified_zou_package_runs_for_its_events(
    start_handlers: Callable[..., Any], redis: Redis, tmp_path: Path, layout: str
) -> None:
    root = tmp_path / "zou"
    shutil.copytree(FIXTURES / "zou", root)
    folder = root / "event_handlers" if layout == "folder-is-the-package" else root
    service = await start_handlers(EVENT_HANDLERS_FOLDER=str(folder))

    await publish(redis, "task:start", {"task_id": "t1", "project_id": "p1"})
    await publish(redis, "task:to-review", {"task_id": "t2"})
    await publish(redis, "task:new", {"task_id": "t3"})  # nobody handles it

    async def ran() -> bool:
        return await redis.llen("zou:wip") == 1 and await redis.llen("zou:review") == 1

    await wait_until(ran, what="both Zou handlers ran")
    assert await probe_list(redis, "zou:wip") == [
        {"status": "wip", "task_id": "t1", "project_id": "p1"}
    ]
    assert await probe_list(redis, "zou:review") == [
        {"status": "pndng", "task_id": "t2", "mutated": True}
    ]
    await wait_until(lambda: group_settled(redis), what="every event acked")

    status, body = await service.api("GET", "/handlers")
    assert status == 200
    assert [(h["id"], h["kind"], h["runs"]) for h in body["handlers"]] == [
        ("task:start/shotgun_wip", "package", 1),
        ("task:to-review/shotgun_pending_review", "package", 1),
    ]
    assert body["errors"] == [] and body["counts"]["handlers"] == 2


async def test_file_per_event_and_patterns_each_get_their_own_copy(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(
        handlers,
        "on_task_new.py",
        PROBE
        + """
        def handle_event(data):
            data["touched_by"] = "file"
            probe().rpush("file", repr(sorted(data.items())))
        """.replace("\n        ", "\n"),
    )
    write(
        handlers,
        "on_preview_file_add_file.py",  # preview-file:add-file
        PROBE + "def handle_event(data):\n    probe().rpush('dash', data['n'])\n",
    )
    write(
        handlers,
        "event_handlers/__init__.py",
        """
        from . import every, tasks

        event_map = {"task:*": tasks, "*": every}
        """,
    )
    write(
        handlers,
        "event_handlers/tasks.py",
        PROBE
        + """
async def handle_event(data, event):
    data["touched_by"] = "pattern"
    probe().rpush("pattern", event["event"] + " " + repr(sorted(data.items())))
""",
    )
    write(
        handlers,
        "event_handlers/every.py",
        PROBE + "def handle_event(data):\n    probe().rpush('every', repr(sorted(data.items())))\n",
    )
    service = await start_handlers()

    await publish(redis, "task:new", {"n": 1})
    await publish(redis, "preview-file:add-file", {"n": 2})
    await publish(redis, "Task:Update", {"n": 3})  # names match regardless of case, as in Zou

    async def settled() -> bool:
        return await redis.llen("every") == 3 and await group_settled(redis)

    await wait_until(settled, what="every event handled")
    # Each handler got the event as published, whatever the others did to their copy.
    assert [v.decode() for v in await redis.lrange("file", 0, -1)] == [
        "[('n', 1), ('touched_by', 'file')]"
    ]
    assert [v.decode() for v in await redis.lrange("dash", 0, -1)] == ["2"]
    assert sorted(v.decode() for v in await redis.lrange("pattern", 0, -1)) == [
        "Task:Update [('n', 3), ('touched_by', 'pattern')]",
        "task:new [('n', 1), ('touched_by', 'pattern')]",
    ]
    assert sorted(v.decode() for v in await redis.lrange("every", 0, -1)) == [
        "[('n', 1)]",
        "[('n', 2)]",
        "[('n', 3)]",
    ]
    status, body = await service.api("GET", "/handlers")
    assert status == 200
    assert {h["id"]: (h["event"], h["kind"], h["async"]) for h in body["handlers"]} == {
        "task:*/tasks": ("task:*", "package", True),
        "*/every": ("*", "package", False),
        "on_task_new": ("task_new", "file", False),
        "on_preview_file_add_file": ("preview_file_add_file", "file", False),
    }


async def test_the_admin_api_needs_an_admin_token(
    start_handlers: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    service = await start_handlers()
    for path in ("/handlers", "/dlq"):
        status, body = await service.api("GET", path, scope=None)
        assert (status, body["error"]["code"]) == (401, 101)
        status, body = await service.api("GET", path, scope="publish")
        assert (status, body["error"]["code"]) == (403, 103)
    status, body = await service.api("POST", "/dlq/1-0/retry", scope="publish")
    assert (status, body["error"]["code"]) == (403, 103)
    status, body = await service.api("DELETE", "/dlq/not-an-id")
    assert (status, body["error"]["code"]) == (400, 107)
    status, body = await service.api("DELETE", "/dlq/1-0")
    assert (status, body["error"]["code"]) == (404, 104)


async def test_health_readiness_and_metrics(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "on_ping.py", "def handle_event(data):\n    pass\n")
    service = await start_handlers()
    await publish(redis, "ping", {})
    await wait_until(lambda: group_settled(redis), what="settled")
    session, url = service.http.session, service.http.make_url
    async with session.get(url("/healthz")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    async with session.get(url("/readyz")) as resp:
        body = await resp.json()
        assert resp.status == 200
        assert body["checks"] == {"redis": True, "events": True, "rpc": True, "say": True}

    async def metrics_show_it() -> bool:
        async with session.get(url("/metrics")) as resp:
            text = await resp.text()
        return (
            'switchboard_handlers_runs_total{handler="on_ping",outcome="ok"} 1.0' in text
            and 'switchboard_handlers_duration_seconds_count{handler="on_ping"} 1.0' in text
            and 'switchboard_handlers_consumer_lag{stream="events"} 0.0' in text
            and "switchboard_handlers_event_delay_seconds_count 1.0" in text
        )

    await wait_until(metrics_show_it, what="the metrics")
