"""Operator REST views (admin scope): list, read and delete rooms."""

from aiohttp import web

from services.common.auth import require_scope
from services.common.errors import (
    BadRequest,
    ErrorCode,
    ServiceError,
)
from services.common.rooms import check_room
from services.common.web import json_errors

from .keys import revocations_key, store_key, verifier_key

routes = web.RouteTableDef()
MAX_LIST = 10_000


class RoomNotFound(ServiceError):
    code = ErrorCode.UNKNOWN_CHANNEL
    http_status = 404


async def _require_admin(request: web.Request) -> None:
    app = request.app
    await require_scope(request, app[verifier_key], app[revocations_key], "admin")


def _room(request: web.Request) -> str:
    return check_room(request.match_info["room"])


@routes.get("/rooms")
@json_errors
async def list_rooms(request: web.Request) -> web.Response:
    await _require_admin(request)
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 0 < limit <= MAX_LIST:
        raise BadRequest(f"limit must be 1-{MAX_LIST}")
    store = request.app[store_key]
    rooms = await store.list_rooms(limit)
    return web.json_response({"rooms": rooms, "total": await store.count()})


@routes.get("/rooms/{room}")
@json_errors
async def get_room(request: web.Request) -> web.Response:
    await _require_admin(request)
    room = _room(request)
    found = await request.app[store_key].describe(room)
    if found is None:
        raise RoomNotFound(f"no room {room!r}")
    return web.json_response(found)


@routes.delete("/rooms/{room}")
@json_errors
async def delete_room(request: web.Request) -> web.Response:
    await _require_admin(request)
    room = _room(request)
    version = await request.app[store_key].delete(room)
    if version is None:
        raise RoomNotFound(f"no room {room!r}")
    return web.json_response({"room": room, "version": version, "deleted": True})
