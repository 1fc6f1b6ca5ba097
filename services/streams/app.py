"""Application factory for the streams service."""

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from services.common.auth import RevocationList, TokenVerifier
from services.common.bus import Bus
from services.common.metrics import install_metrics
from services.common.openapi import add_openapi_routes
from services.common.redis import Keys, make_client, redis_ctx
from services.common.tasks import supervised
from services.common.web import add_health_routes

from . import frames, login, mjpeg, pull, push, rest, sockets
from .announce import Announcer, announcer_key
from .keys import redis_key, registry_key, revocations_key, settings_key, verifier_key
from .openapi import document
from .readers import ReadHub, hub_key
from .settings import StreamsSettings
from .sockets import metrics_key
from .store import StreamStore, store_key


def create_app(settings: StreamsSettings, *, redis: Redis | None = None) -> web.Application:
    """Build the streams app; `redis` lets tests inject a client they own."""
    app = web.Application(client_max_size=settings.max_message_bytes)
    app[settings_key] = settings
    app[registry_key] = install_metrics(app)
    app[verifier_key] = TokenVerifier(settings.jwt)
    app.cleanup_ctx.append(redis_ctx(redis_key, settings.redis, client=redis))
    app.cleanup_ctx.append(_revocations_ctx)
    app.cleanup_ctx.append(_streams_ctx)
    app.cleanup_ctx.append(supervised("streams-read-hub", _run_hub))
    app.on_shutdown.append(_stop_readers)  # before the sockets close: no write after a close
    sockets.setup(app)
    login.setup(app)
    rest.setup(app)
    push.setup(app)
    pull.setup(app)
    mjpeg.setup(app)
    frames.setup(app)
    add_health_routes(app, _ready)
    add_openapi_routes(app, document())
    return app


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, redis = app[settings_key], app[redis_key]
    store = StreamStore(redis, settings)
    app[store_key] = store
    app[hub_key] = ReadHub(store, app[metrics_key], block_ms=settings.read_block_ms)
    app[announcer_key] = Announcer(Bus(redis, Keys(settings.redis.key_prefix)))
    yield


async def _run_hub(app: web.Application) -> None:
    await app[hub_key].run()


async def _stop_readers(app: web.Application) -> None:
    if hub_key in app:
        await app[hub_key].close_all()


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    zou_redis = None
    if settings.jwt.revocation_db is not None:
        zou_redis = make_client(settings.redis, db=settings.jwt.revocation_db)
    app[revocations_key] = RevocationList(
        app[redis_key], Keys(settings.redis.key_prefix), zou_redis=zou_redis
    )
    try:
        yield
    finally:
        if zou_redis is not None:
            await zou_redis.aclose()


async def _ready(app: web.Application) -> dict[str, bool]:
    try:
        redis_ok = bool(await app[redis_key].ping())
    except Exception:  # readiness reports any failure as "not ready"
        redis_ok = False
    return {"redis": redis_ok}
