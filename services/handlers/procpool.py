"""A small pool of worker processes that can kill and replace one worker.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot cancel a call that is running, so a
hung handler holds its worker for ever; and a worker that dies (os._exit, a segfault) breaks the
whole executor (`BrokenProcessPool`), failing every call in flight. Here each worker has its own
pipe and serves one call at a time; a call that times out, or whose worker's pipe hits EOF, gets
that worker killed (SIGKILL) and a fresh one spawned in its place, and nothing else notices.

Workers are started with the `spawn` method: forking a process that runs an event loop and
threads copies their locks in whatever state they were.
"""

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from .procworker import Reply, WorkerCall, WorkerInit, worker_main

log = logging.getLogger(__name__)


class WorkerTimeout(Exception):
    """The call ran past its timeout; its worker was killed."""


class WorkerDied(Exception):
    """The worker process exited (crash, os._exit, signal) during the call."""


class _Worker:
    def __init__(self, init: WorkerInit) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.conn: Connection = parent
        self.proc: BaseProcess = ctx.Process(
            target=worker_main, args=(child, init), name="handlers-worker", daemon=True
        )
        self.proc.start()
        child.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.conn.close()


class ProcessPool:
    def __init__(
        self,
        size: int,
        init: WorkerInit,
        *,
        on_replace: Callable[[str], None] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self._size = size
        self._init = init
        self._start_timeout_s = start_timeout_s
        self._on_replace = on_replace or (lambda reason: None)
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._reaping: set[asyncio.Task[None]] = set()

    @property
    def size(self) -> int:
        return self._size

    def start(self) -> None:
        for _ in range(self._size):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self._init)
        self._all.add(worker)
        self._idle.put_nowait(worker)

    async def run(self, call: WorkerCall, timeout_s: float) -> Reply:
        """Run one call in an idle worker; raise WorkerTimeout or WorkerDied."""
        worker = await self._idle.get()
        healthy = False
        try:
            worker.conn.send(call)
            # The call's timeout counts from the handler's start: a worker just spawned (or
            # loading a reloaded folder) gets its own, longer allowance.
            try:
                async with asyncio.timeout(self._start_timeout_s):
                    reply = await self._receive(worker)
            except TimeoutError:
                raise WorkerTimeout(
                    f"worker did not start the handler within {self._start_timeout_s:g} s"
                ) from None
            if reply[0] == "started":
                try:
                    async with asyncio.timeout(timeout_s):
                        reply = await self._receive(worker)
                except TimeoutError:
                    raise WorkerTimeout(f"timed out after {timeout_s:g} s; worker killed") from None
            healthy = True
            return reply
        except (EOFError, OSError):
            code = await asyncio.to_thread(self._exit_code, worker)
            raise WorkerDied(f"worker process died (exit code {code})") from None
        finally:
            if healthy:
                self._idle.put_nowait(worker)
            else:
                # Timed out, died, or the caller was cancelled mid-call: its state is unknown.
                self._replace(worker)

    async def _receive(self, worker: _Worker) -> Reply:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Reply] = loop.create_future()
        fd = worker.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if done.done():
                return
            try:
                done.set_result(worker.conn.recv())
            except Exception as exc:  # EOF/OSError: the worker died; the caller classifies it
                done.set_exception(exc)

        loop.add_reader(fd, readable)
        try:
            return await done
        finally:
            loop.remove_reader(fd)

    @staticmethod
    def _exit_code(worker: _Worker) -> int | None:
        worker.proc.join(timeout=2)
        return worker.proc.exitcode

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._all.discard(worker)
        reap = asyncio.get_running_loop().create_task(
            asyncio.to_thread(worker.proc.join, 5), name="reap-worker"
        )
        self._reaping.add(reap)
        reap.add_done_callback(self._reaping.discard)
        log.warning("isolation worker replaced", extra={"pid": worker.proc.pid})
        self._on_replace("replaced")
        self._add()

    async def close(self) -> None:
        for worker in list(self._all):
            worker.kill()
        for worker in list(self._all):
            await asyncio.to_thread(worker.proc.join, 5)
        self._all.clear()
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
