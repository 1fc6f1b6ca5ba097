"""Socket.IO on `/socket.io/`, namespace `/events`: Zou's event stream, for Kitsu and gazu.

python-socketio (`AsyncServer`, aiohttp mode) speaks the protocol: Engine.IO v4 polling and
WebSocket, pings every 25 s with a 20 s timeout, 1 MB payloads, no CORS headers, as Zou's
server. Authentication is Zou's, at the handshake: the `access_token_cookie` cookie, else
`Authorization: Bearer`, else (our addition) the `token` of the Socket.IO `auth` payload. A
refused client gets what Zou's gets: CONNECT_ERROR `{"message": "Connection rejected by
server"}`. Unlike Zou, revoking the token or disconnecting the user closes the connection
(the client is told not to reconnect) and so does its expiry (the client may reconnect).

Events come from two places and reach every authenticated `/events` socket of this process:
publications on the channel `zou:events` (`POST /api/publish` with an `event`), and Zou's own
emits read from Redis pub/sub (`zou.py`). Each event is encoded once. A WebSocket's frames go
through the gateway's `Outbox` (one write per socket per loop turn), Engine.IO's own packets
included, so that both keep their order; a socket still on long-polling, or whose Engine.IO
queue is not empty yet, gets the same Engine.IO packet object through that queue
(`engineio_ws.py`). Zou's preview rooms (`preview-room:*`) are in `preview_rooms.py`, the
bridge from Zou's own emits in `zou_bridge.py`.
"""

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import jwt
import socketio  # type: ignore[import-untyped]  # no type hints upstream
from aiohttp import web
from engineio import packet as eio_packet  # type: ignore[import-untyped]  # no type hints

from services.common.auth import Claims
from services.common.errors import LimitExceeded, NotAvailable, ServiceError, Unauthorized
from services.common.tasks import supervised

from .engineio_ws import Link, OutboxWebSocket
from .hub import Outbox, Peer
from .keys import metrics_key, node_key
from .node import GatewayNode
from .preview_rooms import PreviewRooms
from .settings import GatewaySettings
from .socketio_stats import report
from .wire import text_frame
from .zou import EVENT_HEAD as _EVENT_HEAD
from .zou import NAMESPACE, RESERVED_EVENTS, ZOU_CHANNEL, handshake_token, project_of
from .zou_bridge import ZouBridge
from .zou_events import ZouEventWriter

log = logging.getLogger(__name__)


class SioSocket:
    """An authenticated `/events` connection."""

    __slots__ = (
        "claims",
        "closing",
        "eio_sid",
        "joined",
        "link",
        "lock",
        "opened",
        "projects",
        "sid",
        "token",
    )

    def __init__(
        self, sid: str, eio_sid: str, claims: Claims, projects: frozenset[str] | None, token: str
    ) -> None:
        self.sid = sid
        self.eio_sid = eio_sid
        self.claims = claims
        self.token = token  # the handshake's: Zou checks room access with it
        self.projects = projects  # None: every project's events
        self.link: Link | None = None  # set once frames may be written directly
        self.closing = False
        self.opened: set[str] = set()  # preview rooms whose broadcasts it receives
        self.joined: set[str] = set()  # preview rooms it is in (`people`)
        self.lock = asyncio.Lock()  # its preview-room events, one after the other


class SocketIOEndpoint:
    """The Socket.IO server and its authenticated `/events` sockets."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.host_id = uuid.uuid4().hex  # as python-socketio's managers: skip our own emits
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            ping_interval=25,
            ping_timeout=20,
            max_http_buffer_size=1_000_000,
            cors_allowed_origins=[],  # Zou's: no CORS headers and no Origin check
            cors_credentials=False,
            logger=False,
            engineio_logger=False,
        )
        self.outbox = Outbox(self._on_overflow)
        self.links: dict[str, Link] = {}  # Engine.IO sid -> its WebSocket
        eio = self.sio.eio
        # A copy: the driver table is shared by every engineio server of the process.
        websocket = functools.partial(OutboxWebSocket, self.links, self.outbox, self.limits)
        eio._async = {**eio._async, "websocket": websocket}
        self._handle_eio_disconnect = eio.handlers["disconnect"]
        eio.on("disconnect", self._on_eio_disconnect)
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sockets: dict[str, SioSocket] = {}  # Socket.IO sid -> authenticated socket
        self._by_user: dict[str, set[SioSocket]] = {}
        self._direct: dict[Link, None] = {}  # written through the outbox
        self._queued: dict[SioSocket, None] = {}  # through Engine.IO's queue, for now
        self._scoped: dict[SioSocket, None] = {}  # project-scoped: checked event by event
        self._node: GatewayNode | None = None
        self.events: ZouEventWriter  # set by start(): it needs the node
        self._zou_key = b""
        self._bus_head = b""
        self._tasks: set[asyncio.Task[None]] = set()
        self.events_sent = 0
        self.slow_consumers = 0
        self.previews = PreviewRooms(self)  # the preview-room:* events (spec §3)
        self.bridge = ZouBridge(self)  # Zou's own emits

    @property
    def bridge_errors(self) -> int:
        return self.bridge.errors

    @property
    def node(self) -> GatewayNode:
        assert self._node is not None, "the endpoint serves once the app has started"
        return self._node

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, node: GatewayNode) -> None:
        """Listen to Redis through the node's subscriber: zou:events, the bridge, control.

        The subscriber calls one function per message; it is wrapped here rather than taught
        about Socket.IO. Channels it does not know go to the node as before.
        """
        self._node = node
        self.events = ZouEventWriter(node)
        keys = node.keys
        self._zou_key = keys.channel(ZOU_CHANNEL).encode()
        self._bus_head = node.bus.frame_prefix(ZOU_CHANNEL, None)
        control = keys.control.encode()
        bridge = self.settings.zou.bridge_channel.encode() if self.settings.zou.bridge else None
        downstream = node.subscriber.on_message
        previews = self.previews.on_message

        def on_message(channel: bytes, data: bytes) -> None:
            if previews(channel, data):
                pass  # a preview room's; the rooms' pushes may have native members too
            elif channel == self._zou_key:
                self._on_bus_event(data)
            elif channel == bridge:
                self.bridge.on_message(data, downstream)
                return
            elif channel == control:
                self._on_control(data)
            downstream(channel, data)

        node.subscriber.on_message = on_message
        node.reconnect_hooks.append(self.previews.resync)
        node.subscriber.keep([self._zou_key] + ([bridge] if bridge else []))

    async def close_all(self, _: web.Application | None = None) -> None:
        """On shutdown: close every Engine.IO connection; clients reconnect elsewhere."""
        eio_sids = list(self.sio.eio.sockets)
        if eio_sids:
            await asyncio.gather(*(self._close_eio(sid) for sid in eio_sids))
        await self.previews.drain()  # their leaves, before Redis closes

    # -- connections -----------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        node = self.node
        try:
            if node.shutting_down:
                raise NotAvailable("shutting down")
            token = handshake_token(environ["aiohttp.request"], auth)
            if not token:
                raise Unauthorized("token missing")
            claims = await node.authenticate(token)
            payload = jwt.decode(token, options={"verify_signature": False})  # verified above
            if payload.get("type") == "refresh":  # flask-jwt-extended accepts access tokens only
                raise Unauthorized("refresh token")
            if len(self._by_user.get(claims.user, ())) >= self.limits.max_connections_per_user:
                raise LimitExceeded("too many connections for this user")
        except ServiceError as exc:
            log.info("socket.io connection refused", extra={"reason": exc.message})
            return False  # CONNECT_ERROR {"message": "Connection rejected by server"}, as Zou
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        projects, scope = payload.get("projects"), None
        if self.settings.zou.project_scoping and isinstance(projects, list):
            scope = frozenset(str(project) for project in projects)
        sock = SioSocket(sid, eio_sid, claims, scope, token)
        self.sockets[sid] = sock
        self._by_user.setdefault(claims.user, set()).add(sock)
        (self._queued if scope is None else self._scoped)[sock] = None
        return True

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        sock = self.sockets.pop(sid, None)
        if sock is None:
            return
        self._forget(sock)

    async def _on_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        await self._handle_eio_disconnect(eio_sid, reason)
        eio = self.sio.eio.sockets.get(eio_sid)
        if eio is not None and not eio.upgraded and reason == self.sio.eio.reason.CLIENT_DISCONNECT:
            # A client that closed over long-polling may still hold a GET open (python's
            # client waits for it): an empty answer lets it go now, not after 30 s.
            eio.queue.put_nowait(None)

    def _forget(self, sock: SioSocket) -> None:
        sock.closing = True
        self.previews.forget(sock)
        self._queued.pop(sock, None)
        self._scoped.pop(sock, None)
        if sock.link is not None:
            self._direct.pop(sock.link, None)
        users = self._by_user.get(sock.claims.user)
        if users is not None:
            users.discard(sock)
            if not users:
                del self._by_user[sock.claims.user]

    def close(self, sock: SioSocket, *, reconnect: bool) -> None:
        """Stop its events now and close the connection (told not to reconnect unless asked)."""
        if sock.closing:
            return
        self._forget(sock)
        task = asyncio.ensure_future(self._end(sock, reconnect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end(self, sock: SioSocket, reconnect: bool) -> None:
        if not reconnect:
            # DISCONNECT of the namespace: socket.io-client does not reconnect after it.
            await self.sio.disconnect(sock.sid, namespace=NAMESPACE)
        await self._close_eio(sock.eio_sid)

    async def _close_eio(self, eio_sid: str) -> None:
        eio = self.sio.eio
        socket = eio.sockets.get(eio_sid)
        if socket is None:
            return
        link = self.links.get(eio_sid)
        try:
            async with asyncio.timeout(2.0):
                # On a WebSocket, wait until engineio's writer handed over what it queued (the
                # DISCONNECT, the CLOSE); a polling client takes them with its next GET or not.
                await socket.close(wait=link is not None, reason=eio.reason.SERVER_DISCONNECT)
                eio.sockets.pop(eio_sid, None)
                if link is not None:
                    self.outbox.flush_peer(link)
                    link.closing = True
                    await link.ws.close()
        except (TimeoutError, ConnectionError):
            if link is not None:
                link.transport.abort()  # a stalled reader never reads our close frame

    def _on_overflow(self, peer: Peer) -> None:
        self.slow_consumers += 1
        link = cast(Link, peer)
        log.warning("slow socket.io consumer disconnected", extra={"eio_sid": link.eio_sid})
        link.closing = True
        link.transport.abort()

    async def sweep(self) -> None:
        """Once a second, close the sockets whose token expired (they may reconnect)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for sock in list(self.sockets.values()):
                expires_at = sock.claims.expires_at
                if expires_at is not None and expires_at <= now:
                    self.close(sock, reconnect=True)

    # -- control commands ------------------------------------------------------------------

    def _on_control(self, data: bytes) -> None:
        try:
            command = json.loads(data)
            op = command["op"]
        except (ValueError, KeyError, TypeError):
            return  # the node logs it
        if op == "revoke":
            jti = command.get("jti")
            targets = [s for s in self.sockets.values() if s.claims.jti == jti]
        elif op == "disconnect":
            targets = list(self._by_user.get(str(command.get("user")), ()))
        else:
            return
        for sock in targets:
            self.close(sock, reconnect=False)

    # -- events ----------------------------------------------------------------------------

    def _on_bus_event(self, message: bytes) -> None:
        """A publication on zou:events, as the bus PUBLISHed it (see `Bus`)."""
        push = message[message.find(b"\n") + 1 :]
        head = self._bus_head + b',"event":'
        if not push.startswith(head):
            return  # no event name: nothing to call it on a Socket.IO client
        end = push.find(b',"offset":"', len(head))
        data_at = push.find(b',"data":', end)
        if end < 0 or data_at < 0:
            return
        event_json, data = push[len(head) : end], push[data_at + 8 : -1]
        if json.loads(event_json) in RESERVED_EVENTS:
            return
        project: str | None = None
        if self._scoped:
            project = project_of(json.loads(data))
        self.fanout(_EVENT_HEAD + event_json + b"," + data + b"]", project)

    def fanout(self, body: bytes, project: str | None, skip: frozenset[str] = frozenset()) -> None:
        """Send one Socket.IO packet (`2/events,[...]`) to every authenticated socket.

        `body` is encoded once: the same WebSocket frame is queued for every socket written
        directly, the same Engine.IO packet object for the others.
        """
        frame = text_frame(b"4" + body)
        packet = eio_packet.Packet(eio_packet.MESSAGE, data=body.decode())
        sent, promoted = 0, []
        for sock in self._queued:
            if sock.sid not in skip and self.send_one(sock, frame, packet):
                sent += 1
            if sock.link is not None:
                promoted.append(sock)
        if skip:
            for link in self._direct:
                if self._sid_of(link) not in skip:
                    self.outbox.push(link, frame)
                    sent += 1
        elif self._direct:
            sent += self.outbox.broadcast(self._direct, frame)
        for sock in promoted:  # after the broadcast: they have this event already
            del self._queued[sock]
            self._direct[cast(Link, sock.link)] = None
        for sock in self._scoped:
            allowed = project is None or project in cast(frozenset[str], sock.projects)
            if allowed and sock.sid not in skip and self.send_one(sock, frame, packet):
                sent += 1
        self.events_sent += sent

    def send_one(self, sock: SioSocket, frame: bytes, packet: Any) -> bool:
        if sock.link is not None:
            self.outbox.push(sock.link, frame)
            return True
        eio = self.sio.eio.sockets.get(sock.eio_sid)
        if eio is None or eio.closed or eio.closing:
            return False
        if not self.sio.manager.is_connected(sock.sid, NAMESPACE):
            return False  # still connecting: its CONNECT reply must come first
        link = self.links.get(sock.eio_sid)
        if link is not None and eio.upgraded and eio.queue.empty():
            # Everything engineio queued is in the link's outbox: writing directly keeps order.
            sock.link = link
            self.outbox.push(link, frame)
        else:
            eio.queue.put_nowait(packet)
        return True

    def _sid_of(self, link: Link) -> str:
        return cast(str, self.sio.manager.sid_from_eio_sid(link.eio_sid, NAMESPACE))

    # -- helpers ---------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


socketio_key = web.AppKey("socketio", SocketIOEndpoint)


def setup_socketio(app: web.Application, settings: GatewaySettings) -> None:
    """Serve `/socket.io/` on `app` (routes only: no middleware) and run its jobs."""
    endpoint = SocketIOEndpoint(settings)
    app[socketio_key] = endpoint
    endpoint.sio.attach(app)
    app.cleanup_ctx.append(_endpoint_ctx)
    app.cleanup_ctx.append(supervised("socketio-sweep", lambda a: a[socketio_key].sweep()))
    app.cleanup_ctx.append(supervised("socketio-report", lambda a: report(a[socketio_key])))
    app.cleanup_ctx.append(supervised("socketio-rooms", lambda a: a[socketio_key].previews.renew()))
    if settings.zou.bridge:
        app.cleanup_ctx.append(
            supervised("zou-event-writer", lambda a: a[socketio_key].events.hold_lease())
        )
    app.on_shutdown.append(endpoint.close_all)


async def _endpoint_ctx(app: web.Application) -> AsyncIterator[None]:
    endpoint = app[socketio_key]
    endpoint.start(app[node_key])
    app[metrics_key].watch_socketio(endpoint)
    try:
        yield
    finally:
        await endpoint.sio.shutdown()  # engineio's background task
        await endpoint.previews.access.close()
