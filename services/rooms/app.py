"""Application factory for the rooms service."""

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from services.common.auth import RevocationList, TokenVerifier
from services.common.metrics import install_metrics
from services.common.openapi import add_openapi_routes
from services.common.redis import Keys, make_client, redis_ctx
from services.common.tasks import supervised
from services.common.web import add_health_routes

from .keys import (
    consumer_key,
    metrics_key,
    redis_key,
    revocations_key,
    settings_key,
    store_key,
    verifier_key,
)
from .metrics import RoomsMetrics
from .openapi import document
from .routes import routes
from .settings import RoomsSettings
from .store import Limits, RoomStore
from .worker import CommandConsumer, ConsumerSettings


def create_app(settings: RoomsSettings, *, redis: Redis | None = None) -> web.Application:
    """Build the rooms app; `redis` lets tests inject a client they own."""
    app = web.Application()
    app[settings_key] = settings
    app[metrics_key] = RoomsMetrics(install_metrics(app))
    app[verifier_key] = TokenVerifier(settings.jwt)

    # Order matters: each context uses what the previous ones stored; teardown is reversed.
    app.cleanup_ctx.append(redis_ctx(redis_key, settings.redis, client=redis))
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(supervised("room-commands", lambda a: a[consumer_key].run()))
    app.cleanup_ctx.append(supervised("room-reaper", _reap))
    app.cleanup_ctx.append(supervised("room-stats", _stats))
    app.on_shutdown.append(_stop_consuming)

    app.add_routes(routes)
    add_health_routes(app, _ready)
    add_openapi_routes(app, document())
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    keys = Keys(settings.redis.key_prefix)
    redis = app[redis_key]
    store = RoomStore(
        redis,
        keys,
        Limits(
            idle_ttl_ms=settings.idle_ttl_ms,
            max_rooms=settings.max_rooms,
            max_state_bytes=settings.max_state_bytes,
        ),
        on_read=lambda reason, rooms: app[metrics_key].state_reads.labels(reason).inc(rooms),
    )
    app[store_key] = store
    app[consumer_key] = CommandConsumer(
        redis,
        keys,
        store,
        ConsumerSettings(
            consumer=settings.consumer,
            batch=settings.batch,
            block_ms=settings.block_ms,
            claim_idle_ms=settings.claim_idle_ms,
        ),
        observe=app[metrics_key].observe,
    )
    zou_redis = None
    if settings.jwt.revocation_db is not None:
        zou_redis = make_client(settings.redis, db=settings.jwt.revocation_db)
    app[revocations_key] = RevocationList(redis, keys, zou_redis=zou_redis)
    try:
        yield
    finally:
        if zou_redis is not None:
            await zou_redis.aclose()


async def _reap(app: web.Application) -> None:
    """Remove members whose gateway stopped renewing them; forget rooms that expired."""
    store, metrics = app[store_key], app[metrics_key]
    interval = app[settings_key].reap_interval_s
    while True:
        for room in await store.due(int(time.time() * 1000)):
            removed = await store.reap(room, int(time.time() * 1000))
            if removed > 0:
                metrics.reaped.inc(removed)
        await asyncio.sleep(interval)


async def _stats(app: web.Application) -> None:
    store, metrics, consumer = app[store_key], app[metrics_key], app[consumer_key]
    while True:
        rooms = await store.all_ids()
        metrics.rooms.set(len(rooms))
        metrics.members.set(await store.members_total(rooms))
        lag = await consumer.lag()
        if lag is not None:
            metrics.lag.set(lag)
        await asyncio.sleep(app[settings_key].stats_interval_s)


async def _stop_consuming(app: web.Application) -> None:
    # Before cleanup cancels the tasks: the batch in hand is applied and acked, not dropped.
    await app[consumer_key].stop(app[settings_key].shutdown_timeout_s / 2)


async def _ready(app: web.Application) -> dict[str, bool]:
    try:
        redis_ok = bool(await app[redis_key].ping())
    except Exception:  # readiness reports any failure as "not ready"
        redis_ok = False
    return {"redis": redis_ok, "consumer": app[consumer_key].ready}
