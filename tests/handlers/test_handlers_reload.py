"""Reload without restart: the watcher picks up a new, a changed and a broken file; the broken
one is reported and skipped while the others keep running."""

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from tests.handlers.conftest import PROBE, group_settled, publish, write
from tests.helpers import wait_until


def recorder(tag: str) -> str:
    return PROBE + f"def handle_event(data):\n    probe().rpush('ran', '{tag}:' + data['n'])\n"


async def test_a_new_a_changed_and_a_broken_file_are_picked_up_without_a_restart(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, tasks = folders
    write(handlers, "on_a.py", recorder("a1"))
    write(handlers, "on_b.py", recorder("b1"))
    service = await start_handlers()

    async def generation() -> int:
        return int((await service.api("GET", "/handlers"))[1]["generation"])

    async def send_all(n: str) -> None:
        for event in ("a", "b", "c"):
            await publish(redis, event, {"n": n})
        await wait_until(lambda: group_settled(redis), what=f"round {n} settled")

    await send_all("1")
    assert sorted(await redis.lrange("ran", 0, -1)) == [b"a1:1", b"b1:1"]

    before = await generation()
    write(handlers, "on_c.py", recorder("c1"))  # new
    write(handlers, "on_a.py", recorder("a2"))  # changed (same size, same second)
    write(handlers, "on_b.py", "def handle_event(data):\n    return (\n")  # broken
    write(tasks, "task_echo.py", "def run(request):\n    return request.data\n")

    async def reloaded() -> bool:
        return await generation() > before

    await wait_until(reloaded, what="the folder reloaded")
    await redis.delete("ran")
    await send_all("2")
    assert sorted(await redis.lrange("ran", 0, -1)) == [b"a2:2", b"c1:2"]

    status, body = await service.api("GET", "/handlers")
    assert status == 200
    assert sorted(h["id"] for h in body["handlers"]) == ["on_a", "on_c"]
    assert [t["name"] for t in body["tasks"]] == ["echo"]
    [error] = body["errors"]
    assert error["file"].endswith("on_b.py") and "SyntaxError" in error["error"]
    assert "line 2" in error["error"]
    async with service.http.session.get(service.http.make_url("/metrics")) as resp:
        assert "switchboard_handlers_load_errors 1.0" in await resp.text()

    # Fixed: it runs again and the error is gone.
    before = await generation()
    write(handlers, "on_b.py", recorder("b3"))
    await wait_until(reloaded, what="the fixed file reloaded")
    await redis.delete("ran")
    await send_all("3")
    assert sorted(await redis.lrange("ran", 0, -1)) == [b"a2:3", b"b3:3", b"c1:3"]
    assert (await service.api("GET", "/handlers"))[1]["errors"] == []


async def test_a_broken_module_of_the_zou_package_skips_the_package_not_the_files(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    write(handlers, "event_handlers/__init__.py", "from . import mod\nevent_map = {'x': mod}\n")
    write(handlers, "event_handlers/mod.py", "raise ImportError('needs zou.app')\n")
    write(handlers, "on_y.py", recorder("y"))
    write(handlers, "on_z.py", "def no_handle_event(data):\n    pass\n")
    service = await start_handlers()
    await publish(redis, "y", {"n": "1"})
    await wait_until(lambda: group_settled(redis), what="settled")
    assert await redis.lrange("ran", 0, -1) == [b"y:1"]
    _, body = await service.api("GET", "/handlers")
    assert [h["id"] for h in body["handlers"]] == ["on_y"]
    errors = {e["file"].rsplit("/", 2)[-1]: e["error"] for e in body["errors"]}
    assert errors == {
        "__init__.py": "ImportError: needs zou.app",
        "on_z.py": "TypeError: on_z has no handle_event(data)",
    }


async def test_a_changed_module_of_the_zou_package_is_reloaded(
    start_handlers: Callable[..., Any], redis: Redis, folders: Any
) -> None:
    handlers, _ = folders
    # The folder is the package (Zou's documented layout): its modules import each other by
    # plain name, since the folder is on sys.path as in Zou.
    write(handlers, "__init__.py", "from . import mod\nevent_map = {'x': mod}\n")
    write(handlers, "helper.py", "TAG = 'v1'\n")
    write(
        handlers,
        "mod.py",
        PROBE
        + "import helper\n"
        + "def handle_event(data):\n    probe().rpush('ran', helper.TAG)\n",
    )
    service = await start_handlers()
    await publish(redis, "x", {})
    await wait_until(lambda: group_settled(redis), what="settled")
    before = (await service.api("GET", "/handlers"))[1]["generation"]
    write(handlers, "helper.py", "TAG = 'v2'\n")

    async def reloaded() -> bool:
        return bool((await service.api("GET", "/handlers"))[1]["generation"] > before)

    await wait_until(reloaded, what="the package reloaded")
    await publish(redis, "x", {})
    await wait_until(lambda: group_settled(redis), what="settled again")
    assert await redis.lrange("ran", 0, -1) == [b"v1", b"v2"]
