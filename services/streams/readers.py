"""One Redis read loop per process for every pull socket, and each socket's bounded buffer.

The hub keeps one XREAD BLOCK over every stream that has readers (plus a private wake stream,
so that a new stream joins the loop at once) and hands each entry to the stream's readers. A
reader buffers at most `STREAMS_READER_BUFFER` entries (and 8 MiB). When its socket is slow and
the buffer is full it stops taking entries from the hub ("behind") and, once its socket has
drained the buffer, reads on from Redis after its own last id until it has caught up with the
hub, then takes live entries again. Memory per reader is bounded; nothing is skipped or sent
twice, because ids are compared as (ms, seq) against the reader's position per stream.

A live reader whose task is parked waiting for entries is written to by the hub itself, right
after the read (`Reader.flush`): fanning a new entry out to a hundred sockets is then one loop
of writes with one packed batch, not a hundred task wake-ups that each pack it again.
"""

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .framing import pack
from .ids import ZERO, EntryId, format_id, parse_id
from .metrics import StreamsMetrics
from .sockets import pair_frames
from .store import StreamStore, xread_entries

HUB_COUNT = 500  # entries per stream per XREAD of the hub
MAX_BUFFER_BYTES = 8 * 1024 * 1024
WAKE_TTL_S = 3600
PACK_CACHE = 64  # batches packed for the readers of a stream, newest kept
PACK_CACHE_BYTES = 32 * 1024 * 1024

Item = tuple[str, str, bytes]  # stream id, entry id, data


@dataclass(eq=False)
class _Feed:
    """A stream the hub reads: where it is, and who wants its entries."""

    cursor: EntryId
    readers: set["Reader"] = field(default_factory=set)


class Reader:
    """Entries of some streams for one consumer, from a position per stream, in id order."""

    def __init__(
        self,
        hub: "ReadHub",
        positions: dict[str, str],
        *,
        latest: bool,
        max_entries: int,
        max_bytes: int = MAX_BUFFER_BYTES,
    ) -> None:
        self.hub = hub
        self.streams = list(positions)
        self.pos: dict[str, EntryId] = {s: parse_id(p) for s, p in positions.items()}
        self.latest = latest
        self._buffer: deque[Item] = deque()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.behind = True  # every reader starts by reading from Redis
        self.closed = False
        self._event = asyncio.Event()
        # Set by the consumer: writes a batch synchronously, False when it cannot right now.
        self.direct: Callable[[list[Item]], bool] | None = None
        self.direct_at = 0.0
        self.waiting = False
        self._count = 1

    def offer(self, stream: str, entry_id: EntryId, text_id: str, data: bytes) -> None:
        """The hub hands over a live entry."""
        if self.behind or entry_id <= self.pos[stream]:
            return
        if len(self._buffer) >= self._max_entries or self._bytes + len(data) > self._max_bytes:
            self.behind = True  # drop it: it is read from Redis later
            self.hub.metrics.reader_fell_behind.inc()
            return
        self._append(stream, entry_id, text_id, data)
        if not (self.waiting and self.direct is not None):
            self._event.set()  # else the hub's `flush` right after this sends it, or sets it

    def _append(self, stream: str, entry_id: EntryId, text_id: str, data: bytes) -> None:
        self._buffer.append((stream, text_id, data))
        self._bytes += len(data)
        self.pos[stream] = entry_id

    def close(self) -> None:
        self.closed = True
        self._event.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def take(self, count: int, timeout_s: float) -> list[Item]:
        """Up to `count` entries per stream; [] after `timeout_s` without any, or when closed.

        In latest mode only the newest `count` entries per stream are returned and older
        ones are skipped (PTG's frame dropping for viewers). While this waits, the hub may
        hand entries straight to `direct` (see `flush`); that counts as activity for
        `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while not self.closed:
            if self._buffer:
                return self._pop(count)
            if self.behind:
                await self._catch_up(count)
                continue
            self._event.clear()
            remaining = max(deadline, self.direct_at + timeout_s) - time.monotonic()
            if remaining <= 0:
                return []
            self._count = count
            self.waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._event.wait()
            finally:
                self.waiting = False
        return []

    def flush(self) -> None:
        """Called by the hub after a read: a reader parked in `take` with a `direct` sender
        gets its new entries written at once, without waking its task (the fan-out to a
        hundred sockets is then a loop, not a hundred task switches)."""
        if self.closed or not self.waiting or self.direct is None or not self._buffer:
            return
        items = self._pop(self._count)
        try:
            if self.direct(items):
                self.direct_at = time.monotonic()
                if self._buffer:  # more than `count`: the task sends the rest
                    self._event.set()
                return
        except ConnectionError:
            self.close()
            return
        # Not sent (no credit, or the socket must drain first): back to the task.
        self._buffer.extendleft(reversed(items))
        self._bytes += sum(len(i[2]) for i in items)
        self._event.set()

    def _pop(self, count: int) -> list[Item]:
        if self.latest:
            newest: dict[str, deque[Item]] = {}
            for item in self._buffer:
                newest.setdefault(item[0], deque(maxlen=count)).append(item)
            keep = {id(i) for q in newest.values() for i in q}
            taken = [i for i in self._buffer if id(i) in keep]
            self._buffer.clear()
            self._bytes = 0
            return taken
        per_stream: dict[str, int] = {}
        taken, rest = [], []
        for item in self._buffer:
            n = per_stream.get(item[0], 0)
            if n < count:
                per_stream[item[0]] = n + 1
                taken.append(item)
                self._bytes -= len(item[2])
            else:
                rest.append(item)
        self._buffer = deque(rest)
        return taken

    async def _catch_up(self, count: int) -> None:
        store = self.hub.store
        # What the hub had passed before the read: all of it that exists is in the read's
        # answer, so a stream read to its end may move up to it even where there are no
        # entries (a stream deleted and written again), instead of reading forever.
        passed = {s: self.hub.cursor(s) for s in self.streams}
        per_stream: dict[str, int] = {}
        if self.latest:
            found: list[Item] = []
            for stream in self.streams:
                found += await store.latest(stream, format_id(self.pos[stream]), count)
        else:
            cursors = {s: format_id(p) for s, p in self.pos.items()}
            found = await store.after(cursors, count)
            for item in found:
                per_stream[item[0]] = per_stream.get(item[0], 0) + 1
        for stream, text_id, data in found:
            entry_id = parse_id(text_id)
            if entry_id > self.pos[stream]:
                self._append(stream, entry_id, text_id, data)
        more = False
        for stream in self.streams:
            if per_stream.get(stream, 0) >= count:
                more = True
            elif passed[stream] > self.pos[stream]:
                self.pos[stream] = passed[stream]
        if not more and all(self.hub.cursor(s) <= self.pos[s] for s in self.streams):
            self.behind = False  # no await since the read: the hub has nothing we lack


class ReadHub:
    """The process's shared read loop over every stream that has readers."""

    def __init__(self, store: StreamStore, metrics: StreamsMetrics, *, block_ms: int) -> None:
        self.store = store
        self.metrics = metrics
        self._block_ms = block_ms
        self._feeds: dict[str, _Feed] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._wake_key = store.keys.wake(secrets.token_hex(8))
        self._packed: OrderedDict[tuple[tuple[str, str], ...], tuple[bytes, bytes]] = OrderedDict()
        self._packed_bytes = 0
        self._wake_cursor = "0-0"

    def frames(self, items: list[Item]) -> tuple[bytes, bytes]:
        """A batch's wire frames, remembered: readers in step send the very same batch.

        The memory is bounded by PACK_CACHE batches and PACK_CACHE_BYTES in all.
        """
        key = tuple((s, i) for s, i, _ in items)
        found = self._packed.get(key)
        if found is None:
            found = pair_frames(*pack(items))
            size = len(found[0]) + len(found[1])
            if size <= PACK_CACHE_BYTES // 4:
                self._packed[key] = found
                self._packed_bytes += size
                while len(self._packed) > PACK_CACHE or self._packed_bytes > PACK_CACHE_BYTES:
                    _, old = self._packed.popitem(last=False)
                    self._packed_bytes -= len(old[0]) + len(old[1])
        return found

    def streams(self) -> list[str]:
        """The streams the read loop reads (those with readers)."""
        return list(self._feeds)

    def readers_of(self, stream: str) -> list["Reader"]:
        feed = self._feeds.get(stream)
        return list(feed.readers) if feed is not None else []

    def cursor(self, stream: str) -> EntryId:
        feed = self._feeds.get(stream)
        return feed.cursor if feed is not None else ZERO

    def reader(self, positions: dict[str, str], *, latest: bool, max_entries: int) -> Reader:
        return Reader(self, positions, latest=latest, max_entries=max_entries)

    async def subscribe(self, reader: Reader) -> None:
        new = False
        async with self._lock:
            for stream in reader.streams:
                feed = self._feeds.get(stream)
                if feed is None:
                    top = parse_id(await self.store.top(stream))
                    feed = self._feeds[stream] = _Feed(top)
                    new = True
                feed.readers.add(reader)
                self.metrics.readers.labels(stream).inc()
        if new:
            self._changed.set()
            async with self.store.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": b"1"}, maxlen=1, approximate=False)
                pipe.expire(self._wake_key, WAKE_TTL_S)
                await pipe.execute()

    def unsubscribe(self, reader: Reader) -> None:
        reader.close()
        for stream in reader.streams:
            feed = self._feeds.get(stream)
            if feed is None or reader not in feed.readers:
                continue
            feed.readers.discard(reader)
            self.metrics.readers.labels(stream).dec()
            if not feed.readers:
                del self._feeds[stream]

    async def run(self) -> None:
        """Read and fan out until cancelled (restarted by `supervised` after a Redis error)."""
        keys = self.store.keys
        while True:
            if not self._feeds:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams: dict[Any, Any] = {
                keys.data(s): format_id(f.cursor) for s, f in self._feeds.items()
            }
            streams[self._wake_key] = self._wake_cursor
            reply = await self.store.redis.xread(streams, count=HUB_COUNT, block=self._block_ms)
            touched: list[_Feed] = []
            for key, text_id, data in xread_entries(reply):
                if key == self._wake_key:
                    self._wake_cursor = text_id
                    continue
                stream = keys.stream_of(key)
                feed = self._feeds.get(stream)
                if feed is None:
                    continue
                entry_id = parse_id(text_id)
                if entry_id <= feed.cursor:
                    continue
                feed.cursor = entry_id
                for reader in feed.readers:
                    reader.offer(stream, entry_id, text_id, data)
                touched.append(feed)
            if touched:
                for reader in {r for feed in touched for r in feed.readers}:
                    reader.flush()
                newest_ms = max(feed.cursor[0] for feed in touched)
                self.metrics.reader_lag.observe(max(0.0, time.time() - newest_ms / 1000))

    async def close_all(self) -> None:
        for feed in list(self._feeds.values()):
            for reader in list(feed.readers):
                reader.close()


hub_key = web.AppKey("read_hub", ReadHub)
