"""One consumer of a stream in a consumer group, with many entries in flight.

Each entry read becomes its own task (up to `concurrency` at once), so a slow or retrying entry
never holds up the others; it is acked once its task returns True (acks are sent together, once
per loop turn). While an entry is in flight its idle time is reset now and then (XCLAIM JUSTID),
so that other replicas XAUTOCLAIM only the entries of a consumer that died; a replica restarted
under the same consumer name first re-reads its own pending entries. At least once: an entry
runs again if its consumer died before acking it.

`stop()` takes no new entry, waits for those in hand, and releases what is still running when
time is up (their idle time is set high, so a live replica claims them at once).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import StreamIdT

from services.common.groups import ensure_group, group_backlog, read_entries
from services.common.tasks import cancel_until_done

log = logging.getLogger(__name__)

# What a released entry's idle time is set to: past any replica's claim threshold.
RELEASED_IDLE_MS = 365 * 24 * 3600 * 1000

# True: the consumer acks the entry. False: it does not (the entry stays pending and is claimed
# again later, unless the processor acked it itself, as the rpc reply writer does).
Process = Callable[[str, dict[bytes, bytes]], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    stream: str
    group: str
    consumer: str
    batch: int
    block_ms: int
    claim_idle_ms: int
    concurrency: int


class StreamConsumer:
    def __init__(self, redis: Redis, settings: ConsumerSettings, process: Process) -> None:
        self._redis = redis
        self._settings = settings
        self._process = process
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._acks: list[str] = []
        self._ack_wanted = asyncio.Event()
        self._acks_closing = False
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._next_claim = 0.0
        self._next_touch = 0.0
        self._deadline = 0.0
        self.ready = False
        self.acked = 0

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def ensure_group(self) -> None:
        await ensure_group(self._redis, self._settings.stream, self._settings.group)

    async def run(self) -> None:
        """Consume until `stop()`; then park until cancelled (`supervised` restarts a return)."""
        if self._stopping:
            await asyncio.Future()
        self._running = True
        self._stopped.clear()
        self._acks_closing = False
        acker = asyncio.create_task(self._ack_loop(), name=f"acks:{self._settings.stream}")
        try:
            await self.ensure_group()
            after = "0"  # ours from a previous life come before anything new
            while not self._stopping and (after := await self._read(after)):
                pass
            self.ready = True
            while not self._stopping:
                await self._turn()
            await self._drain()
        finally:
            self.ready = False
            # Not cancelled: a cancellation landing inside a Redis command may be swallowed.
            self._acks_closing = True
            self._ack_wanted.set()
            await asyncio.wait([acker], timeout=5)
            await cancel_until_done([acker])
            await self._flush_acks()
            self._running = False
            self._stopped.set()
        await asyncio.Future()

    async def _turn(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._next_touch:
            self._next_touch = now + self._settings.claim_idle_ms / 3000
            await self._touch()
        if now >= self._next_claim:
            self._next_claim = now + self._settings.claim_idle_ms / 2000
            await self._claim()
        await self._room.wait()
        await self._read(">")

    async def stop(self, timeout_s: float) -> None:
        """Take no new entry; finish (or release) the ones in hand, then ack them."""
        self._stopping = True
        self._deadline = asyncio.get_running_loop().time() + timeout_s
        if self._running:
            try:
                async with asyncio.timeout(timeout_s + 1):
                    await self._stopped.wait()
            except TimeoutError:
                log.warning(
                    "consumer did not stop in time", extra={"stream": self._settings.stream}
                )

    async def _drain(self) -> None:
        tasks = list(self._inflight.values())
        if tasks:
            remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
            _, pending = await asyncio.wait(tasks, timeout=remaining)
            if pending:
                ids: list[StreamIdT] = [
                    eid for eid, task in self._inflight.items() if task in pending
                ]
                await cancel_until_done(pending)
                await self._release(ids)

    async def _release(self, ids: list[StreamIdT]) -> None:
        settings = self._settings
        try:
            await self._redis.xclaim(
                settings.stream,
                settings.group,
                settings.consumer,
                0,
                ids,
                idle=RELEASED_IDLE_MS,
                justid=True,
            )
            log.warning("released entries in hand", extra={"count": len(ids)})
        except RedisError as exc:
            log.warning("could not release entries", extra={"error": repr(exc)})

    async def _read(self, start: str) -> str:
        settings = self._settings
        room = settings.concurrency - len(self._inflight)
        if room <= 0:
            return ""
        reply = await self._redis.xreadgroup(
            settings.group,
            settings.consumer,
            {settings.stream: start},
            count=min(settings.batch, room),
            block=settings.block_ms if start == ">" else None,
        )
        read = [(eid.decode(), fields) for _, found in read_entries(reply) for eid, fields in found]
        for eid, fields in read:
            self._spawn(eid, fields)
        return read[-1][0] if read else ""

    def _spawn(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        if entry_id in self._inflight:
            return
        if not fields:  # trimmed from the stream while pending: nothing left to run
            self._ack(entry_id)
            return
        task = asyncio.create_task(self._one(entry_id, fields), name=f"entry:{entry_id}")
        self._inflight[entry_id] = task
        if len(self._inflight) >= self._settings.concurrency:
            self._room.clear()

    async def _one(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            if await self._process(entry_id, fields):
                self._ack(entry_id)
        except Exception:  # the per-entry boundary: left pending, claimed again later
            log.exception("entry failed", extra={"entry": entry_id})
        finally:
            self._inflight.pop(entry_id, None)
            self._room.set()

    def _ack(self, entry_id: str) -> None:
        self._acks.append(entry_id)
        self._ack_wanted.set()

    async def _ack_loop(self) -> None:
        while not self._acks_closing:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        if not self._acks:
            return
        ids, self._acks = self._acks, []
        try:
            await self._redis.xack(self._settings.stream, self._settings.group, *ids)
            self.acked += len(ids)
        except RedisError as exc:
            # Not acked: they stay pending and run again elsewhere (at least once).
            log.warning("ack failed", extra={"count": len(ids), "error": repr(exc)})

    async def _touch(self) -> None:
        """Reset the idle time of entries in flight: a live consumer keeps what it holds."""
        ids: list[StreamIdT] = list(self._inflight)
        if not ids:
            return
        settings = self._settings
        await self._redis.xclaim(
            settings.stream, settings.group, settings.consumer, 0, ids, justid=True
        )

    async def _claim(self) -> None:
        """Take over entries a dead consumer left pending for longer than claim_idle_ms."""
        settings = self._settings
        cursor: bytes | str = "0-0"
        while not self._stopping:
            room = settings.concurrency - len(self._inflight)
            if room <= 0:
                return
            cursor, claimed, *_ = await self._redis.xautoclaim(
                settings.stream,
                settings.group,
                settings.consumer,
                settings.claim_idle_ms,
                start_id=cursor,
                count=min(settings.batch, room),
            )
            if claimed:
                log.warning(
                    "claimed idle entries",
                    extra={"stream": settings.stream, "count": len(claimed)},
                )
            for eid, fields in claimed:
                self._spawn(eid.decode() if isinstance(eid, bytes) else eid, fields or {})
            if cursor in (b"0-0", "0-0"):
                return

    async def lag(self) -> tuple[int | None, int | None]:
        """(entries not yet delivered to the group, entries delivered and not acked)."""
        return await group_backlog(self._redis, self._settings.stream, self._settings.group)
