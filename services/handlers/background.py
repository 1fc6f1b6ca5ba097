"""Background loops for this service, stopped reliably.

`services.common.tasks.supervised` cancels its task once and waits: redis-py's asyncio client can
swallow a cancellation that lands inside a command (redis/redis-py#2028), and the loop then runs
on and the wait never ends. Here the cancellation is repeated until the task is really done.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from services.common.tasks import run_forever


async def cancel_until_done(tasks: Iterable["asyncio.Future[Any]"]) -> None:
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
