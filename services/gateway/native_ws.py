"""The native /ws endpoint on a plain asyncio Protocol, below aiohttp's per-request objects.

Served by aiohttp's WebSocketResponse, an idle socket holds a request, a response, a writer,
the HTTP protocol object, the handler task and its suspended frames: about 9 KB, which puts a
gateway over its budget of 12 KB per idle connection. Here it holds the transport, aiohttp's
frame reader and queue, and the `ClientConnection`; a task runs only while commands are being
handled.

`FrontDoor` is the listening socket's protocol factory. A connection whose first request is a
valid WebSocket upgrade of `/ws` is answered here, with the same admission checks as the aiohttp
view (`GatewayNode.admit`); every other connection, and any such request that is not a valid
upgrade, is handed to aiohttp's own protocol with the bytes read so far, untouched. A keep-alive
connection that upgrades later reaches the aiohttp view in services/gateway/routes.py, which runs
the same commands.
"""

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any, cast

from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import WS_KEY, HttpRequestParser, WebSocketError, WebSocketReader
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EofStream

from services.common.errors import CloseCode, ServiceError
from services.common.tasks import spawn

from .commands import Commands
from .connection import CLOSE_TIMEOUT_S, ClientConnection
from .node import GatewayNode
from .wire import close_frame, pong_frame

log = logging.getLogger(__name__)

_WS_REQUEST = (b"GET /ws ", b"GET /ws?")
_PREFIX_LEN = len(_WS_REQUEST[0])
_HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0  # a /ws request whose head does not arrive in time is dropped
_READ_LIMIT = 2**16  # bytes of parsed frames queued before reading pauses (aiohttp's default)
_NO_STATUS = 1005  # RFC 6455 7.4.1: what a close frame without a code counts as


class FrontDoor:
    """Protocol factory for the gateway's listening socket (see the module docstring)."""

    __slots__ = ("commands", "http", "node")

    def __init__(
        self, http: Callable[[], asyncio.Protocol], node: GatewayNode, commands: Commands
    ) -> None:
        self.http = http  # aiohttp's protocol factory (web.Server)
        self.node = node
        self.commands = commands

    def __call__(self) -> asyncio.Protocol:
        return FirstRequest(self)


class FirstRequest(asyncio.Protocol):
    """A new connection until its first request says who serves it."""

    __slots__ = ("_buf", "_door", "_timer", "_transport")

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Each outbox flush is one write; it must leave at once (aiohttp does the same).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        transport = self._transport
        assert transport is not None
        if len(buf) < _PREFIX_LEN and _WS_REQUEST[0].startswith(buf):
            self._buf = buf  # too short to tell
            return
        if not buf.startswith(_WS_REQUEST):
            self._hand_over(transport, buf)
            return
        end = buf.find(_HEAD_END)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                _answer(transport, 431, b"Request Header Fields Too Large")
                return
            self._buf = buf
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, transport.abort)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buf = b""
        transport.pause_reading()  # the client's first frames wait until the socket is ours
        spawn(self._upgrade(transport, buf))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _hand_over(self, transport: asyncio.Transport, buf: bytes) -> None:
        """Give the connection to aiohttp as if it had been aiohttp's from the start."""
        protocol = self._door.http()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if buf:
            protocol.data_received(buf)

    async def _upgrade(self, transport: asyncio.Transport, buf: bytes) -> None:
        """Answer a /ws request: 101 and a `NativeConnection`, an HTTP error, or aiohttp."""
        loop = asyncio.get_running_loop()
        parser = HttpRequestParser(BaseProtocol(loop), loop, _READ_LIMIT)
        try:
            messages, _, tail = parser.feed_data(buf)
            request = messages[0][0]
            accept = _accept_key(request.headers, request.upgrade)
        except (HttpProcessingError, IndexError):
            accept = None
        if accept is None:
            # Not a valid upgrade: aiohttp answers it exactly as it answers any other request.
            self._hand_over(transport, buf)
            transport.resume_reading()
            return
        door = self._door
        node = door.node
        try:
            claims = await node.admit(
                request.headers.get("Authorization", ""), _cookie(request.headers.get("Cookie"))
            )
        except ServiceError as exc:
            body = json.dumps({"error": exc.to_dict()}).encode()
            _answer(transport, exc.http_status, body, "application/json; charset=utf-8")
            return
        except Exception:
            log.exception("upgrade failed")
            _answer(transport, 500, b"Internal Server Error")
            return
        if transport.is_closing():
            return  # the client left while its token was checked
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        conn = NativeConnection(transport, door.commands)
        transport.set_protocol(conn)
        node.accept(conn)
        if claims is not None:
            node.attach(conn, claims)
        if tail:
            conn.data_received(tail)
        transport.resume_reading()


def _accept_key(headers: Any, upgrade: bool) -> bytes | None:
    """Sec-WebSocket-Accept for a valid upgrade request (RFC 6455 4.2.1), else None."""
    if not upgrade or headers.get("Upgrade", "").lower().strip() != "websocket":
        return None
    if headers.get("Sec-WebSocket-Version", "") not in ("13", "8", "7"):
        return None
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + WS_KEY).digest())


def _cookie(header: str | None) -> str | None:
    """Zou's `access_token_cookie` from a Cookie header."""
    if not header:
        return None
    try:
        morsel = SimpleCookie(header).get("access_token_cookie")
    except CookieError:
        return None
    return morsel.value if morsel is not None else None


def _answer(
    transport: asyncio.Transport, status: int, body: bytes, content_type: str = "text/plain"
) -> None:
    """An HTTP error in place of the upgrade, then close."""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()


def _read_now(queue: WebSocketDataQueue) -> Any:
    """The next frame of a queue that has one (or its end): `read()` then returns without
    waiting, so its coroutine runs to the end here, without a task."""
    reading = queue.read()
    try:
        reading.send(None)
    except StopIteration as done:
        return done.value
    reading.close()
    raise RuntimeError("no frame to read now")


class NativeConnection(ClientConnection, asyncio.Protocol):
    """A client socket after the upgrade: aiohttp's frame reader in front, commands behind."""

    __slots__ = (
        "_close_timer",
        "_draining",
        "_lost",
        "_peer_code",
        "_queue",
        "_reader",
        "_reading_paused",
        "commands",
    )

    def __init__(self, transport: asyncio.Transport, commands: Commands) -> None:
        node = commands.node
        limits = node.settings.limits
        super().__init__(transport, node.outbox, limits)
        self.commands = commands
        self._reading_paused = False  # read by aiohttp's queue
        # The queue uses only pause_reading, resume_reading and _reading_paused of its protocol.
        queue_protocol = cast(BaseProtocol, self)
        self._queue = WebSocketDataQueue(
            queue_protocol, _READ_LIMIT, loop=asyncio.get_running_loop()
        )
        # aiohttp refuses a frame whose size *equals* max_msg_size; the setting is inclusive.
        self._reader = WebSocketReader(self._queue, limits.max_message_bytes + 1, False, True)
        self._draining = False  # a command is being awaited: frames wait in the queue
        self._lost = False
        self._peer_code: int | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def peer_close_code(self) -> int | None:
        return self._peer_code

    # -- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._reader.feed_data(data)
        if not self._draining and (pending := self._run_frames()) is not None:
            self._draining = True
            spawn(self._drain(pending))

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._lost = True
        self._reader.feed_eof()
        if not self._draining:
            spawn(self.commands.node.detach(self))
        # else the command in flight finishes first (a subscribe must not outlive the detach)

    # Flow control asked for by aiohttp's queue when parsed frames pile up.
    def pause_reading(self) -> None:
        self._reading_paused = True
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        self.transport.resume_reading()

    # -- frames ------------------------------------------------------------------------------

    def _run_frames(self) -> Awaitable[None] | None:
        """Handle the frames read so far, in order, here and now while each command answers at
        once (most busy ones do); None when none is left, or what the first command that has
        to wait left to await: `_drain` awaits it in a task, then goes on from here."""
        queue = self._queue
        clock = asyncio.get_running_loop().time
        # `_buffer` is public on aiohttp's compiled queue; it tells "nothing left" without
        # waiting, so that no task stays parked on an idle socket.
        while queue._buffer or queue.exception() is not None:
            try:
                msg = _read_now(queue)
            except WebSocketError as exc:
                self._protocol_error(exc)
                return None
            except EofStream:
                return None
            self.last_seen = clock()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                try:
                    pending = self.commands.handle_frame(self, msg.data)
                except Exception:
                    self._internal_error()
                    return None
                if pending is not None:
                    return pending
            elif kind is WSMsgType.PING:
                if not self.transport.is_closing():
                    self.transport.write(pong_frame(msg.data))
            elif kind is WSMsgType.CLOSE:
                self._peer_closed(msg.data)
                return None
            elif kind is WSMsgType.BINARY:
                self.commands.bad_frame(self, "binary frames are not accepted")
        return None

    async def _drain(self, pending: Awaitable[None]) -> None:
        """Await what a command left, then handle the frames read meanwhile, until none is left
        (a subscribe must be done before the next command, and before a detach)."""
        try:
            while True:
                try:
                    await pending
                except Exception:
                    self._internal_error()
                    return
                if (waiting := self._run_frames()) is None:
                    return
                pending = waiting
        finally:
            self._draining = False
            if self._lost:
                spawn(self.commands.node.detach(self))

    def _internal_error(self) -> None:
        log.exception("command failed; closing", extra={"conn": self.id})
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _peer_closed(self, code: int) -> None:
        """The client's close frame: answer it (unless it answers ours) and close."""
        self._peer_code = code or _NO_STATUS
        self.closing = True
        transport = self.transport
        if self.close_code is None and not transport.is_closing():
            self.outbox.flush_peer(self)
            transport.write(close_frame(int(CloseCode.NORMAL), ""))
        transport.close()

    def _protocol_error(self, exc: WebSocketError) -> None:
        if exc.code == CloseCode.MESSAGE_TOO_BIG:
            log.info("frame over the size limit; closed with 1009", extra={"conn": self.id})
        else:
            log.info("websocket error", extra={"conn": self.id, "error": repr(exc)})
        self.closing = True
        self.close_code = exc.code
        if not self.transport.is_closing():
            self.transport.write(close_frame(exc.code, str(exc)))
            self.transport.close()

    def _send_close(self, code: CloseCode, reason: str) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(close_frame(int(code), reason))
        # A stalled reader never reads our close frame: drop the TCP connection then.
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)
