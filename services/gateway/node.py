"""The gateway process as a whole: its connections, and what it shares with the other gateways.

Holds the local registry (connections by id and by user), authenticates tokens (signature,
expiry, revocation), detaches connections cleanly, obeys cluster commands received on the
control channel (disconnect a user, revoke a token) and reports its connection count so that
`/stats` can give the whole cluster's.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.common.auth import (
    Claims,
    RevocationList,
    TokenVerifier,
    bearer_of,
    check_not_revoked,
)
from services.common.bus import Bus, Position
from services.common.channels import Namespace
from services.common.errors import (
    CloseCode,
    LimitExceeded,
    NotAvailable,
    UnrecoverablePosition,
)
from services.common.pubsub import Subscriber
from services.common.redis import Keys
from services.common.rooms import room_channel

from .connection import ClientConnection
from .hub import Hub, Outbox, Peer
from .presence import Presence
from .rooms import RoomLink, leave_all, members_by_room, resync_rooms
from .rpc import RpcLink
from .settings import GatewaySettings
from .wire import PING_FRAME

log = logging.getLogger(__name__)


class GatewayNode:
    def __init__(
        self, settings: GatewaySettings, redis: Redis, *, zou_redis: Redis | None = None
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.settings = settings
        self.redis = redis
        self.keys = keys = Keys(settings.redis.key_prefix)
        self.bus = Bus(redis, keys)
        self.presence = Presence(redis, keys)
        self.verifier = TokenVerifier(settings.jwt)
        self.revocations = RevocationList(redis, keys, zou_redis=zou_redis)
        self.outbox = Outbox(self._on_overflow)
        self._control = keys.control.encode()
        self._replies = keys.reply(self.id).encode()
        self._rpc_replies = keys.rpc_reply(self.id).encode()
        self.rooms = RoomLink(
            redis,
            keys,
            self.id,
            settings.rooms,
            replies_connected=lambda: self.subscriber.connected,
        )
        self.subscriber = Subscriber(
            settings.redis.url,
            self._on_message,
            on_reconnect=self._on_reconnect,
            connect_timeout_s=settings.redis.connect_timeout_s,
        )
        self.rpc = RpcLink(
            redis,
            keys,
            self.id,
            timeout_s=settings.rpc_timeout_s,
            replies_connected=lambda: self.subscriber.connected,
        )
        self.subscriber.add([self._control, self._replies, self._rpc_replies])
        self.hub = Hub(self.outbox, self.subscriber, self.bus, self._on_lost)
        self.connections: dict[str, ClientConnection] = {}
        self.by_user: dict[str, set[ClientConnection]] = {}
        self.shutting_down = False
        self.slow_consumers = 0
        self.redis_reconnects = 0  # of the pub/sub link
        self.redis_errors = 0  # commands answered 108 because Redis failed
        self.close_codes: dict[int, int] = {}  # close code -> count, for /metrics
        self._tasks: set[asyncio.Task[None]] = set()
        # Pub/sub channels that are not channels of the hub (`/zeph` rooms): channel -> callback.
        self.listeners: dict[bytes, Callable[[bytes], None]] = {}
        # Called once the pub/sub link is back after an outage (what was published meanwhile
        # never reached this process): each part of the gateway catches its sockets up.
        self.reconnect_hooks: list[Callable[[], None]] = []

    # -- messages from Redis ---------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._control:
            self._on_control(data)
        elif channel == self._replies:
            self.rooms.on_reply(data)
        elif channel == self._rpc_replies:
            self.rpc.on_reply(data)
        elif (listener := self.listeners.get(channel)) is not None:
            listener(data)
        else:
            self.hub.dispatch(channel, data)

    def _on_control(self, data: bytes) -> None:
        try:
            command = json.loads(data)
            op = command["op"]
        except (ValueError, KeyError, TypeError):
            log.warning("malformed control message ignored")
            return
        if op == "disconnect":
            for conn in list(self.by_user.get(str(command.get("user")), ())):
                conn.close(CloseCode.DISCONNECTED, "disconnected by the server")
        elif op == "revoke":
            jti = command.get("jti")
            for conn in list(self.connections.values()):
                if conn.claims is not None and conn.claims.jti == jti:
                    conn.close(CloseCode.TOKEN_REVOKED, "token revoked")
        elif op == "room.deleted":
            room = command.get("room")
            for conn in list(self.connections.values()):
                if room in conn.rooms:
                    conn.rooms.discard(room)
                    self.hub.leave(room_channel(room), conn)

    async def broadcast_control(self, command: dict[str, Any]) -> None:
        await self.redis.publish(self.keys.control, json.dumps(command))

    def _on_reconnect(self) -> None:
        self.redis_reconnects += 1
        self.hub.resync()
        for hook in self.reconnect_hooks:
            hook()
        task = asyncio.create_task(
            resync_rooms(self.rooms, list(self.connections.values())), name="rooms-resync"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_lost(self, peer: Peer) -> None:
        assert isinstance(peer, ClientConnection)
        peer.close(CloseCode.INSUFFICIENT_STATE, "history lost; subscribe again with since")

    def _on_overflow(self, peer: Peer) -> None:
        assert isinstance(peer, ClientConnection)
        self.slow_consumers += 1
        log.warning("slow consumer disconnected", extra={"conn": peer.id, "user": peer.user})
        peer.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    # -- authentication ------------------------------------------------------------------

    async def authenticate(self, token: str) -> Claims:
        """Verify a connection token; raises Unauthorized, TokenExpired or TokenRevoked."""
        claims = self.verifier.verify(token)
        await check_not_revoked(self.revocations, claims.jti)
        return claims

    async def admit(self, authorization: str, cookie: str | None) -> Claims | None:
        """Checks before a WebSocket upgrade, so that a bad token gets an HTTP error and no
        socket: the token of an `Authorization: Bearer` header, else of Zou's cookie; None
        when there is neither (the client then sends `connect`)."""
        if self.shutting_down:
            raise NotAvailable("shutting down")
        token = bearer_of(authorization) or cookie
        if not token:
            return None
        claims = await self.authenticate(token)
        self.check_connection_limit(claims.user)
        return claims

    def check_connection_limit(self, user: str) -> None:
        if len(self.by_user.get(user, ())) >= self.settings.limits.max_connections_per_user:
            raise LimitExceeded("too many connections for this user")

    def accept(self, conn: ClientConnection) -> None:
        """Register an open socket, authenticated or not (shutdown closes every one)."""
        self.connections[conn.id] = conn

    def attach(self, conn: ClientConnection, claims: Claims) -> None:
        """Register an authenticated connection (the sweep closes it when its token expires)."""
        conn.claims = claims
        self.connections[conn.id] = conn
        self.by_user.setdefault(claims.user, set()).add(conn)

    async def sweep(self) -> None:
        """Once a second, one pass over every socket instead of timers per connection.

        Closes sockets whose token expired (4001), that sent no `connect` in time (4005) or
        that answered no ping for two intervals (4006); every heartbeat interval, queues the
        same ping frame for every socket.
        """
        settings = self.settings
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + settings.heartbeat_s
        while True:
            await asyncio.sleep(min(1.0, settings.heartbeat_s))
            now, wall = loop.time(), time.time()
            silent_since = now - 2 * settings.heartbeat_s - 1.0
            connect_by = now - settings.limits.connect_timeout_s
            for conn in list(self.connections.values()):
                claims = conn.claims
                if claims is None:
                    if conn.opened_at < connect_by:
                        conn.close(CloseCode.CONNECT_TIMEOUT, "no connect command in time")
                elif claims.expires_at is not None and claims.expires_at <= wall:
                    conn.close(CloseCode.TOKEN_EXPIRED, "token expired")
                elif conn.last_seen < silent_since:
                    conn.close(CloseCode.NO_PONG, "no pong in time")
            if now >= next_ping:
                next_ping = now + settings.heartbeat_s
                self.outbox.broadcast(self.connections.values(), PING_FRAME)

    async def detach(self, conn: ClientConnection) -> None:
        """Forget a closed connection everywhere: hub, presence, registry."""
        conn.closing = True
        # The server's own code when it closed (the peer's reply may carry another, e.g. 1000);
        # else the peer's; 1006 when the peer vanished without a close frame.
        code = conn.close_code or conn.peer_close_code or 1006
        self.close_codes[code] = self.close_codes.get(code, 0) + 1
        self.connections.pop(conn.id, None)
        users = self.by_user.get(conn.user)
        if users is not None:
            users.discard(conn)
            if not users:
                del self.by_user[conn.user]
        subscriptions, conn.subscriptions = conn.subscriptions, {}
        for channel in subscriptions:
            self.hub.leave(channel, conn)
        rooms, conn.rooms = conn.rooms, set()
        for room in rooms:
            self.hub.leave(room_channel(room), conn)
        if rooms:
            await leave_all(self.rooms, conn, rooms)
        try:
            for channel, namespace in subscriptions.items():
                if namespace.presence:
                    await self.leave_presence(conn, channel, namespace.join_leave)
        except RedisError:
            log.warning("presence not cleaned up; it expires by itself", extra={"conn": conn.id})

    # -- reads shared by the protocol and the server API ------------------------------------

    async def history(
        self, channel: str, namespace: Namespace, since: Position | None, limit: int
    ) -> bytes:
        """The encoded `history` result: after `since`, or the last `limit` publications."""
        if not namespace.has_history:
            raise NotAvailable("history is off in this namespace")
        limit = max(0, min(limit, namespace.history_size))
        read = await self.bus.read(channel, namespace, since, limit=limit)
        if since is not None and not read.recovered:
            raise UnrecoverablePosition("history no longer covers this position")
        return replace(read, publications=read.publications[:limit]).to_json(recovered=None)

    async def who(self, channel: str, namespace: Namespace) -> dict[str, Any]:
        """Presence of a channel across every gateway."""
        if not namespace.presence:
            raise NotAvailable("presence is off in this namespace")
        return await self.presence.get(channel)

    # -- presence ------------------------------------------------------------------------

    def presence_info(self, conn: ClientConnection) -> dict[str, Any]:
        info: dict[str, Any] = {"user": conn.user, "client": conn.id}
        if conn.name:
            info["name"] = conn.name
        if conn.claims and conn.claims.info:
            info["info"] = dict(conn.claims.info)
        return info

    async def join_presence(
        self, conn: ClientConnection, channel: str, ttl_s: float, push: bool
    ) -> None:
        info = self.presence_info(conn)
        await self.presence.add(channel, conn.id, info, ttl_s)
        if push:
            await self.bus.send(channel, _frame("join", channel, info))

    async def leave_presence(self, conn: ClientConnection, channel: str, push: bool) -> None:
        await self.presence.remove(channel, conn.id)
        if push:
            await self.bus.send(channel, _frame("leave", channel, self.presence_info(conn)))

    async def refresh_presence(self) -> None:
        """Keep this node's presence entries alive; runs until cancelled (supervised)."""
        while True:
            entries = [
                (channel, conn.id, namespace.presence_ttl_s)
                for conn in list(self.connections.values())
                for channel, namespace in conn.subscriptions.items()
                if namespace.presence
            ]
            await self.presence.refresh(entries)
            shortest = min((ns.presence_ttl_s for ns in self.settings.namespaces), default=60.0)
            await asyncio.sleep(shortest / 3)

    async def renew_rooms(self) -> None:
        """Keep this node's room members alive; runs until cancelled (supervised)."""
        while True:
            await self.rooms.renew(members_by_room(list(self.connections.values())))
            await asyncio.sleep(self.settings.rooms.heartbeat_s)

    # -- cluster statistics --------------------------------------------------------------

    async def report(self) -> None:
        """Publish this node's connection count periodically; runs until cancelled."""
        interval = self.settings.node_report_s
        try:
            while True:
                stats = {"connections": len(self.connections), "ts": time.time()}
                await self.redis.hset(self.keys.nodes, self.id, json.dumps(stats))
                await asyncio.sleep(interval)
        finally:
            if self.shutting_down:
                await self.redis.hdel(self.keys.nodes, self.id)

    async def cluster_connections(self) -> tuple[int, int]:
        """(connections across live gateways, number of live gateways); drops stale entries."""
        # The client does not decode responses: keys and values are bytes.
        nodes = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.nodes))
        stale_after = 3 * self.settings.node_report_s + 1
        now = time.time()
        total, alive, stale = 0, 0, []
        for node, raw in nodes.items():
            stats = json.loads(raw)
            if now - stats["ts"] > stale_after:
                stale.append(node)
                continue
            alive += 1
            total += len(self.connections) if node.decode() == self.id else stats["connections"]
        if stale:
            await self.redis.hdel(self.keys.nodes, *stale)
        if self.id.encode() not in nodes:
            total, alive = total + len(self.connections), alive + 1
        return total, alive

    # -- shutdown ------------------------------------------------------------------------

    async def close_all(
        self, code: CloseCode, reason: str, conns: Iterable[ClientConnection] = ()
    ) -> None:
        """Close every connection (or those given) and wait until their handlers let go."""
        targets = list(conns) or list(self.connections.values())
        for conn in targets:
            conn.close(code, reason)
        deadline = asyncio.get_running_loop().time() + 5.0
        while any(c.id in self.connections for c in targets):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)


def _frame(kind: str, channel: str, info: dict[str, Any]) -> bytes:
    return json.dumps(
        {"push": kind, "channel": channel, "info": info}, separators=(",", ":"), ensure_ascii=False
    ).encode()
