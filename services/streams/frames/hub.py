"""One Redis read loop per process for every `/ws/labels` and `/ws/stream` socket.

Each socket owns a `Watcher`: a mailbox holding, per camera stream, the newest frame it has not
sent yet. The hub reads every watched stream with one blocking XREAD (not one per socket), keeps
only the newest entry of each, and offers it to that stream's watchers. A slow socket therefore
skips to the newest frame instead of queueing: memory is one frame per watched stream per
socket, and the frame's bytes (header and image, encoded once) are shared by every socket.

A frame whose content equals the one before it on the same stream is not offered again
(change-only delivery; the backend re-sent the latest frame every 100 ms).

A new stream must join the blocking XREAD at once: the hub sends `CLIENT UNBLOCK` to its reader
connection, so the next XREAD includes it. Its cursor starts at the latest entry seen when it was
added, so even a missed wake-up only delays (by at most `FRAMES_READ_BLOCK_MS`), never loses.
Labels are re-read from the index every `FRAMES_LABEL_REFRESH_S` (at once after a local write
that adds a camera), so cameras added after a socket connected are picked up.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.redis import make_client
from services.common.settings import RedisSettings

from .codec import Frame, frame_from_entry
from .metrics import FramesMetrics
from .store import FrameStore

log = logging.getLogger(__name__)

UNBLOCK_TRIES = 20  # the reader may not have reached Redis yet; retry a few ms apart


class Watcher:
    """One socket's mailbox: the newest unsent frame of each stream it watches (bounded)."""

    __slots__ = ("_event", "_pending", "allow", "closed", "labels", "metrics", "streams")

    def __init__(
        self, metrics: FramesMetrics, allow: Callable[[str, str], bool] | None = None
    ) -> None:
        # Cameras of a watched label found later are offered only when `allow(label, key)`.
        self.allow = allow or _allow_all
        self.closed = False  # set by `unwatch`: a watch still in flight must not re-add it
        self.streams: set[str] = set()
        self.labels: set[str] = set()
        self.metrics = metrics
        self._pending: dict[str, Frame] = {}
        self._event = asyncio.Event()

    def offer(self, frame: Frame) -> None:
        if frame.stream in self._pending:
            self.metrics.skipped.inc()  # the socket had not sent the previous one yet
        self._pending[frame.stream] = frame
        self._event.set()

    def wake(self) -> None:
        """End a `wait` early (its socket closed)."""
        self._event.set()

    def take(self) -> list[Frame]:
        frames = list(self._pending.values())
        self._pending.clear()
        self._event.clear()
        return frames

    async def wait(self, timeout_s: float) -> list[Frame]:
        """The pending frames, waiting up to `timeout_s` for one; [] on timeout."""
        if not self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._event.wait()
        return self.take()


def _allow_all(label: str, key: str) -> bool:
    return True


@dataclass(slots=True)
class _Stream:
    label: str
    key: str
    cursor: str  # last entry id read; XREAD returns what follows it
    latest: Frame | None
    watchers: set[Watcher] = field(default_factory=set)


class FrameHub:
    """Shares one XREAD loop among all local watchers of frames streams."""

    def __init__(
        self,
        store: FrameStore,
        control: Redis,
        metrics: FramesMetrics,
        *,
        block_ms: int,
        count: int,
        label_refresh_s: float,
    ) -> None:
        self._store = store
        self._control = control  # sends CLIENT UNBLOCK; never blocks itself
        self._metrics = metrics
        self._block_ms = block_ms
        self._count = count
        self._label_refresh_s = label_refresh_s
        self._streams: dict[str, _Stream] = {}
        self._labels: dict[str, set[Watcher]] = {}
        self._label_keys: dict[str, set[str]] = {}
        self._changed = asyncio.Event()  # a stream was added
        self._refresh_now = asyncio.Event()
        self._version = 0  # bumped whenever a stream is added
        self._read_version = -1  # the version the running XREAD was built from
        self._reading = False
        self._reader_id: int | None = None

    @property
    def watched_streams(self) -> int:
        return len(self._streams)

    @property
    def blocked(self) -> bool:
        """Whether the read loop is inside its XREAD (tests wait for it)."""
        return self._reading

    async def watch(self, watcher: Watcher, label: str, key: str) -> None:
        """Deliver `label`/`key`'s latest frame (if any), then every change, to `watcher`."""
        name = self._store.keys.stream(label, key)
        state = self._streams.get(name)
        added = False
        if state is None:
            latest = await self._store.latest(label, key)
            if watcher.closed:
                return
            state = self._streams.get(name)  # another socket may have added it meanwhile
            if state is None:
                cursor = latest.id if latest is not None else "0-0"
                state = _Stream(label=label, key=key, cursor=cursor, latest=latest)
                self._streams[name] = state
                self._version += 1
                added = True
        state.watchers.add(watcher)
        watcher.streams.add(name)
        if state.latest is not None:
            watcher.offer(state.latest)
        self._metrics.streams.set(len(self._streams))
        if added:
            self._changed.set()
            await self._wake()

    async def watch_label(self, watcher: Watcher, label: str, keys: list[str]) -> None:
        """Watch every camera of `label`, including cameras that appear later."""
        self._labels.setdefault(label, set()).add(watcher)
        self._label_keys.setdefault(label, set()).update(keys)
        watcher.labels.add(label)
        for key in keys:
            await self.watch(watcher, label, key)

    def unwatch(self, watcher: Watcher) -> None:
        watcher.closed = True
        for name in watcher.streams:
            state = self._streams.get(name)
            if state is None:
                continue
            state.watchers.discard(watcher)
            if not state.watchers:
                del self._streams[name]  # the running XREAD may still name it: harmless
        for label in watcher.labels:
            watchers = self._labels.get(label)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._labels[label]
                    self._label_keys.pop(label, None)
        watcher.streams.clear()
        watcher.labels.clear()
        self._metrics.streams.set(len(self._streams))

    def key_added(self, label: str) -> None:
        """A local write created a camera: watched labels look again without waiting."""
        if label in self._labels:
            self._refresh_now.set()

    async def _wake(self) -> None:
        for _ in range(UNBLOCK_TRIES):
            if not self._reading or self._read_version >= self._version:
                return
            reader_id = self._reader_id
            if reader_id is not None and await self._control.client_unblock(reader_id):
                return
            await asyncio.sleep(0.005)

    async def run(self, settings: RedisSettings) -> None:
        """The read loop, on a connection of its own (it blocks); runs under `supervised()`."""
        reader = make_client(
            settings,
            single_connection_client=True,
            socket_timeout=settings.socket_timeout_s + self._block_ms / 1000,
            # No silent reconnect: a new connection has a new CLIENT ID, so a dropped one must
            # end this run (supervised() starts another, which asks for its id again).
            retry=Retry(NoBackoff(), 0),
        )
        try:
            self._reader_id = int(await reader.client_id())
            while True:
                await self._read_once(reader)
        finally:
            self._reader_id = None
            self._reading = False
            await reader.aclose()

    async def _read_once(self, reader: Redis) -> None:
        if not self._streams:
            self._changed.clear()
            await self._changed.wait()
            return
        cursors: dict[Any, Any] = {name: s.cursor for name, s in self._streams.items()}
        self._read_version = self._version
        self._reading = True
        try:
            reply: Any = await reader.xread(cursors, count=self._count, block=self._block_ms)
        finally:
            self._reading = False
        started = time.perf_counter()
        for raw_name, value in (reply or {}).items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            entries = value[0] if value and isinstance(value[0], list) else value
            if entries:
                self._dispatch(name, entries[-1])
        self._metrics.dispatch_seconds.observe(time.perf_counter() - started)

    def _dispatch(self, name: str, entry: Any) -> None:
        state = self._streams.get(name)
        if state is None:
            return  # its last watcher left while the XREAD was running
        raw_id, fields = entry
        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        state.cursor = entry_id
        frame = frame_from_entry(name, state.label, state.key, entry_id, fields)
        unchanged = state.latest is not None and state.latest.digest == frame.digest
        state.latest = frame
        if unchanged:
            self._metrics.unchanged.inc()
            return
        for watcher in state.watchers:
            watcher.offer(frame)

    async def refresh_labels(self) -> None:
        """Look for new cameras of watched labels; runs under `supervised()`."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._label_refresh_s):
                    await self._refresh_now.wait()
            self._refresh_now.clear()
            for label in list(self._labels):
                await self._refresh_label(label)

    async def _refresh_label(self, label: str) -> None:
        keys = await self._store.label_keys(label)
        known = self._label_keys.get(label)
        if known is None:
            return
        for key in keys:
            if key in known:
                continue
            known.add(key)
            for watcher in list(self._labels.get(label, ())):
                if watcher.allow(label, key):
                    await self.watch(watcher, label, key)
