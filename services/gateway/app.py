"""Application factory for the WebSocket gateway."""

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from services.common.errors import CloseCode
from services.common.metrics import install_metrics
from services.common.openapi import add_openapi_routes
from services.common.redis import make_client, redis_ctx
from services.common.tasks import supervised
from services.common.web import add_health_routes

from .commands import Commands
from .demo import setup_demo
from .keys import commands_key, metrics_key, node_key, redis_key, settings_key
from .metrics import GatewayMetrics
from .node import GatewayNode
from .openapi import document
from .routes import routes
from .settings import GatewaySettings
from .socketio_server import setup_socketio
from .zeph import setup_zeph


def create_app(settings: GatewaySettings, *, redis: Redis | None = None) -> web.Application:
    """Build the gateway app; `redis` lets tests inject a client they own."""
    # No middleware and no sub-app (aiohttp would wrap every view, /ws included, in a frame
    # each idle socket holds): API views render their errors with `json_errors`.
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[settings_key] = settings
    app[metrics_key] = GatewayMetrics(install_metrics(app))

    # Order matters: each context uses what the previous ones stored; teardown is reversed.
    app.cleanup_ctx.append(redis_ctx(redis_key, settings.redis, client=redis))
    app.cleanup_ctx.append(_node_ctx)
    app.cleanup_ctx.append(supervised("redis-pubsub", lambda a: a[node_key].subscriber.run()))
    app.cleanup_ctx.append(supervised("presence-refresh", lambda a: a[node_key].refresh_presence()))
    app.cleanup_ctx.append(supervised("node-report", lambda a: a[node_key].report()))
    app.cleanup_ctx.append(supervised("sweep", lambda a: a[node_key].sweep()))
    app.cleanup_ctx.append(supervised("room-heartbeat", lambda a: a[node_key].renew_rooms()))
    app.on_shutdown.append(_close_connections)

    app.add_routes(routes)
    setup_socketio(app, settings)  # /socket.io/ for Kitsu and gazu
    setup_zeph(app)  # /zeph for Zephclient
    setup_demo(app)  # /demo when GATEWAY_DEMO is on
    add_health_routes(app, _ready)
    add_openapi_routes(app, document())
    return app


async def _node_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    zou_redis = None
    if settings.jwt.revocation_db is not None:
        zou_redis = make_client(settings.redis, db=settings.jwt.revocation_db)
    node = GatewayNode(settings, app[redis_key], zou_redis=zou_redis)
    app[node_key] = node
    app[commands_key] = commands = Commands(node)
    app[metrics_key].watch(node, commands)
    try:
        yield
    finally:
        if zou_redis is not None:
            await zou_redis.aclose()


async def _close_connections(app: web.Application) -> None:
    # Runs before aiohttp's shutdown timeout starts; clients reconnect to another process.
    node = app[node_key]
    node.shutting_down = True
    await node.close_all(CloseCode.SERVICE_RESTART, "server shutdown")


async def _ready(app: web.Application) -> dict[str, bool]:
    node = app[node_key]
    try:
        redis_ok = bool(await app[redis_key].ping())
    except Exception:  # readiness reports any failure as "not ready"
        redis_ok = False
    return {
        "redis": redis_ok,
        "pubsub": node.subscriber.connected,
        "accepting": not node.shutting_down,
    }
