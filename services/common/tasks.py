"""Background jobs that must keep running: restarted with capped backoff, cancelled on cleanup."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


async def run_forever(
    name: str,
    job: Callable[[], Awaitable[None]],
    *,
    initial_backoff_s: float = 0.1,
    max_backoff_s: float = 5.0,
) -> None:
    """Keep `job` running until cancelled, restarting it with capped exponential backoff."""
    backoff = initial_backoff_s
    while True:
        started = time.monotonic()
        try:
            await job()
            log.warning("task returned; restarting", extra={"task": name})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "task failed; restarting",
                extra={"task": name, "backoff_s": backoff, "error": repr(exc)},
            )
        if time.monotonic() - started > max_backoff_s:
            backoff = initial_backoff_s  # it ran healthily for a while; start over
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)


_background: set["asyncio.Task[Any]"] = set()


def spawn(coro: Awaitable[Any]) -> None:
    """Run `coro` in the background, holding a reference until it ends (the loop keeps only a
    weak one, so an unreferenced task can vanish mid-run)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def cancel_until_done(tasks: Iterable["asyncio.Future[Any]"]) -> None:
    """Cancel, and cancel again until done: redis-py's asyncio client can swallow a cancellation
    that lands inside a command (redis/redis-py#2028); the loop then runs on and a single
    cancel-and-wait never returns."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


def supervised(
    name: str, job: Callable[[web.Application], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry that runs `job(app)` under run_forever for the app's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_forever(name, lambda: job(app)), name=name)
        try:
            yield
        finally:
            await cancel_until_done([task])
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx
