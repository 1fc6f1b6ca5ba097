"""Views: the WebSocket endpoint, the server API and the public status routes (thin)."""

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from services.common.auth import require_scope
from services.common.bus import Position, encode_data
from services.common.channels import Namespace
from services.common.errors import (
    BadRequest,
    CloseCode,
    ServiceError,
)
from services.common.web import json_body, json_errors

from .connection import AiohttpConnection
from .keys import commands_key, node_key
from .node import GatewayNode
from .socketio_server import socketio_key
from .socketio_stats import cluster_connections

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
VERSION = "0.1.0"


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    """/ws on a connection that made other requests first (keep-alive). A connection whose first
    request is the upgrade is served by services/gateway/native_ws.py instead, the same way but
    with less memory per socket; both run the same commands."""
    # Not wrapped in `json_errors`: its frame would stay suspended on every idle socket.
    node = request.app[node_key]
    limits = node.settings.limits
    try:
        claims = await node.admit(
            request.headers.get("Authorization", ""), request.cookies.get("access_token_cookie")
        )
    except ServiceError as exc:
        return web.json_response({"error": exc.to_dict()}, status=exc.http_status)
    # Pings and pongs are ours (autoping off, no aiohttp heartbeat): the node's sweep pings
    # every socket with one shared frame instead of two timers per connection.
    ws = web.WebSocketResponse(
        autoping=False,
        # aiohttp refuses a frame whose size *equals* max_msg_size; the setting is inclusive.
        max_msg_size=limits.max_message_bytes + 1,
        compress=False,
    )
    await ws.prepare(request)
    assert request.transport is not None
    conn = AiohttpConnection(ws, request.transport, node.outbox, limits)
    node.accept(conn)
    if claims is not None:
        node.attach(conn, claims)
    commands = request.app[commands_key]
    clock = asyncio.get_running_loop().time
    try:
        async for msg in ws:
            conn.last_seen = clock()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                if (pending := commands.handle_frame(conn, msg.data)) is not None:
                    await pending
            elif kind is WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind is WSMsgType.BINARY:
                commands.bad_frame(conn, "binary frames are not accepted")
            elif kind is WSMsgType.ERROR:
                log.info("websocket error", extra={"conn": conn.id, "error": repr(ws.exception())})
    finally:
        await node.detach(conn)
    if ws.close_code == CloseCode.MESSAGE_TOO_BIG:
        log.info("frame over the size limit; closed with 1009", extra={"conn": conn.id})
    return ws


# -- server API --------------------------------------------------------------------------


async def _require_scope(request: web.Request, *allowed: str) -> GatewayNode:
    node = request.app[node_key]
    await require_scope(request, node.verifier, node.revocations, *allowed, "admin")
    return node


def _data(body: dict[str, Any]) -> bytes:
    if "data" not in body:
        raise BadRequest("data is required")
    return encode_data(body["data"])


def _event(body: dict[str, Any]) -> str | None:
    event = body.get("event")
    if event is not None and (not isinstance(event, str) or not event):
        raise BadRequest("event must be a non-empty string")
    return event


@routes.post("/api/publish")
@json_errors
async def api_publish(request: web.Request) -> web.Response:
    node = await _require_scope(request, "publish")
    body = await json_body(request, node.settings.limits.max_message_bytes)
    channel = body.get("channel")
    namespace = node.settings.namespaces.of(channel)
    assert isinstance(channel, str)
    position = await node.bus.publish(
        channel, _data(body), namespace, event=_event(body), source="api"
    )
    return web.json_response({"offset": position.offset, "epoch": position.epoch})


@routes.post("/api/broadcast")
@json_errors
async def api_broadcast(request: web.Request) -> web.Response:
    node = await _require_scope(request, "publish")
    body = await json_body(request, node.settings.limits.max_message_bytes)
    channels = body.get("channels")
    if not isinstance(channels, list) or not channels:
        raise BadRequest("channels must be a non-empty list")
    data, event = _data(body), _event(body)
    results: list[dict[str, Any]] = []
    for channel in channels:
        try:
            namespace = node.settings.namespaces.of(channel)
            position = await node.bus.publish(channel, data, namespace, event=event, source="api")
            results.append({"offset": position.offset, "epoch": position.epoch})
        except ServiceError as exc:
            results.append({"error": exc.to_dict()})
    return web.json_response({"results": results})


def _query_channel(request: web.Request, node: GatewayNode) -> tuple[str, Namespace]:
    channel = request.query.get("channel")
    namespace = node.settings.namespaces.of(channel)
    assert channel is not None
    return channel, namespace


@routes.get("/api/history")
@json_errors
async def api_history(request: web.Request) -> web.Response:
    node = await _require_scope(request, "publish")
    channel, namespace = _query_channel(request, node)
    try:
        limit = int(request.query.get("limit", namespace.history_size))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    since = None
    if "since" in request.query:
        since = Position(request.query["since"], request.query.get("epoch", ""))
    body = await node.history(channel, namespace, since, limit)
    return web.Response(body=body, content_type="application/json")


@routes.get("/api/presence")
@json_errors
async def api_presence(request: web.Request) -> web.Response:
    node = await _require_scope(request, "publish")
    channel, namespace = _query_channel(request, node)
    return web.json_response({"clients": await node.who(channel, namespace)})


@routes.post("/api/disconnect")
@json_errors
async def api_disconnect(request: web.Request) -> web.Response:
    node = await _require_scope(request, "admin")
    body = await json_body(request, 64 * 1024)
    user = body.get("user")
    if not isinstance(user, str) or not user:
        raise BadRequest("user must be a non-empty string")
    await node.broadcast_control({"op": "disconnect", "user": user})
    return web.json_response({})


@routes.post("/api/revoke")
@json_errors
async def api_revoke(request: web.Request) -> web.Response:
    node = await _require_scope(request, "admin")
    body = await json_body(request, 64 * 1024)
    jti, ttl = body.get("jti"), body.get("ttl", 7 * 24 * 3600)
    if not isinstance(jti, str) or not jti:
        raise BadRequest("jti must be a non-empty string")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        raise BadRequest("ttl must be a positive number of seconds")
    await node.revocations.revoke(jti, ttl)
    await node.broadcast_control({"op": "revoke", "jti": jti})
    return web.json_response({})


# -- public status -------------------------------------------------------------------------


@routes.get("/")
async def index(_: web.Request) -> web.Response:
    # Zou's event stream answers this body; its health check only needs an answer.
    return web.json_response({"name": "Zou Event stream", "version": VERSION})


@routes.get("/stats")
async def stats(request: web.Request) -> web.Response:
    # Zou's `nb_connections`, over the whole cluster: native and Socket.IO sockets.
    node, endpoint = request.app[node_key], request.app[socketio_key]
    local, local_sio = len(node.connections), len(endpoint.sockets)
    try:
        total, nodes = await node.cluster_connections()
        total_sio = await cluster_connections(endpoint)
    except RedisError:
        total, nodes, total_sio = local, 1, local_sio
    return web.json_response(
        {
            "nb_connections": total + total_sio,
            "local_connections": local + local_sio,
            "socketio_connections": total_sio,
            "nodes": nodes,
            "local_channels": node.hub.channel_count,
            "redis_connected": node.subscriber.connected,
        }
    )
