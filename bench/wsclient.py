"""A minimal WebSocket client on a raw asyncio Protocol, cheap enough to be the load generator.

It does the HTTP upgrade by hand and never decodes a delivery: it walks frame headers, skips a
run of same-length deliveries with a few strided slices, and counts deliveries with one
`bytes.count` per read. A frame then costs well under a microsecond of client CPU, about a tenth
of what aiohttp's client costs (`python -m bench.client_cost`, docs/BENCHMARKS.md). Subclasses
speak the application protocol on top (`bench/targets.py`).

Several clients share one `Tally`, so a publisher can wait for "N deliveries in total" without a
wake-up per frame.
"""

import asyncio
import base64
import functools
import hashlib
import os
import re
import socket
import time
from collections.abc import Sequence
from typing import TypeVar, cast

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 1, 8, 9, 10
# Linux: let connect() pick the port for the whole 4-tuple, not bind() for the address alone.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Tally:
    """Deliveries counted across many clients, with one waiter for a running total."""

    __slots__ = ("_target", "_waiter", "last_ns", "latencies_ns", "total")

    def __init__(self) -> None:
        self.total = 0
        self.last_ns = 0
        self.latencies_ns: list[int] | None = None
        self._target = 0
        self._waiter: asyncio.Future[None] | None = None

    def reset(self, *, latency: bool = False) -> None:
        self.total = 0
        self.last_ns = 0
        self.latencies_ns = [] if latency else None

    def check(self) -> None:
        """Called after each receive: wake the waiter once its total is reached."""
        waiter = self._waiter
        if waiter is not None and self.total >= self._target and not waiter.done():
            waiter.set_result(None)

    async def wait_for(self, total: int, timeout_s: float) -> bool:
        """Wait until `total` deliveries were counted; False on timeout."""
        if self.total >= total:
            return True
        self._target = total
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._waiter
            return True
        except TimeoutError:
            return False
        finally:
            self._waiter = None


def mask_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One client-to-server frame (clients must mask, RFC 6455 section 5.3)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return header + key + masked


@functools.cache
def _send_time_pattern(ts_key: bytes) -> "re.Pattern[bytes]":
    return re.compile(re.escape(ts_key) + rb" ?(\d+)")


class HandshakeError(ConnectionError):
    """The server did not answer the upgrade with 101, or closed before it."""


class WsClient(asyncio.Protocol):
    """WebSocket transport: upgrade, frame parsing, ping/pong, close. No fragmentation.

    `marker` is the byte string that starts each delivery in a text frame. A text frame is a
    delivery when its byte at `probe_at` is `probe`; the others go to `on_control_message`,
    which subclasses use for their handshake and command replies.
    """

    marker: bytes = b"\0"
    probe_at: int = 0
    probe: int = 0
    ts_key: bytes = b'"ts":'
    timed = True  # False: deliveries are counted, not timed
    _send_times = _send_time_pattern(ts_key)  # compiled once per class, not per search

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._send_times = _send_time_pattern(cls.ts_key)

    def __init__(self, tally: Tally, path: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.tally = tally
        self.path = path
        self.headers = headers
        self.count = 0
        self.close_code: int | None = None
        self.errors: list[str] = []
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._stride = 0  # length of the last delivery frame, header included
        self._stride_checks: list[tuple[int, bytes]] = []
        self._upgraded = False
        self._key = base64.b64encode(os.urandom(16))
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- transport ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc}"))

    def send_text(self, text: str | bytes) -> None:
        assert self.transport is not None
        payload = text.encode() if isinstance(text, str) else text
        self.transport.write(mask_frame(payload))

    def close(self) -> None:
        """Close without waiting for the server's close frame: the benchmark is over."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mask_frame((1000).to_bytes(2, "big"), OP_CLOSE))
            self.transport.close()

    # -- receiving ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._upgraded:
            buf = self._upgrade(buf)
            if not buf:
                return
        now = time.perf_counter_ns()
        pos = self._strided(buf) if self._stride else 0
        if pos and self.tally.latencies_ns is not None and self.timed:
            self._latencies(buf, 0, pos, now)  # a run of deliveries: one search over all of it
        pos = self._frames(buf, pos, now)
        self._buf = buf[pos:] if pos < len(buf) else b""

    def _strided(self, buf: bytes) -> int:
        """Skip a run of deliveries exactly like the last one, in C; return where it ends.

        One socket receives one channel's publications, whose frames all have the same length
        when the payloads do: then every frame boundary is a multiple of that length, and the
        header bytes and probe byte of all of them can be checked with a few strided slices
        instead of a Python loop per frame. Anything else falls back to `_frames`.
        """
        stride = self._stride
        k = len(buf) // stride
        if k < 4:  # a few frames cost less in the loop than the slices do
            return 0
        end = k * stride
        for offset, byte in self._stride_checks:
            if buf[offset:end:stride] != byte * k:
                return 0
        return end

    def _upgrade(self, buf: bytes) -> bytes:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._buf = buf
            return b""
        head, rest = buf[:end], buf[end + 4 :]
        status = head.split(b"\r\n", 1)[0]
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest())
        if b" 101 " not in status + b" " or accept not in head:
            self._fail(HandshakeError(f"upgrade refused: {head[:300]!r} {rest[:300]!r}"))
            assert self.transport is not None
            self.transport.close()
            return b""
        self._upgraded = True
        self._buf = b""
        self.on_upgraded()
        return rest

    def _frames(self, buf: bytes, pos: int, now: int) -> int:
        """Handle every complete frame in `buf` from `pos`; return where the incomplete tail
        starts.

        Per frame, only the header and one probe byte are looked at in Python (each bytecode
        counts at hundreds of thousands of frames per second); deliveries are then counted in
        one `bytes.count` over all the complete frames, which also counts several messages
        sharing one frame.
        """
        n = len(buf)
        probe_at, probe = self.probe_at, self.probe
        record = self.tally.latencies_ns if self.timed else None
        # When only deliveries carry `ts_key`, those of the whole read are timed by one search
        # after the loop: a search per frame costs several times more per delivery.
        timed_from = pos if record is not None and self.ts_key == self.marker else -1
        if timed_from >= 0:
            record = None
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            if buf[pos] & 0x0F != OP_TEXT:
                self._control_frame(buf[pos] & 0x0F, buf[start:end])
            elif length <= probe_at or buf[start + probe_at] != probe:
                self.on_control_message(buf[start:end])
            else:
                if record is not None:
                    self._latencies(buf, start, end, now)
                if end - pos != self._stride:
                    self._learn_stride(buf[pos:start], end - pos)
            pos = end
        if pos > timed_from >= 0:
            self._latencies(buf, timed_from, pos, now)
        delivered = buf.count(self.marker, 0, pos) if pos else 0
        if delivered:
            self.count += delivered
            tally = self.tally
            tally.total += delivered
            tally.last_ns = now
            tally.check()
        return pos

    def _learn_stride(self, header: bytes, stride: int) -> None:
        checks = [(i, header[i : i + 1]) for i in range(len(header))]
        checks.append((len(header) + self.probe_at, bytes((self.probe,))))
        self._stride, self._stride_checks = stride, checks

    def _latencies(self, buf: bytes, start: int, end: int, now: int) -> None:
        """Time every delivery between `start` and `end`: each carries its send time after
        `ts_key`, found by one regular-expression search in C (this runs for every delivery
        while latencies are recorded, at hundreds of thousands per second)."""
        record = self.tally.latencies_ns
        assert record is not None
        record.extend(now - int(sent) for sent in self._send_times.findall(buf, start, end))

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == OP_PING:
            self.transport.write(mask_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._fail(ConnectionError(f"closed by server: {self.close_code} {payload[2:]!r}"))
            self.close()
        elif opcode != OP_PONG:
            self.errors.append(f"unexpected opcode {opcode}")

    def _fail(self, error: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(error)
        self.on_failure(error)

    # -- for subclasses ----------------------------------------------------------------------

    def on_upgraded(self) -> None:
        """The HTTP upgrade succeeded; protocols without their own handshake are open now."""
        self.opened.set_result(None)

    def on_control_message(self, payload: bytes) -> None:
        """A text frame that carries no delivery."""

    def on_failure(self, error: Exception) -> None:
        """The connection failed or was closed: fail whatever the subclass is waiting for."""


C = TypeVar("C", bound=WsClient)


async def open_client(client: C, host: str, port: int, local_ip: str, timeout_s: float = 30.0) -> C:
    """Connect from `local_ip` (127.0.0.x spreads ports) and wait until the client is open."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((local_ip, 0))
        sock.setblocking(False)
        async with asyncio.timeout(timeout_s):
            await loop.sock_connect(sock, (host, port))
            await loop.create_connection(lambda: client, sock=sock)
            await client.opened
    except BaseException:
        sock.close()
        client.close()
        raise
    return client


def source_ip(index: int, spread: int = 200) -> str:
    """The loopback source address of client `index`: 127.0.0.2 to 127.0.0.(spread+1)."""
    return f"127.0.0.{2 + index % spread}"
