"""Runs one handler or task call: async on the loop, sync in the bounded thread pool, or (with
`HANDLERS_ISOLATION=process`) in an isolation worker; always under a timeout.

A sync call that times out in a thread cannot be stopped (Python has no way to kill a thread):
the caller stops waiting and the thread keeps its pool slot until the function returns. That is
what process isolation is for.
"""

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from .procpool import ProcessPool, WorkerDied, WorkerTimeout
from .procworker import WorkerCall
from .registry import Handler


class Copies(Protocol):
    """The event's data, a fresh copy for every taker (see dispatch.Copies)."""

    json: str

    def take(self) -> Any: ...


class CallFailed(Exception):
    """A handler raised, timed out or took its worker down; `trace` is the traceback text."""

    def __init__(self, message: str, trace: str = "", *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.trace = trace
        self.timed_out = timed_out


class Runner:
    def __init__(
        self, threads: ThreadPoolExecutor, pool: ProcessPool | None, handlers_folder: Path
    ) -> None:
        self.threads = threads
        self.pool = pool
        self._folder = str(handlers_folder.resolve())

    async def handler(
        self,
        handler: Handler,
        generation: int,
        copies: "Copies",
        event: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        """Run `handler` on its own copy of the event; raise CallFailed when it fails."""
        if self.pool is not None:
            call = WorkerCall(self._folder, generation, handler.id, copies.json, dict(event))
            try:
                status, message, trace = await self.pool.run(call, timeout_s)
            except WorkerTimeout as exc:
                raise CallFailed(f"TimeoutError: {exc}", timed_out=True) from None
            except WorkerDied as exc:
                raise CallFailed(f"WorkerDied: {exc}") from None
            if status != "ok":
                raise CallFailed(message, trace)
            return
        data = copies.take()
        args = (data, dict(event)) if handler.wants_event else (data,)
        await self.call(handler.fn, handler.is_async, args, timeout_s)

    async def call(
        self, fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...], timeout_s: float
    ) -> Any:
        """Call `fn(*args)` with a timeout; TimeoutError when it ran out."""
        if is_async:
            async with asyncio.timeout(timeout_s):
                return await fn(*args)
        future = asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)
        async with asyncio.timeout(timeout_s):
            return await future
