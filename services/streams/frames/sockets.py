"""WebSocket views of the frames API: `/ws/frames`, `/ws/labels/{label}`,
`/ws/stream/{label}/{key}`.

The token (`?token=`, `Authorization: Bearer`, cookie) is checked after the upgrade, so a browser
sees why it was refused: an error text frame `{"status": "error", "message", "error": {"code",
"message"}}`, then a close code:

| case                                   | code | close                    |
|----------------------------------------|------|--------------------------|
| no token, forged, revoked              | 101  | 4500 (do not reconnect)  |
| token expired (also while connected)   | 109  | 4001 (refresh, reconnect)|
| label/key not allowed by the token     | 103  | 4503                     |
| unknown label, or key of `/ws/stream`  | 102  | 1000 (as the backend)    |
| Redis unreachable                      | 108  | 1011                     |
| message over the size limit            | —    | 1009 (aiohttp)           |

Errors in one message (bad header, missing delimiter or field, oversized frame, a label the token
may not write, bad JSON action) get an error text frame and the socket stays open, as the
backend's producer and viewers expect a reply per message. Silence for `FRAMES_IDLE_TIMEOUT_S` on
`/ws/frames` and `/ws/stream` closes with 1000 "Receive timeout"; every socket is closed after
`FRAMES_MAX_SESSION_S` with the backend's `session_timeout` message (with the right duration).
"""

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from services.common.errors import (
    BadRequest,
    CloseCode,
    ErrorCode,
    InternalError,
    LimitExceeded,
    NotAvailable,
    PermissionDenied,
    ServiceError,
    TokenExpired,
    Unauthorized,
    UnknownChannel,
)

from ..keys import settings_key
from .access import LabelAccess
from .codec import DELIMITER, error_body, parse_upload, split_message
from .hub import Watcher
from .keys import hub_key, metrics_key, sockets_key, store_key
from .routes import STORED, request_access

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
MAX_PENDING_PULLS = 8
MAX_WAIT_S = 3600.0


class UnknownLabel(UnknownChannel):
    """No camera of this label (or this key) has frames."""


class FrameSocket:
    """A frames WebSocket after authentication: its deadline, error frames and close."""

    def __init__(
        self, ws: web.WebSocketResponse, access: LabelAccess, request: web.Request
    ) -> None:
        self.ws = ws
        self.access = access
        self.request = request
        self.settings = request.app[settings_key].frames
        self.metrics = request.app[metrics_key]
        now = time.time()
        session = self.settings.max_session_s
        self._session_end = now + session if session > 0 else math.inf
        exp = access.expires_at
        self._token_end = exp if exp is not None else math.inf

    def time_left(self) -> float:
        return min(self._session_end, self._token_end) - time.time()

    async def expire(self) -> None:
        if self._token_end <= self._session_end:
            await close_with(self.ws, TokenExpired("token expired"))
            return
        minutes = self.settings.max_session_s / 60
        await self.send_json(
            {
                "status": "closing",
                "reason": "session_timeout",
                "message": f"WebSocket session reached its {minutes:g}-minute limit.",
            }
        )
        await self.ws.close(code=CloseCode.NORMAL, message=b"session timeout")

    async def receive(self) -> Any:
        """The next message, or None once the socket is closed, idle, or out of time."""
        left = self.time_left()
        if left <= 0:
            await self.expire()
            return None
        try:
            msg = await self.ws.receive(timeout=min(self.settings.idle_timeout_s, left))
        except TimeoutError:
            if self.time_left() <= 0:
                await self.expire()
            else:
                await self.ws.close(code=CloseCode.NORMAL, message=b"Receive timeout")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        return msg

    async def send_json(self, body: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_str(json.dumps(body, separators=(",", ":")))

    async def send_error(self, exc: ServiceError) -> None:
        self.metrics.rejected.labels(str(int(exc.code))).inc()
        await self.send_json(error_body(int(exc.code), exc.message))


def close_code(exc: ServiceError) -> int:
    if isinstance(exc, TokenExpired):
        return CloseCode.TOKEN_EXPIRED
    if isinstance(exc, Unauthorized):
        return CloseCode.INVALID_TOKEN
    if isinstance(exc, PermissionDenied):
        return CloseCode.FORBIDDEN
    if isinstance(exc, UnknownChannel):
        return CloseCode.NORMAL
    if isinstance(exc, NotAvailable | InternalError):
        return CloseCode.INTERNAL_ERROR
    return CloseCode.BAD_FRAME


async def close_with(ws: web.WebSocketResponse, exc: ServiceError) -> None:
    """The error frame (naming the close code, as the PTG sockets' do), then the close."""
    code = close_code(exc)
    body = error_body(int(exc.code), exc.message)
    body["error"]["close"] = code
    with contextlib.suppress(ConnectionResetError):
        await ws.send_str(json.dumps(body))
    await ws.close(code=code, message=exc.message.encode()[:120])


Session = Callable[[FrameSocket], Awaitable[None]]


async def run_socket(
    request: web.Request, endpoint: str, session: Session
) -> web.WebSocketResponse:
    """Upgrade, authenticate, run `session`, and turn what it raises into a close code."""
    settings = request.app[settings_key].frames
    metrics = request.app[metrics_key]
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s,
        compress=False,  # JPEG and PNG do not compress; deflate would only cost CPU
        max_msg_size=settings.max_frame_bytes + settings.max_header_bytes + len(DELIMITER),
    )
    await ws.prepare(request)
    sockets = request.app[sockets_key]
    sockets.add(ws)
    metrics.sockets.labels(endpoint).inc()
    try:
        access = await request_access(request)
        await session(FrameSocket(ws, access, request))
    except ServiceError as exc:
        metrics.rejected.labels(str(int(exc.code))).inc()
        await close_with(ws, exc)
    except RedisError:
        await close_with(ws, NotAvailable("temporarily unavailable"))
    except Exception:  # the socket's boundary: a bug closes this socket only, with 1011
        log.exception("frames socket failed", extra={"path": request.path})
        await close_with(ws, InternalError())
    finally:
        sockets.discard(ws)
        metrics.sockets.labels(endpoint).dec()
        if not ws.closed:
            await ws.close()
    return ws


@routes.get("/ws/frames")
async def ws_frames(request: web.Request) -> web.WebSocketResponse:
    """Ingest: each binary message is one frame; each gets a JSON reply."""
    return await run_socket(request, "frames", _ingest)


async def _ingest(sock: FrameSocket) -> None:
    app = sock.request.app
    store, hub = app[store_key], app[hub_key]
    while (msg := await sock.receive()) is not None:
        if msg.type != WSMsgType.BINARY:
            await sock.send_error(BadRequest("Invalid data format: expected a binary message"))
            continue
        try:
            header, frame = split_message(msg.data, sock.settings.max_header_bytes)
            upload = parse_upload(header, frame, sock.settings.max_frame_bytes)
            sock.access.require_write(upload.label, upload.key)
            started = time.perf_counter()
            stored = await store.add(upload)
        except ServiceError as exc:
            await sock.send_error(exc)
            continue
        except RedisError:
            await sock.send_error(NotAvailable("Failed to store frame: Redis unavailable"))
            continue
        sock.metrics.store_seconds.observe(time.perf_counter() - started)
        sock.metrics.stored.labels("ws").inc()
        sock.metrics.bytes_in.inc(len(upload.frame))
        if stored.new_key:
            hub.key_added(upload.label)
        await sock.send_json({**STORED, "id": stored.entry_id})


@routes.get("/ws/labels/{label}")
async def ws_labels(request: web.Request) -> web.WebSocketResponse:
    """Push the latest frame of every camera of a label, each time one changes."""
    return await run_socket(request, "labels", _push_label)


async def _push_label(sock: FrameSocket) -> None:
    app = sock.request.app
    label = sock.request.match_info["label"]
    sock.access.require_label(label)
    keys = await app[store_key].label_keys(label)
    keys = [key for key in keys if sock.access.can_read(label, key)]
    if not keys:
        raise UnknownLabel(f"No keys found for label {label!r}")
    watcher = Watcher(sock.metrics, allow=sock.access.can_read)
    hub = app[hub_key]
    try:
        await hub.watch_label(watcher, label, keys)
        await _push_until_closed(sock, watcher)
    finally:
        hub.unwatch(watcher)


async def _push_until_closed(sock: FrameSocket, watcher: Watcher) -> None:
    listener = asyncio.create_task(_answer_pings(sock, watcher))
    try:
        while not listener.done():
            left = sock.time_left()
            if left <= 0:
                await sock.expire()
                return
            for frame in await watcher.wait(min(left, MAX_WAIT_S)):
                await sock.ws.send_bytes(frame.message)
                sock.metrics.sent.labels("labels").inc()
                sock.metrics.bytes_out.inc(len(frame.message))
    except ConnectionResetError:
        return
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _answer_pings(sock: FrameSocket, watcher: Watcher) -> None:
    """Read what a label viewer sends (pings, the close frame) until the socket closes."""
    try:
        async for msg in sock.ws:
            if msg.type == WSMsgType.TEXT and _action(msg.data) == "ping":
                await sock.send_json({"action": "pong"})
    finally:
        watcher.wake()


def _action(data: str) -> str | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    # `type` is what the backend's own (stale) frontend sent.
    action = body.get("action", body.get("type"))
    return action if isinstance(action, str) else None


@routes.get("/ws/stream/{label}/{key}")
async def ws_stream(request: web.Request) -> web.WebSocketResponse:
    """One camera: `{"action": "pull"}` gets the next new frame, `{"action": "ping"}` a pong."""
    return await run_socket(request, "stream", _serve_pulls)


async def _serve_pulls(sock: FrameSocket) -> None:
    app = sock.request.app
    label, key = sock.request.match_info["label"], sock.request.match_info["key"]
    sock.access.require_read(label, key)
    store = app[store_key]
    if key not in await store.label_keys(label) and await store.latest(label, key) is None:
        raise UnknownLabel(f"No frames for label {label!r} key {key!r}")
    watcher = Watcher(sock.metrics)
    hub = app[hub_key]
    pulls: asyncio.Queue[None] = asyncio.Queue(MAX_PENDING_PULLS)
    sender = asyncio.create_task(_answer_pulls(sock, watcher, pulls))
    try:
        await hub.watch(watcher, label, key)
        while (msg := await sock.receive()) is not None:
            await _stream_action(sock, msg, pulls)
    finally:
        hub.unwatch(watcher)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def _stream_action(sock: FrameSocket, msg: Any, pulls: asyncio.Queue[None]) -> None:
    if msg.type != WSMsgType.TEXT:
        await sock.send_error(BadRequest("expected a JSON text message"))
        return
    try:
        body = json.loads(msg.data)
    except ValueError:
        await sock.send_error(BadRequest("Invalid JSON format"))
        return
    action = body.get("action", body.get("type")) if isinstance(body, dict) else None
    if action == "ping":
        await sock.send_json({"action": "pong"})
    elif action == "pull":
        try:
            pulls.put_nowait(None)
        except asyncio.QueueFull:
            await sock.send_error(LimitExceeded(f"more than {MAX_PENDING_PULLS} pulls pending"))
    else:
        await sock.send_error(BadRequest(f"unknown action {action!r}"))


async def _answer_pulls(sock: FrameSocket, watcher: Watcher, pulls: asyncio.Queue[None]) -> None:
    """Answer each pull with the newest frame not sent yet, waiting for one if need be."""
    timeout_s = sock.settings.pull_timeout_s
    while True:
        await pulls.get()
        frames = await watcher.wait(timeout_s)
        if not frames:
            message = f"no new frame within {timeout_s:g} s; pull again"
            await sock.send_json(error_body(int(ErrorCode.TIMEOUT), message))
            continue
        frame = frames[-1]
        try:
            await sock.ws.send_bytes(frame.message)
        except ConnectionResetError:
            return
        sock.metrics.sent.labels("stream").inc()
        sock.metrics.bytes_out.inc(len(frame.message))
