"""Runs the handlers of one event: each on its own copy, concurrently, each with its timeout and
retries (exponential backoff); a handler out of attempts is dead-lettered. The entry is done (and
acked) once every handler succeeded or was dead-lettered."""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from services.common.errors import BadRequest, MethodNotFound

from .dlq import DeadLetters
from .ledger import Ledger
from .metrics import HandlersMetrics
from .registry import Handler, Registry
from .runner import CallFailed, Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int  # attempts after the first
    backoff_s: float  # wait before the first retry; doubled each time
    backoff_max_s: float
    timeout_s: float  # per attempt, unless the handler sets TIMEOUT

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s))


class EventDispatcher:
    def __init__(
        self,
        current: Callable[[], Registry],
        runner: Runner,
        dlq: DeadLetters,
        policy: RetryPolicy,
        metrics: HandlersMetrics,
        ledger: Ledger,
    ) -> None:
        self._current = current
        self._runner = runner
        self._dlq = dlq
        self._policy = policy
        self._metrics = metrics
        self._ledger = ledger
        self._children: dict[str, _Children] = {}

    async def process(self, entry_id: str, raw: dict[bytes, bytes]) -> bool:
        """Run every handler of the entry's event; True once it may be acked."""
        registry = self._current()
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        handlers = registry.for_event(fields.get("event", ""))
        if not handlers:
            return True
        self._observe_delay(fields.get("ts", ""))
        event = {
            "id": entry_id,
            "event": fields.get("event", ""),
            "source": fields.get("source", ""),
            "channel": fields.get("channel", ""),
            "ts": fields.get("ts", ""),
        }
        data_json = fields.get("data", "null")
        try:
            copies = Copies(data_json)
        except ValueError as exc:
            return await self._dead_letter(fields, entry_id, "*", f"malformed data: {exc}", "", 0)
        if len(handlers) == 1:
            return await self._run(handlers[0], registry.generation, fields, event, copies)
        done = await asyncio.gather(
            *(self._run(h, registry.generation, fields, event, copies) for h in handlers)
        )
        return all(done)

    async def _run(
        self,
        handler: Handler,
        generation: int,
        fields: dict[str, str],
        event: dict[str, str],
        copies: "Copies",
    ) -> bool:
        attempts = self._policy.retries + 1
        for attempt in range(1, attempts + 1):
            failure = await self.attempt(handler, generation, event, copies)
            if failure is None:
                return True
            if attempt < attempts:
                self._metrics.retries.labels(handler.id).inc()
                await asyncio.sleep(self._policy.delay(attempt))
                continue
            return await self._dead_letter(
                fields, event["id"], handler.id, failure.message, failure.trace, attempt
            )
        return True  # unreachable: the loop returns

    async def attempt(
        self, handler: Handler, generation: int, event: dict[str, str], copies: "Copies"
    ) -> CallFailed | None:
        """One attempt; the failure, or None when the handler returned."""
        timeout = handler.timeout_s or self._policy.timeout_s
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self._runner.handler(handler, generation, copies, event, timeout)
            self._ledger.ok(handler.id)
            return None
        except CallFailed as exc:
            outcome = "timeout" if exc.timed_out else "error"
            failure = exc
        except TimeoutError:
            outcome = "timeout"
            failure = CallFailed(f"TimeoutError: timed out after {timeout:g} s", timed_out=True)
        except Exception as exc:  # the per-handler boundary: handler code may raise anything
            outcome = "error"
            failure = CallFailed(f"{type(exc).__name__}: {exc}", _trace(exc))
        finally:
            children = self._children.get(handler.id)
            if children is None:
                children = self._children[handler.id] = _Children(self._metrics, handler.id)
            children.runs[outcome].inc()
            children.duration.observe(time.perf_counter() - started)
        self._ledger.failed(handler.id, failure.message)
        log.warning(
            "handler failed",
            extra={"handler": handler.id, "entry": event["id"], "error": failure.message},
        )
        return failure

    async def _dead_letter(
        self,
        fields: dict[str, str],
        entry_id: str,
        handler_id: str,
        error: str,
        trace: str,
        attempts: int,
    ) -> bool:
        try:
            dlq_id = await self._dlq.add(
                fields,
                kind="event",
                entry=entry_id,
                handler=handler_id,
                error=error,
                trace=trace,
                attempts=attempts,
            )
        except RedisError as exc:
            log.error("dead-letter write failed; event left pending", extra={"error": repr(exc)})
            return False
        self._metrics.failures.labels(handler_id).inc()
        self._ledger.dead_lettered(handler_id)
        log.error(
            "handler dead-lettered",
            extra={"handler": handler_id, "entry": entry_id, "dlq": dlq_id, "error": error},
        )
        return True

    async def retry_dead(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Run a dead-lettered handler once more: on success the entry is removed; on failure
        it is replaced by one with the attempts counted."""
        if entry.get("kind", "event") != "event":
            raise BadRequest("only events are retried (an rpc caller no longer waits)")
        registry = self._current()
        handler = registry.handler(entry.get("handler", ""))
        if handler is None:
            raise MethodNotFound(f"handler {entry.get('handler')!r} is not loaded")
        event = {
            "id": entry.get("entry", ""),
            "event": entry.get("event", ""),
            "source": entry.get("source", ""),
            "channel": entry.get("channel", ""),
            "ts": entry.get("ts", ""),
        }
        try:
            copies = Copies(entry.get("data", "null"))
        except ValueError:
            raise BadRequest("the dead letter's data is not JSON") from None
        failure = await self.attempt(handler, registry.generation, event, copies)
        if failure is None:
            await self._dlq.delete(entry["id"])
            return {"id": entry["id"], "ok": True}
        original: dict[str, str] = {
            k: entry[k] for k in ("event", "data", "source", "channel", "ts") if k in entry
        }
        attempts = int(entry.get("attempts", 0)) + 1
        new_id = await self._dlq.add(
            original,
            kind="event",
            entry=event["id"],
            handler=handler.id,
            error=failure.message,
            trace=failure.trace,
            attempts=attempts,
        )
        await self._dlq.delete(entry["id"])
        return {"id": entry["id"], "ok": False, "error": failure.message, "dlq_id": new_id}

    def _observe_delay(self, ts: str) -> None:
        if ts.isdigit():
            self._metrics.delay.observe(max(0.0, time.time() - int(ts) / 1000))


class _Children:
    """A handler's labelled metrics, looked up once (labels() costs more than inc())."""

    __slots__ = ("duration", "runs")

    def __init__(self, metrics: HandlersMetrics, handler_id: str) -> None:
        self.runs = {o: metrics.runs.labels(handler_id, o) for o in ("ok", "error", "timeout")}
        self.duration = metrics.duration.labels(handler_id)


class Copies:
    """The event's data for each handler and attempt, each its own copy (a handler may mutate
    it). Parsing the JSON again is the cheapest deep copy; the parse that validated the entry
    is handed to the first taker."""

    __slots__ = ("_first", "json")

    def __init__(self, data_json: str) -> None:
        self.json = data_json
        self._first: Any = json.loads(data_json)  # ValueError: not JSON

    def take(self) -> Any:
        first, self._first = self._first, _TAKEN
        return json.loads(self.json) if first is _TAKEN else first


_TAKEN: Any = object()


def _trace(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
