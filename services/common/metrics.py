"""Prometheus exposition: one registry per app, so tests can build many apps in one process."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def install_metrics(app: web.Application) -> CollectorRegistry:
    registry = CollectorRegistry()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/metrics", metrics)
    return registry
