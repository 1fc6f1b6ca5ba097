"""What push and pull sockets share: refusing bad input with an error frame, and shutdown."""

import asyncio
import logging
import struct
import weakref

from aiohttp import WSCloseCode, web
from redis.exceptions import RedisError

from services.common.errors import InternalError, NotAvailable, PermissionDenied, ServiceError

from .closes import StreamClose, StreamError
from .keys import registry_key, settings_key
from .metrics import StreamsMetrics

log = logging.getLogger(__name__)


SEND_HIGH_WATER = 1024 * 1024
CLOSE_GRACE_S = 5.0
CLOSE_POLL_S = 0.01
DRAIN_POLL_S = 0.005


class OpenSockets:
    """The app's open push and pull sockets (weakly held), for closing them on shutdown."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakKeyDictionary[web.WebSocketResponse, web.Request] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._sockets[ws] = request

    async def close_all(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Send every socket a 1012 close frame and let its handler see the client's answer.

        aiohttp's `ws.close()` from another task closes the connection as soon as the
        handler's pending read returns, while the client's last message may still be unread:
        the kernel then resets the connection and the client never reads the 1012. So the
        frame is written here, the handlers go on reading (a batch already sent is stored and
        acked) until the client's close frame ends them, and only sockets still open after
        `grace_s` are closed by aiohttp.
        """
        reason = b"service restarting"
        payload = struct.pack("!H", StreamClose.SERVICE_RESTART) + reason
        frame = _frame_head(0x8, len(payload)) + payload
        sockets = list(self._sockets.items())
        for ws, request in sockets:
            transport = request.transport
            if not ws.closed and transport is not None and not transport.is_closing():
                transport.write(frame)
        for _ in range(int(grace_s / CLOSE_POLL_S)):
            if all(ws.closed for ws, _ in sockets):
                break
            await asyncio.sleep(CLOSE_POLL_S)
        for ws, _ in sockets:
            if not ws.closed:
                await ws.close(code=StreamClose.SERVICE_RESTART, message=reason)


sockets_key = web.AppKey("sockets", OpenSockets)
metrics_key = web.AppKey("streams_metrics", StreamsMetrics)


def setup(app: web.Application) -> None:
    app[sockets_key] = OpenSockets()
    app[metrics_key] = StreamsMetrics(app[registry_key])
    app.on_shutdown.append(_close_all)


async def _close_all(app: web.Application) -> None:
    """Tell every socket the service is restarting (1012): clients reconnect and resume."""
    await app[sockets_key].close_all()


async def open_socket(request: web.Request) -> web.WebSocketResponse:
    """Accept the WebSocket (whole batches up to `STREAMS_MAX_MESSAGE_BYTES`) and track it."""
    # No permessage-deflate: entries are mostly compressed media already.
    ws = web.WebSocketResponse(
        max_msg_size=request.app[settings_key].max_message_bytes, heartbeat=30.0, compress=False
    )
    await ws.prepare(request)
    request.app[sockets_key].add(ws, request)
    return ws


def _frame_head(opcode: int, length: int) -> bytes:
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def pair_frames(header: str, body: bytes) -> tuple[bytes, bytes]:
    """A pull batch as wire bytes: (text frame + binary frame head, binary payload)."""
    text = header.encode()
    return _frame_head(0x1, len(text)) + text + _frame_head(0x2, len(body)), body


def write_pair(request: web.Request, frames: tuple[bytes, bytes]) -> bool:
    """Write a text frame and a binary frame in one write to the socket, if it has room.

    aiohttp writes every frame with its own send(); a pull batch is always two frames, and on
    a hundred readers those syscalls were most of the fan-out's cost. The frames are plain
    unmasked, uncompressed RFC 6455 frames (`pair_frames`) written with no await in between,
    so nothing can interleave with them. False (nothing written) while the socket's buffer is
    over `SEND_HIGH_WATER`: the caller waits for `drained`.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("socket closed")
    if transport.get_write_buffer_size() > SEND_HIGH_WATER:
        return False
    transport.writelines(frames)
    return True


async def drained(request: web.Request) -> None:
    """Wait until the socket's send buffer is under `SEND_HIGH_WATER`."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("socket closed")
        if transport.get_write_buffer_size() <= SEND_HIGH_WATER:
            return
        await asyncio.sleep(DRAIN_POLL_S)


def close_code_of(exc: BaseException) -> int:
    if isinstance(exc, StreamError):
        return int(exc.close)
    if isinstance(exc, PermissionDenied):
        return int(StreamClose.FORBIDDEN)
    if isinstance(exc, ServiceError) and exc.http_status < 500:
        return int(StreamClose.BAD_HEADER)
    return int(WSCloseCode.INTERNAL_ERROR)


async def refuse(request: web.Request, ws: web.WebSocketResponse, exc: BaseException) -> None:
    """Send `{"error": {...}}` for `exc`, then close with its close code."""
    if isinstance(exc, RedisError):
        error: ServiceError = NotAvailable("redis unavailable")
    elif isinstance(exc, ServiceError):
        error = exc
    else:
        log.exception("stream socket failed", exc_info=exc, extra={"path": request.path})
        error = InternalError()
    code = close_code_of(error)
    body = error.to_dict()
    body.setdefault("close", code)
    request.app[metrics_key].refused.labels(str(code)).inc()
    if not ws.closed:
        try:
            await ws.send_json({"error": body})
            await ws.close(code=code, message=error.message[:120].encode())
        except (ConnectionError, RuntimeError):
            pass
