"""One Redis connection in subscribe mode per process, kept alive and re-subscribed by itself.

Why not redis-py's `PubSub`: its read path costs several microseconds of Python per message
(one coroutine round trip, retry and observability wrappers for every reply), which is the whole
budget of a gateway fan-out. Here an `asyncio.Protocol` feeds each socket read to hiredis and
hands every complete message to a plain callback before yielding, so a burst of publications
costs one wake-up. Commands (SUBSCRIBE, UNSUBSCRIBE, PING) are written in RESP by hand: they are
the only ones this connection ever sends.
"""

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlparse

import hiredis

log = logging.getLogger(__name__)

MessageCallback = Callable[[bytes, bytes], None]
_BARRIER = b"barrier"  # PING payload telling barrier pongs from health-check pongs


def encode_command(*parts: bytes) -> bytes:
    """RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: "Subscriber") -> None:
        self._owner = owner
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have the same methods.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        owner = self._owner
        on_message = owner.on_message
        owner.last_read = asyncio.get_running_loop().time()
        while (reply := reader.gets()) is not False:
            if type(reply) is list and reply[0] == b"message":
                on_message(reply[1], reply[2])
            else:
                owner._on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class Subscriber:
    """Subscribes the Redis channels that local subscribers need, across Redis restarts.

    `on_message(channel, data)` is called synchronously for every message, in order.
    `on_reconnect()` is called after the connection came back and every channel was
    re-subscribed: messages published meanwhile were lost, and the owner may tell its clients.
    """

    def __init__(
        self,
        url: str,
        on_message: MessageCallback,
        *,
        on_reconnect: Callable[[], None] | None = None,
        connect_timeout_s: float = 5.0,
        ping_interval_s: float = 5.0,
    ) -> None:
        self.on_message = on_message
        self._on_reconnect = on_reconnect
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._wanted: set[bytes] = set()
        self._kept: set[bytes] = set()
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._protocol: _Protocol | None = None
        self._connected = asyncio.Event()
        self._ever_connected = False
        self.last_read = 0.0
        self._auth_answer: asyncio.Future[object] | None = None
        self._barriers: deque[asyncio.Future[None]] = deque()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def channel_count(self) -> int:
        return len(self._wanted)

    async def subscribe(self, channel: bytes, *, timeout_s: float = 5.0) -> None:
        """Subscribe and return once Redis confirmed it: from then on no publication is missed."""
        self._wanted.add(channel)
        if not self.connected:
            # Re-subscribed by itself once the link is back; the caller learns now, not later.
            raise ConnectionResetError("redis pub/sub connection is down")
        async with asyncio.timeout(timeout_s):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(channel, deque()).append(waiter)
            self._send(b"SUBSCRIBE", channel)
            await waiter

    async def barrier(self, *, timeout_s: float = 5.0) -> None:
        """Return once every message Redis sent before now has been handed to `on_message`.

        A command reply (a history read) and a publication travel on different connections:
        a publication Redis made before the read may still be in flight here after the reply.
        Redis answers a PING on this connection after everything it queued on it before.
        """
        if not self.connected:
            raise ConnectionResetError("redis pub/sub connection is down")
        async with asyncio.timeout(timeout_s):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._barriers.append(waiter)
            self._send(b"PING", _BARRIER)
            await waiter

    def add(self, channels: Iterable[bytes]) -> None:
        """Subscribe without waiting (used for always-on channels such as the control channel)."""
        new = set(channels) - self._wanted
        self._wanted |= new
        if new and self.connected:
            self._send(b"SUBSCRIBE", *new)

    def keep(self, channels: Iterable[bytes]) -> None:
        """Subscribe for good: `unsubscribe` leaves these alone (a channel that the hub's
        subscribers and an always-on listener such as the Socket.IO endpoint both need)."""
        kept = set(channels)
        self._kept |= kept
        self.add(kept)

    def unsubscribe(self, channel: bytes) -> None:
        if channel in self._wanted and channel not in self._kept:
            self._wanted.discard(channel)
            if self.connected:
                self._send(b"UNSUBSCRIBE", channel)

    def _send(self, *parts: bytes) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.write(encode_command(*parts))

    def _on_reply(self, reply: object) -> None:
        if self._auth_answer is not None:
            if not self._auth_answer.done():
                self._auth_answer.set_result(reply)
            return
        if isinstance(reply, hiredis.ReplyError):
            log.error("redis refused a pub/sub command", extra={"error": str(reply)})
            return
        if type(reply) is list and reply and reply[0] == b"pong" and reply[1] == _BARRIER:
            if self._barriers:
                waiter = self._barriers.popleft()
                if not waiter.done():
                    waiter.set_result(None)
            return
        if type(reply) is list and reply and reply[0] == b"subscribe":
            waiters = self._waiters.get(reply[1])
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._waiters[reply[1]]
                if not waiter.done():
                    waiter.set_result(None)

    async def run(self) -> None:
        """Connect, subscribe everything wanted, keep the link checked; return when it is lost.

        Runs under `supervised()`, which calls it again with backoff.
        """
        protocol = await self._connect()
        try:
            self._protocol = protocol
            if self._wanted:
                self._send(b"SUBSCRIBE", *self._wanted)
            self._connected.set()
            if self._ever_connected:
                log.warning("redis pub/sub reconnected", extra={"channels": len(self._wanted)})
                if self._on_reconnect is not None:
                    self._on_reconnect()
            self._ever_connected = True
            await self._watch(protocol)
        finally:
            self._connected.clear()
            self._protocol = None
            lost = [w for waiters in self._waiters.values() for w in waiters] + [*self._barriers]
            for waiter in lost:
                if not waiter.done():
                    waiter.set_exception(ConnectionResetError("redis pub/sub connection lost"))
            self._waiters.clear()
            self._barriers.clear()
            if protocol.transport is not None:
                protocol.transport.abort()

    async def _watch(self, protocol: _Protocol) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ping_interval_s):
                    await asyncio.shield(protocol.lost)
            if protocol.lost.done():
                raise ConnectionResetError("redis pub/sub connection lost")
            if loop.time() - self.last_read > 3 * self._ping_interval_s:
                raise TimeoutError("redis pub/sub connection silent; reconnecting")
            self._send(b"PING")

    async def _connect(self) -> _Protocol:
        url = urlparse(self._url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout_s):
            if url.scheme == "unix":
                _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), url.path)
            else:
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self),
                    url.hostname or "localhost",
                    url.port or 6379,
                    ssl=ssl.create_default_context() if url.scheme == "rediss" else None,
                )
            self.last_read = loop.time()
            if url.password:
                parts = [b"AUTH"]
                if url.username:
                    parts.append(unquote(url.username).encode())
                parts.append(unquote(url.password).encode())
                await self._auth(protocol, encode_command(*parts))
        return protocol

    async def _auth(self, protocol: _Protocol, command: bytes) -> None:
        # AUTH is answered before any subscription exists, so the first reply is its answer.
        answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._auth_answer = answer
        try:
            assert protocol.transport is not None
            protocol.transport.write(command)
            reply = await answer
        finally:
            self._auth_answer = None
        if isinstance(reply, hiredis.ReplyError):
            protocol.transport.abort()
            raise PermissionError(f"redis refused AUTH: {reply}")
