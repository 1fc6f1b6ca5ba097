"""Serves rpc calls from `sb:rpc` (contract: services/common/rpc.py): runs the task named by
`method` and PUBLISHes the result or a typed error on the call's reply channel.

A call past its deadline is dropped unanswered (nobody waits any more); an unknown task is 104;
a task whose `requires(...)` the caller's claims do not meet is 103 and does not run; a task
that outlives its timeout is 114; one that raises is 115 with its message (a task may raise a
`ServiceError` to choose the code itself). A malformed entry is dead-lettered.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.common.errors import (
    MethodNotFound,
    PermissionDenied,
    RpcTimeout,
    ServiceError,
    TaskFailed,
)
from services.common.rpc import RpcCall, reply_error, reply_ok

from .api import Request
from .dlq import DeadLetters
from .ledger import Ledger
from .metrics import HandlersMetrics
from .registry import Registry
from .runner import Runner

log = logging.getLogger(__name__)


class ReplyWriter:
    """Sends replies and their acks together: whatever was answered during one loop turn goes
    in one pipeline (PUBLISH each reply, then one XACK), so a call costs one round trip to Redis
    besides its read, and a burst of calls far fewer."""

    def __init__(self, redis: Redis, stream: str, group: str) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._queued: list[tuple[str, str, str]] = []
        self._flusher: asyncio.Task[None] | None = None

    def send(self, channel: str, body: str, entry_id: str) -> None:
        self._queued.append((channel, body, entry_id))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name="rpc-replies"
            )

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for channel, body, _ in batch:
                            pipe.publish(channel, body)
                        pipe.xack(self._stream, self._group, *[entry for _, _, entry in batch])
                        await pipe.execute()
                except RedisError as exc:
                    # Unacked calls are claimed again later; past their deadline they are dropped.
                    log.warning("rpc replies lost", extra={"count": len(batch), "error": repr(exc)})
        finally:
            self._flusher = None

    async def drain(self) -> None:
        while self._flusher is not None:
            await asyncio.wait([self._flusher])


class RpcServer:
    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        current: Callable[[], Registry],
        runner: Runner,
        dlq: DeadLetters,
        default_timeout_s: float,
        metrics: HandlersMetrics,
        ledger: Ledger,
    ) -> None:
        self._redis = redis
        self._current = current
        self._runner = runner
        self._dlq = dlq
        self._timeout_s = default_timeout_s
        self._metrics = metrics
        self._ledger = ledger
        self._replies = ReplyWriter(redis, stream, group)

    async def drain(self) -> None:
        """Wait for the replies (and acks) still queued."""
        await self._replies.drain()

    async def process(self, entry_id: str, fields: dict[bytes, bytes]) -> bool:
        raw = fields.get(b"c", b"")
        try:
            call = _checked(RpcCall.decode(raw))
        except ValueError as exc:
            try:
                await self._dlq.add(
                    {"c": raw.decode(errors="replace")},
                    kind="rpc",
                    entry=entry_id,
                    handler="",
                    error=str(exc),
                    trace="",
                    attempts=0,
                )
            except RedisError:
                return False
            return True
        remaining_s = call.deadline / 1000 - time.time()
        if remaining_s <= 0:
            self._metrics.tasks.labels(call.method, "expired").inc()
            return True
        started = time.perf_counter()
        try:
            result = await self._call(call, remaining_s)
            try:
                body = reply_ok(call.req, result)
            except (TypeError, ValueError) as exc:
                self._ledger.failed(call.method, f"result is not JSON: {exc}")
                raise TaskFailed(f"result is not JSON: {exc}") from None
            self._ledger.ok(call.method)
            outcome = "ok"
        except ServiceError as exc:
            body = reply_error(call.req, exc)
            outcome = exc.code.name.lower()
        finally:
            self._metrics.task_duration.labels(call.method).observe(time.perf_counter() - started)
        self._metrics.tasks.labels(call.method, outcome).inc()
        self._replies.send(call.reply, body, entry_id)
        return False  # the reply writer acks it, in the same round trip as the reply

    async def _call(self, call: RpcCall, remaining_s: float) -> object:
        task = self._current().tasks.get(call.method)
        if task is None:
            raise MethodNotFound(f"unknown method {call.method!r}")
        if task.requirement is not None and not task.requirement.allows(call.claims or {}):
            raise PermissionDenied(f"method {call.method!r} is not allowed for this token")
        request = Request(
            method=call.method,
            data=call.data,
            user=call.user,
            client=call.client,
            room=call.room,
            claims=dict(call.claims or {}),
        )
        timeout_s = min(task.timeout_s or self._timeout_s, remaining_s)
        try:
            result = await self._runner.call(task.fn, task.is_async, (request,), timeout_s)
        except ServiceError as exc:
            self._ledger.failed(task.name, exc.message)
            raise
        except TimeoutError:
            self._ledger.failed(task.name, "timed out")
            raise RpcTimeout(f"method {call.method!r} timed out after {timeout_s:g} s") from None
        except Exception as exc:  # the per-task boundary: task code may raise anything
            message = str(exc) or type(exc).__name__
            log.warning(
                "task failed", extra={"method": call.method, "error": repr(exc)}, exc_info=True
            )
            self._ledger.failed(task.name, f"{type(exc).__name__}: {exc}")
            raise TaskFailed(message) from None
        return result


def _checked(call: RpcCall) -> RpcCall:
    """The fields this service relies on have the contract's types (ValueError otherwise)."""
    texts = (call.req, call.reply, call.method, call.user, call.client)
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("malformed rpc call: req, reply, method, user, client must be strings")
    if isinstance(call.deadline, bool) or not isinstance(call.deadline, int | float):
        raise ValueError("malformed rpc call: deadline must be a number")
    if not isinstance(call.claims, dict) or not (call.room is None or isinstance(call.room, str)):
        raise ValueError("malformed rpc call: claims must be an object, room a string or null")
    return call
