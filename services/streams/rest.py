"""PTG's REST surface: `/ping`, `/streams`, `/streams/{id}`, `/data/{ids}`."""

from aiohttp import web

from services.common.web import json_errors

from .auth import authenticate
from .keys import redis_key


def setup(app: web.Application) -> None:
    for path in ("/ping", "/ping/"):
        app.router.add_get(path, ping)


@json_errors
async def ping(request: web.Request) -> web.Response:
    """PTG answers Redis's PING result: `true`."""
    await authenticate(request)
    return web.json_response(bool(await request.app[redis_key].ping()))
