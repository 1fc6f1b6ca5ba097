"""What push and pull sockets share: refusing bad input with an error frame, and shutdown."""

import logging
import weakref

from aiohttp import WSCloseCode, web
from redis.exceptions import RedisError

from services.common.errors import InternalError, NotAvailable, PermissionDenied, ServiceError

from .closes import StreamClose, StreamError
from .keys import registry_key, settings_key
from .metrics import StreamsMetrics

log = logging.getLogger(__name__)


class OpenSockets:
    """The app's open push and pull sockets (weakly held), for closing them on shutdown."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    def add(self, ws: web.WebSocketResponse) -> None:
        self._sockets.add(ws)

    def all(self) -> list[web.WebSocketResponse]:
        return list(self._sockets)


sockets_key = web.AppKey("sockets", OpenSockets)
metrics_key = web.AppKey("streams_metrics", StreamsMetrics)


def setup(app: web.Application) -> None:
    app[sockets_key] = OpenSockets()
    app[metrics_key] = StreamsMetrics(app[registry_key])
    app.on_shutdown.append(_close_all)


async def _close_all(app: web.Application) -> None:
    """Tell every socket the service is restarting (1012): clients reconnect and resume."""
    for ws in app[sockets_key].all():
        await ws.close(code=StreamClose.SERVICE_RESTART, message=b"service restarting")


async def open_socket(request: web.Request) -> web.WebSocketResponse:
    """Accept the WebSocket (whole batches up to `STREAMS_MAX_MESSAGE_BYTES`) and track it."""
    ws = web.WebSocketResponse(
        max_msg_size=request.app[settings_key].max_message_bytes, heartbeat=30.0
    )
    await ws.prepare(request)
    request.app[sockets_key].add(ws)
    return ws


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
