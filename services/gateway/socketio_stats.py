"""The Socket.IO endpoint's share of the cluster statistics (`/stats`): each gateway reports
its count of authenticated `/events` sockets beside the node's own report."""

import asyncio
import json
import time
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .socketio_server import SocketIOEndpoint


def _nodes_key(endpoint: "SocketIOEndpoint") -> str:
    return f"{endpoint.node.keys.nodes}:socketio"


async def report(endpoint: "SocketIOEndpoint") -> None:
    """Publish this process's Socket.IO connection count; runs until cancelled."""
    node = endpoint.node
    redis, interval, key = node.redis, endpoint.settings.node_report_s, _nodes_key(endpoint)
    try:
        while True:
            stats = {"connections": len(endpoint.sockets), "ts": time.time()}
            await redis.hset(key, node.id, json.dumps(stats))
            await asyncio.sleep(interval)
    finally:
        if node.shutting_down:
            await redis.hdel(key, node.id)


async def cluster_connections(endpoint: "SocketIOEndpoint") -> int:
    """Authenticated Socket.IO connections across the live gateways."""
    node = endpoint.node
    nodes = cast(dict[bytes, bytes], await node.redis.hgetall(_nodes_key(endpoint)))
    stale_after = 3 * endpoint.settings.node_report_s + 1
    now, own = time.time(), node.id.encode()
    total = len(endpoint.sockets)
    for name, raw in nodes.items():
        if name != own and now - json.loads(raw)["ts"] <= stale_after:
            total += json.loads(raw)["connections"]
    return total
