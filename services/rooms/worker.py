"""The command consumer: reads `sb:rooms:cmd` through the group `rooms` and applies each entry.

Several replicas share the group. A batch is split by room: the commands of one room are applied
one after another, in stream order, different rooms concurrently. An entry is acked once its
command was applied (or refused with an error reply); one whose application failed on Redis
stays pending and is claimed again with XAUTOCLAIM once idle for `claim_idle_ms`, by whichever
replica is alive. A replica restarted under the same consumer name first re-reads its own
pending entries. Redelivery is harmless: each change records its entry id (see store.py).

Under load the next batch is read in the same pipeline as the writes of the one in hand, so a
batch costs one round trip to Redis; a read that waits for entries is sent only when that read
found none.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, KeyT, StreamIdT

from services.common.compact_json import dumps
from services.common.errors import InternalError, ServiceError
from services.common.groups import ensure_group, group_backlog, read_entries
from services.common.redis import Keys
from services.common.redis_direct import DirectConnection
from services.common.rooms import COMMAND_GROUP as GROUP
from services.common.rooms import RoomCommand, reply_to

from .store import Outcome, RoomStore

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    consumer: str
    batch: int
    block_ms: int
    claim_idle_ms: int


class CommandConsumer:
    """Applies room commands from the stream; `run_once()` handles at most one batch."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        store: RoomStore,
        settings: ConsumerSettings,
        *,
        observe: Callable[[str, str, float], None] = lambda op, outcome, seconds: None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._settings = settings
        self._observe = observe
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._next_claim = 0.0
        self._ahead: list[Entry] = []  # new entries read with the last batch's writes
        self._reads = DirectConnection(redis)  # the waiting reads, one at a time
        self.ready = False
        self.applied = 0  # entries settled (applied or refused) and acked

    async def ensure_group(self) -> None:
        await ensure_group(self._redis, self._keys.rooms_cmd, GROUP)

    async def run(self) -> None:
        """Consume until `stop()`; then park until cancelled (`supervised` restarts a return)."""
        if self._stopping:
            await asyncio.Future()
        self._running = True
        self._stopped.clear()
        try:
            await self.ensure_group()
            # Ours from a previous life (same consumer name): they come before anything new.
            after = "0"
            while not self._stopping and (after := await self._read(after)):
                pass
            self.ready = True
            while not self._stopping:
                await self.run_once()
            if self._ahead:  # read with the last writes, before stop() came: apply them
                await self.apply(self._ahead)
                self._ahead = []
        finally:
            self.ready = False
            self._running = False
            self._stopped.set()
        await asyncio.Future()

    async def stop(self, timeout_s: float) -> None:
        """Take no new entry; wait for the batch in hand to be applied and acked."""
        self._stopping = True
        if self._running:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._stopped.wait()
            except TimeoutError:
                log.warning("consumer did not stop in time; cancelling it")

    async def run_once(self) -> int:
        """Claim idle entries (now and then), then apply one batch of new ones.

        The next batch is read in the same round trip as the writes of this one (without
        waiting for entries): under load, one round trip per batch instead of two. Only when
        that read finds nothing does the next call wait for entries."""
        before = self.applied
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self._settings.claim_idle_ms / 2000
            await self._claim()  # older than what was read ahead: applied first
        if not self._ahead:
            self._ahead = await self._wait_for_entries()
        entries, self._ahead = self._ahead, []
        self._ahead = await self.apply(entries, read_ahead=not self._stopping)
        return self.applied - before

    async def _read(self, start: str) -> str:
        """Apply this consumer's own pending entries after `start`; the last id read, or ""."""
        settings = self._settings
        stream: dict[KeyT, StreamIdT] = {self._keys.rooms_cmd: start}
        reply = await self._redis.xreadgroup(GROUP, settings.consumer, stream, count=settings.batch)
        await self.apply(_entries(reply))
        ids = [eid for _, found in read_entries(reply) for eid, _ in found]
        return ids[-1].decode() if ids else ""

    async def _wait_for_entries(self) -> list[Entry]:
        """New entries, waited for up to `block_ms`: the read that follows a batch when the one
        sent with its writes found nothing (an idle service makes one every `block_ms`)."""
        (reply,) = await self._reads.execute(self._new_entries("BLOCK", self._settings.block_ms))
        if isinstance(reply, Exception):
            raise reply
        return _sent_entries(reply)

    @property
    def _read_ahead(self) -> tuple[EncodableT, ...]:
        """The next batch's read, sent with this batch's writes: no waiting for entries."""
        return self._new_entries()

    def _new_entries(self, *options: EncodableT) -> tuple[EncodableT, ...]:
        """XREADGROUP of this consumer's next batch of new entries, with `options`."""
        settings = self._settings
        group = ("GROUP", GROUP, settings.consumer, "COUNT", settings.batch)
        return ("XREADGROUP", *group, *options, "STREAMS", self._keys.rooms_cmd, ">")

    async def _claim(self) -> None:
        """Take over entries another consumer left pending (it died) for longer than allowed."""
        settings = self._settings
        cursor: bytes | str = "0-0"
        while not self._stopping:
            cursor, claimed, *_ = await self._redis.xautoclaim(
                self._keys.rooms_cmd,
                GROUP,
                settings.consumer,
                settings.claim_idle_ms,
                start_id=cursor,
                count=settings.batch,
            )
            entries = [(eid.decode(), fields) for eid, fields in claimed if fields]
            if entries:
                log.warning("claimed idle room commands", extra={"count": len(entries)})
            await self.apply(entries)
            if cursor in (b"0-0", "0-0"):  # the whole pending list was scanned
                return

    async def apply(self, entries: list[Entry], *, read_ahead: bool = False) -> list[Entry]:
        """Apply a batch: in order within a room, rooms together; ack what was settled.

        The batch goes in waves. A wave takes the head of every room's queue: a run of
        consecutive updates (all rooms' runs go to Redis together, see `RoomStore.update_runs`)
        or one other command (joins and leaves, one script each, concurrently). With
        `read_ahead`, the new entries read along with the last wave's updates are returned
        (none when that wave has no update).
        """
        ahead: list[Entry] = []
        queues: dict[str, deque[tuple[str, RoomCommand]]] = {}
        acks: list[str] = []
        for entry_id, fields in entries:
            raw = fields.get(b"c", b"")
            try:
                cmd = RoomCommand.decode(raw)
            except ServiceError as exc:
                await self._refuse(raw, exc)
                acks.append(entry_id)
                continue
            queues.setdefault(cmd.room, deque()).append((entry_id, cmd))
        while queues:
            runs: dict[str, list[tuple[RoomCommand, str]]] = {}
            singles: list[tuple[RoomCommand, str]] = []
            for room, queue in queues.items():
                if queue[0][1].op != "update":
                    entry_id, cmd = queue.popleft()
                    singles.append((cmd, entry_id))
                    continue
                run = runs[room] = []
                while queue and queue[0][1].op == "update":
                    entry_id, cmd = queue.popleft()
                    run.append((cmd, entry_id))
            last = not any(queues.values())
            updates = self._apply_updates(runs, read_ahead=read_ahead and last)
            if singles:
                (settled, stalled_rooms, ahead), oks = await asyncio.gather(
                    updates,
                    asyncio.gather(*(self._apply_single(cmd, entry) for cmd, entry in singles)),
                )
            else:  # updates only, the busy case: no tasks to make and gather
                (settled, stalled_rooms, ahead), oks = await updates, []
            self.applied += settled  # acked with their change
            stalled = set(stalled_rooms)  # rooms whose commands stay pending (Redis failed)
            for (cmd, entry_id), ok in zip(singles, oks, strict=True):
                if ok:
                    acks.append(entry_id)
                else:
                    stalled.add(cmd.room)
            for room in [r for r, q in queues.items() if not q or r in stalled]:
                del queues[room]  # a stalled room's later commands wait with it
        if acks:
            await self._redis.xack(self._keys.rooms_cmd, GROUP, *acks)
            self.applied += len(acks)
        return ahead

    async def _apply_updates(
        self, runs: dict[str, list[tuple[RoomCommand, str]]], *, read_ahead: bool
    ) -> tuple[int, list[str], list[Entry]]:
        """How many entries were settled (and acked), the rooms left pending because Redis
        failed, and the new entries read with the writes (`read_ahead`).

        Entries read ahead by a pipeline that failed stay pending: XAUTOCLAIM takes them again
        after `claim_idle_ms`, as after a crash."""
        if not runs:
            return 0, [], []
        started = time.perf_counter()
        try:
            settled, ahead = await self._store.update_runs(
                runs, int(time.time() * 1000), also=self._read_ahead if read_ahead else None
            )
        except RedisError as exc:
            log.warning("room updates not applied", extra={"rooms": len(runs), "error": repr(exc)})
            return 0, list(runs), []
        share = (time.perf_counter() - started) / sum(len(run) for run in runs.values())
        for outcomes in settled.values():
            for _, outcome in outcomes:
                self._observe("update", _outcome_name(outcome), share)
        return sum(len(outcomes) for outcomes in settled.values()), [], _sent_entries(ahead)

    async def _apply_single(self, cmd: RoomCommand, entry_id: str) -> bool:
        """Apply a join, leave or get; False when Redis failed and it stays pending."""
        try:
            await self._apply_one(cmd, entry_id)
        except RedisError as exc:
            # Left pending: claimed again once idle; the rest of this room waits with it.
            log.warning("room command not applied", extra={"room": cmd.room, "error": repr(exc)})
            return False
        return True

    async def _apply_one(self, cmd: RoomCommand, entry_id: str) -> None:
        started = time.perf_counter()
        outcome = "error"
        try:
            outcome = _outcome_name(await self._dispatch(cmd, entry_id))
        except ServiceError as exc:
            outcome = _outcome_name(exc)
            await self._store.reply(cmd, {"error": exc.to_dict()})
        except RedisError:
            raise
        except Exception:  # the per-entry boundary: a bug must not stop the consumer
            log.exception("room command failed", extra={"room": cmd.room, "op": cmd.op})
            await self._store.reply(cmd, {"error": InternalError().to_dict()})
        finally:
            self._observe(cmd.op, outcome, time.perf_counter() - started)

    def _dispatch(self, cmd: RoomCommand, entry_id: str) -> Awaitable[Outcome]:
        now_ms = int(time.time() * 1000)
        store = self._store
        if cmd.op == "join":
            return store.join(cmd, entry_id, now_ms)
        if cmd.op == "leave":
            return store.leave(cmd, entry_id, now_ms)
        return store.get(cmd)

    async def _refuse(self, raw: bytes, exc: ServiceError) -> None:
        gw, req = reply_to(raw)
        if gw and req:
            await self._redis.publish(
                self._keys.reply(gw), dumps({"req": req, "error": exc.to_dict()})
            )

    async def lag(self) -> int | None:
        """Entries not yet delivered to the group (Redis 7), None when unknown."""
        lag, _ = await group_backlog(self._redis, self._keys.rooms_cmd, GROUP)
        return lag


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply as (entry id, fields); an entry trimmed from the stream while pending
    has no fields left: nothing to apply."""
    return [
        (eid.decode(), fields)
        for _, found in read_entries(reply)
        for eid, fields in found
        if fields
    ]


def _sent_entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply as Redis sent it (a RESP3 map, or a RESP2 array, of stream name to
    [entry id, [field, value, ...]]), as `_entries` gives redis-py's."""
    if not reply:
        return []
    found = reply.values() if isinstance(reply, dict) else [entries for _, entries in reply]
    return [
        (eid.decode(), dict(zip(fields[::2], fields[1::2], strict=True)))
        for entries in found
        for eid, fields in entries
        if fields
    ]


def _outcome_name(outcome: Outcome | ServiceError) -> str:
    if isinstance(outcome, ServiceError):
        return outcome.code.name.lower()
    return "duplicate" if outcome.duplicate else "ok" if outcome.changed else "unchanged"
