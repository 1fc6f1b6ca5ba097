"""Wires the frames API into the streams app: state, routes, background loops, shutdown."""

from collections.abc import AsyncIterator

from aiohttp import web

from services.common.errors import CloseCode
from services.common.tasks import supervised

from ..keys import redis_key, registry_key, settings_key
from .hub import FrameHub
from .keys import hub_key, limiter_key, metrics_key, sockets_key, store_key
from .layout import FrameKeys
from .metrics import FramesMetrics
from .ratelimit import RateLimiter
from .routes import routes as http_routes
from .sockets import routes as socket_routes
from .store import FrameStore, Retention


def install(app: web.Application) -> None:
    """Add the frames routes and their background tasks to the streams app."""
    app[metrics_key] = FramesMetrics(app[registry_key])
    app[sockets_key] = set()
    app.add_routes(http_routes)
    app.add_routes(socket_routes)
    app.cleanup_ctx.append(_frames_ctx)
    app.cleanup_ctx.append(supervised("frames-read-loop", _read_loop))
    app.cleanup_ctx.append(supervised("frames-label-refresh", _refresh_labels))
    app.on_shutdown.append(_close_sockets)


async def _frames_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build the store, hub and limiter once Redis is in the app (cleanup_ctx order)."""
    settings = app[settings_key].frames
    redis = app[redis_key]
    keys = FrameKeys(settings.key_prefix)
    retention = Retention(maxlen=settings.maxlen, exact=settings.maxlen_exact, ttl_s=settings.ttl_s)
    store = FrameStore(redis, keys, retention)
    app[store_key] = store
    app[hub_key] = FrameHub(
        store,
        redis,
        app[metrics_key],
        block_ms=settings.read_block_ms,
        count=settings.read_count,
        label_refresh_s=settings.label_refresh_s,
    )
    app[limiter_key] = RateLimiter(
        redis, keys, limit=settings.labels_rate, window_s=settings.labels_rate_window_s
    )
    yield


async def _read_loop(app: web.Application) -> None:
    await app[hub_key].run(app[settings_key].redis)


async def _refresh_labels(app: web.Application) -> None:
    await app[hub_key].refresh_labels()


async def _close_sockets(app: web.Application) -> None:
    sockets = app[sockets_key]
    for ws in list(sockets):
        await ws.close(code=CloseCode.SERVICE_RESTART, message=b"server shutdown")
