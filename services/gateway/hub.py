"""Local fan-out: which sockets of this process listen to which channel, and the outbox.

The hot path is `Hub.dispatch`: a Redis message for a channel becomes one WebSocket frame,
appended to the outbox of every local subscriber; `Outbox` then writes each socket's pending
frames with one `transport.write` per event-loop turn. A write costs about 9 us, a frame inside
it well under 1 us, so under load many publications share one write. A socket whose unsent
bytes exceed its bound is handed to `on_overflow` (closed as a slow consumer) and never slows
the others.
"""

import asyncio
import functools
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Protocol

from redis.exceptions import RedisError

from services.common.bus import Bus, Position, parse_offset
from services.common.channels import Namespace
from services.common.pubsub import Subscriber

from .wire import text_frame

log = logging.getLogger(__name__)


class Peer(Protocol):
    """What the outbox needs of a connection."""

    out: list[bytes]
    transport: asyncio.Transport
    closing: bool
    max_bytes: int
    max_frames: int


class Outbox:
    """Per-socket frame queues, flushed with one write per socket per event-loop turn."""

    def __init__(self, on_overflow: Callable[[Peer], None]) -> None:
        self._on_overflow = on_overflow
        self._dirty: list[Peer] = []
        self._scheduled = False
        self.frames_sent = 0
        self.writes = 0
        self.bytes_sent = 0

    def push(self, peer: Peer, frame: bytes) -> None:
        if not peer.out:
            self._dirty.append(peer)
            self._schedule()
        peer.out.append(frame)

    def broadcast(self, peers: Iterable[Peer], frame: bytes) -> int:
        dirty = self._dirty
        count = 0
        for peer in peers:
            out = peer.out
            if not out:
                dirty.append(peer)
            out.append(frame)
            count += 1
        self._schedule()
        return count

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def flush_peer(self, peer: Peer) -> None:
        """Write what is queued for one socket now (before aiohttp writes a close frame)."""
        out = peer.out
        if out and not peer.transport.is_closing():
            peer.transport.write(b"".join(out))
        out.clear()

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        frames = 0
        for peer in dirty:
            out = peer.out
            count = len(out)
            if not count:
                continue
            transport = peer.transport
            if peer.closing or transport.is_closing():
                out.clear()
                continue
            data = out[0] if count == 1 else b"".join(out)
            transport.write(data)
            self.bytes_sent += len(data)
            out.clear()
            frames += count
            if count > peer.max_frames or transport.get_write_buffer_size() > peer.max_bytes:
                self._on_overflow(peer)
        self.frames_sent += frames
        self.writes += len(dirty)


class AgeHistogram:
    """Ages of publications when they reach the gateway, from their offsets (`<ms>-<seq>`, Redis's
    clock at XADD): a few integer additions per publication, turned into a Prometheus histogram
    at scrape time. Across machines the figure includes their clocks' difference."""

    BOUNDS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 1000)

    __slots__ = ("counts", "sum_ms", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS_MS) + 1)
        self.total = 0
        self.sum_ms = 0.0

    def observe(self, offset_ms: bytes) -> None:
        try:
            age = time.time() * 1000 - int(offset_ms)
        except ValueError:
            return
        age = max(age, 0.0)
        self.counts[bisect_left(self.BOUNDS_MS, age)] += 1
        self.total += 1
        self.sum_ms += age

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (upper bound in seconds, count) pairs, `+Inf` last."""
        cumulative, rows = 0, []
        for bound, count in zip((*self.BOUNDS_MS, None), self.counts, strict=True):
            cumulative += count
            rows.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
        return rows


class Channel:
    """Local state of one channel: live subscribers, and those still catching up on history."""

    __slots__ = (
        "backlog",
        "epoch",
        "floors",
        "last",
        "live",
        "name",
        "namespace",
        "pending",
        "ready",
    )

    def __init__(self, name: str, namespace: Namespace) -> None:
        self.name = name
        self.namespace = namespace
        self.live: dict[Peer, None] = {}
        # Subscribers between "Redis subscription confirmed" and "history read": what arrives
        # meanwhile is kept with its offset, then sent after the history if it is newer.
        self.pending: dict[Peer, list[tuple[bytes, bytes]]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Position of the last publication delivered here, to catch up after a pub/sub outage.
        self.epoch = ""
        self.last = b""
        # While catching up: what arrives is held back, and where each late joiner stands.
        self.backlog: list[tuple[bytes, bytes]] | None = None
        self.floors: dict[Peer, bytes] = {}

    def __len__(self) -> int:
        return len(self.live) + len(self.pending)


class Hub:
    """Channel -> local subscribers; subscribes Redis while a channel has any."""

    def __init__(
        self,
        outbox: Outbox,
        subscriber: Subscriber,
        bus: Bus,
        on_lost: Callable[[Peer], None],
    ) -> None:
        self.outbox = outbox
        self._subscriber = subscriber
        self._bus = bus
        self._redis_name = bus.keys.channel
        self._on_lost = on_lost
        self._channels: dict[bytes, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.publications_received = 0
        self.ages = AgeHistogram()  # of publications when they reach this gateway

    def dispatch(self, redis_channel: bytes, message: bytes) -> None:
        """Subscriber callback: one Redis message to every local subscriber of its channel."""
        channel = self._channels.get(redis_channel)
        if channel is None:
            return
        self.publications_received += 1
        newline = message.find(b"\n")
        frame = text_frame(message[newline + 1 :])
        if newline:  # presence pushes carry no offset
            channel.last = message[:newline]
            self.ages.observe(message[: message.find(b"-")])
        if channel.backlog is None:
            self.outbox.broadcast(channel.live, frame)
        else:
            channel.backlog.append((message[:newline], frame))
        if channel.pending:
            offset = message[:newline]
            for buffer in channel.pending.values():
                buffer.append((offset, frame))

    async def join(self, name: str, peer: Peer, namespace: Namespace) -> None:
        """Add `peer`; return once Redis confirmed the subscription, so nothing is missed.

        In a namespace with history the peer stays pending (messages are buffered for it)
        until `go_live` is called with the position its history read ended at.
        """
        catch_up = namespace.has_history
        key = self._redis_name(name).encode()
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = Channel(name, namespace)
            task = asyncio.ensure_future(self._subscriber.subscribe(key))
            task.add_done_callback(functools.partial(_settle, channel.ready))
        if catch_up:
            channel.pending[peer] = []
        else:
            channel.live[peer] = None
        try:
            await asyncio.shield(channel.ready)
        except BaseException:
            self.leave(name, peer)
            raise

    async def in_flight(self) -> None:
        """Wait for the publications still in flight on the pub/sub connection.

        Call it between a history read and `go_live`: what Redis published before the read is
        then in the peer's buffer, where `go_live` filters it by offset, and never reaches the
        peer twice (the read's reply and a publication travel on different connections).
        """
        await self._subscriber.barrier()

    def go_live(self, name: str, peer: Peer, position: Position) -> None:
        """End catch-up: queue what arrived meanwhile and is newer than `position`, go live."""
        channel = self._channels.get(self._redis_name(name).encode())
        if channel is None or peer not in channel.pending:
            return
        floor = parse_offset(position.offset)
        sent = position.offset.encode()
        for offset, frame in channel.pending.pop(peer):
            if not offset or parse_offset(offset) > floor:
                self.outbox.push(peer, frame)
                sent = offset or sent
        channel.live[peer] = None
        if channel.epoch != position.epoch:
            channel.epoch, channel.last = position.epoch, sent
        elif parse_offset(sent) > parse_offset(channel.last):
            channel.last = sent
        if channel.backlog is not None:
            channel.floors[peer] = sent

    def resync(self) -> None:
        """After a pub/sub outage: deliver from history what each channel missed meanwhile."""
        for key, channel in self._channels.items():
            if channel.namespace.has_history and channel.epoch and channel.backlog is None:
                channel.backlog = []
                since = Position(channel.last.decode(), channel.epoch)  # before anything new
                task = asyncio.create_task(self._resync(key, channel, since), name="hub-resync")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _resync(self, key: bytes, channel: Channel, since: Position) -> None:
        read = None
        try:
            # Confirmed subscription first: from then on nothing is missed, the rest is history.
            await self._subscriber.subscribe(key)
            read = await self._bus.read(channel.name, channel.namespace, since)
            await self.in_flight()
        except (OSError, TimeoutError, RedisError) as exc:
            log.warning("catch-up failed", extra={"channel": channel.name, "error": repr(exc)})
        finally:
            backlog, channel.backlog = channel.backlog or [], None
            floors, channel.floors = channel.floors, {}
        if read is None or not read.recovered or read.epoch != channel.epoch:
            log.warning("history lost during a pub/sub outage", extra={"channel": channel.name})
            for peer in list(channel.live):
                self._on_lost(peer)
            if read is not None:
                channel.epoch, channel.last = read.epoch, read.offset.encode()
            return
        prefix = self._bus.frame_prefix(channel.name, None) + b","
        entries = [(_offset_of(pub), text_frame(prefix + pub[1:])) for pub in read.publications]
        newest = entries[-1][0] if entries else since.offset.encode()
        entries += [(o, f) for o, f in backlog if not o or parse_offset(o) > parse_offset(newest)]
        for peer in channel.live:
            floor = parse_offset(floors.get(peer, since.offset.encode()))
            for offset, frame in entries:
                if not offset or parse_offset(offset) > floor:
                    self.outbox.push(peer, frame)

    def leave(self, name: str, peer: Peer) -> None:
        key = self._redis_name(name).encode()
        channel = self._channels.get(key)
        if channel is None:
            return
        channel.live.pop(peer, None)
        channel.pending.pop(peer, None)
        channel.floors.pop(peer, None)
        if not channel:
            del self._channels[key]
            channel.ready.cancel()  # no-op once settled
            self._subscriber.unsubscribe(key)

    def subscribers(self, name: str) -> int:
        channel = self._channels.get(self._redis_name(name).encode())
        return len(channel) if channel else 0

    @property
    def channel_count(self) -> int:
        return len(self._channels)


def _offset_of(publication: bytes) -> bytes:
    """`{"offset":"<id>",...}` -> `<id>`: the shape `Bus.read` renders."""
    return publication[11 : publication.index(b'"', 11)]


def _settle(future: asyncio.Future[None], task: "asyncio.Future[None]") -> None:
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif (exc := task.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(None)
