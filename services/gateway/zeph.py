"""`/zeph`: Zephserver's WebSocket framing (Zephclient unchanged), over Switchboard's parts.

Client frames: a join `{"session_id", "room"}` (no `task`), then tasks
`{"task", "data", "room", "session_id", "date"}`. `session_id` carries a JWT (no Django session).
A task runs in the handlers service as the rpc method of its name (services/gateway/rpc.py);
its result comes back as `{"task", "data"}`. Unlike Zephserver, a failure is never silent: an
unknown task, a refusal or a crash gets `{"task", "error": {"code", "message"}}`. `TaskPing`
(Zephclient's keep-alive) is answered by nobody, as in Zephserver.

Rooms span gateways: members live in Redis (`sb:zeph:{<room>}:members`, connection id -> JSON
`{username, uid}`, with deadlines in `:exp` renewed by the gateway holding the socket), and room
messages (`msgtype` join/leave/user_list frames, and what tasks send to a room) are PUBLISHed on
`sb:zeph:{<room>}`, which a gateway subscribes to while one of its sockets is in the room. The
members of a gateway that died leave `user_list` when their deadline passes.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from services.common.auth import Claims, TokenRevoked
from services.common.compact_json import dumps
from services.common.errors import (
    BadRequest,
    CloseCode,
    ErrorCode,
    NotAvailable,
    ServiceError,
    TokenExpired,
    Unauthorized,
)
from services.common.tasks import supervised

from .connection import TokenBucket
from .keys import node_key
from .node import GatewayNode

log = logging.getLogger(__name__)

KEEPALIVE_TASKS: Final = frozenset({"TaskPing"})
MAX_ROOM_LENGTH: Final = 1024  # Zephclient's default room is the page URL
OUTBOX_FRAMES: Final = 256
MEMBER_TTL_S: Final = 30.0
RENEW_S: Final = 10.0


def _dumps(obj: Any) -> str:
    return dumps(obj)


class ZephSocket:
    """One Zephclient connection: its identity, its room and a bounded queue of frames."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.ws = ws
        self.claims: Claims | None = None
        self.room: str | None = None
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(OUTBOX_FRAMES)
        self.close_code: CloseCode | None = None

    @property
    def username(self) -> str:
        assert self.claims is not None
        name = self.claims.extra.get("username") or self.claims.info.get("name")
        return str(name) if name else self.claims.user

    def send(self, frame: str) -> None:
        if self.close_code is not None:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CloseCode.SLOW_CONSUMER)

    def error(self, task: object, exc: ServiceError) -> None:
        body: dict[str, Any] = {"error": exc.to_dict()}
        if isinstance(task, str):
            body = {"task": task, **body}
        self.send(_dumps(body))

    def close(self, code: CloseCode) -> None:
        if self.close_code is None:
            self.close_code = code
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    async def write(self) -> None:
        """The socket's writer: frames in order, then the close frame."""
        while (frame := await self.queue.get()) is not None:
            await self.ws.send_str(frame)
        await self.ws.close(code=int(self.close_code or CloseCode.NORMAL))


class ZephRooms:
    """The rooms of this gateway's Zeph sockets, shared with the other gateways through Redis."""

    def __init__(self, node: GatewayNode) -> None:
        self.node = node
        self.keys = node.keys
        self.local: dict[str, set[ZephSocket]] = {}

    def _channel(self, room: str) -> bytes:
        return self.keys.zeph_room(room).encode()

    def _deliver(self, room: str, data: bytes) -> None:
        frame = data.decode()
        for sock in list(self.local.get(room, ())):
            sock.send(frame)

    async def join(self, sock: ZephSocket, room: str) -> None:
        node, key = self.node, self.keys.zeph_room(room)
        members = self.local.setdefault(room, set())
        if not members:
            channel = self._channel(room)
            node.listeners[channel] = lambda data: self._deliver(room, data)
            try:
                await node.subscriber.subscribe(channel)
            except (OSError, TimeoutError) as exc:
                raise NotAvailable("temporarily unavailable") from exc
        members.add(sock)
        sock.room = room
        info = _dumps({"username": sock.username, "uid": sock.claims.user if sock.claims else ""})
        async with node.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{key}:members", sock.id, info)
            pipe.zadd(f"{key}:exp", {sock.id: _deadline()})
            await pipe.execute()
        await self._announce(room, "join", sock.username, " joined the chat room.")

    async def leave(self, sock: ZephSocket) -> None:
        room, sock.room = sock.room, None
        if room is None:
            return
        members = self.local.get(room, set())
        members.discard(sock)
        if not members:
            self.local.pop(room, None)
            channel = self._channel(room)
            self.node.listeners.pop(channel, None)
            self.node.subscriber.unsubscribe(channel)
        key = self.keys.zeph_room(room)
        async with self.node.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{key}:members", sock.id)
            pipe.zrem(f"{key}:exp", sock.id)
            await pipe.execute()
        await self._announce(room, "leave", sock.username, " left the chat room.")

    async def _announce(self, room: str, kind: str, username: str, text: str) -> None:
        redis, key = self.node.redis, self.keys.zeph_room(room)
        gone = await redis.zrangebyscore(f"{key}:exp", "-inf", int(time.time() * 1000))
        async with redis.pipeline(transaction=True) as pipe:
            if gone:
                pipe.hdel(f"{key}:members", *gone)
                pipe.zrem(f"{key}:exp", *gone)
            pipe.hvals(f"{key}:members")
            *_, infos = await pipe.execute()
        names = sorted({json.loads(raw)["username"] for raw in infos})
        async with redis.pipeline(transaction=False) as pipe:
            pipe.publish(key, _dumps({"msgtype": kind, "username": username, "data": text}))
            pipe.publish(key, _dumps({"msgtype": "user_list", "data": names}))
            await pipe.execute()

    async def renew(self) -> None:
        """Background loop: push the deadlines of this gateway's members forward."""
        while True:
            await asyncio.sleep(RENEW_S)
            if not self.local:
                continue
            try:
                async with self.node.redis.pipeline(transaction=False) as pipe:
                    for room, members in self.local.items():
                        deadline = _deadline()
                        pipe.zadd(
                            f"{self.keys.zeph_room(room)}:exp",
                            {sock.id: deadline for sock in members},
                            xx=True,
                        )
                    await pipe.execute()
            except RedisError:
                log.warning("zeph members not renewed: redis unavailable")


def _deadline() -> int:
    return int((time.time() + MEMBER_TTL_S) * 1000)


zeph_rooms_key = web.AppKey("zeph_rooms", ZephRooms)


async def zeph(request: web.Request) -> web.StreamResponse:
    node = request.app[node_key]
    rooms = request.app[zeph_rooms_key]
    if node.shutting_down:
        raise web.HTTPServiceUnavailable(text="shutting down")
    limits = node.settings.limits
    ws = web.WebSocketResponse(max_msg_size=limits.max_message_bytes + 1, heartbeat=25.0)
    await ws.prepare(request)
    sock = ZephSocket(ws)
    writer = asyncio.create_task(sock.write())
    limiter = TokenBucket(limits.commands_per_s, limits.command_burst)
    session = _Session(node, rooms, sock)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if not limiter.take():
                    sock.error(None, _TooFast())
                    continue
                await session.handle(msg.data)
            elif msg.type is WSMsgType.BINARY:
                session.refuse(BadRequest("binary frames are not accepted"), CloseCode.BAD_FRAME)
            if sock.close_code is not None:
                break
    finally:
        try:
            await rooms.leave(sock)
        except RedisError:
            log.warning("zeph leave not recorded: redis unavailable", extra={"conn": sock.id})
        sock.close(sock.close_code or CloseCode.NORMAL)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            async with asyncio.timeout(2.0):
                await writer
        writer.cancel()
    return ws


class _TooFast(ServiceError):
    code = ErrorCode.TOO_MANY_REQUESTS


class _Session:
    """What one socket's frames do; frames of a socket run one after another."""

    def __init__(self, node: GatewayNode, rooms: ZephRooms, sock: ZephSocket) -> None:
        self.node, self.rooms, self.sock = node, rooms, sock
        self.session_id: str | None = None
        self.calls: set[asyncio.Task[None]] = set()  # tasks awaiting their answer

    def refuse(self, exc: ServiceError, code: CloseCode, task: object = None) -> None:
        log.info("zeph socket refused", extra={"conn": self.sock.id, "reason": exc.message})
        self.sock.error(task, exc)
        self.sock.close(code)

    async def handle(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            self.refuse(BadRequest("frame is not valid JSON"), CloseCode.BAD_FRAME)
            return
        if not isinstance(frame, dict):
            self.refuse(BadRequest("a frame must be a JSON object"), CloseCode.BAD_FRAME)
            return
        task = frame.get("task")
        try:
            await self._authenticate(frame.get("session_id"), task)
            if task is None:
                await self._join(frame.get("room"))
            else:
                self._run(task, frame.get("data"))
        except _Closed:
            pass  # the error frame is out and the socket closing
        except ServiceError as exc:
            self.sock.error(task, exc)
        except RedisError:
            self.sock.error(task, NotAvailable("temporarily unavailable"))

    async def _authenticate(self, session_id: object, task: object) -> None:
        sock = self.sock
        if session_id == self.session_id and sock.claims is not None:
            if (sock.claims.expires_in() or 1) > 0:
                return
            self.refuse(TokenExpired("session expired"), CloseCode.TOKEN_EXPIRED, task)
            raise _Closed
        if not isinstance(session_id, str) or not session_id:
            raise Unauthorized("session_id must carry a token")
        try:
            claims = await self.node.authenticate(session_id)
        except TokenExpired as exc:
            self.refuse(exc, CloseCode.TOKEN_EXPIRED, task)
            raise _Closed from None
        except TokenRevoked as exc:
            self.refuse(exc, CloseCode.TOKEN_REVOKED, task)
            raise _Closed from None
        except Unauthorized as exc:
            self.refuse(exc, CloseCode.INVALID_TOKEN, task)
            raise _Closed from None
        if sock.claims is not None and claims.user != sock.claims.user:
            raise Unauthorized("session is for another user")
        sock.claims, self.session_id = claims, session_id

    async def _join(self, room: object) -> None:
        if not isinstance(room, str) or not 0 < len(room) <= MAX_ROOM_LENGTH:
            raise BadRequest(f"room must be a string of 1-{MAX_ROOM_LENGTH} characters")
        if self.sock.room == room:
            return
        await self.rooms.leave(self.sock)
        await self.rooms.join(self.sock, room)

    def _run(self, task: object, data: Any) -> None:
        if not isinstance(task, str) or not task:
            raise BadRequest("task must be a non-empty string")
        if task in KEEPALIVE_TASKS:
            return
        if self.sock.room is None:
            raise BadRequest("join a room first: send {session_id, room}")
        call = asyncio.ensure_future(self._answer(task, data))
        self.calls.add(call)
        call.add_done_callback(self.calls.discard)

    async def _answer(self, task: str, data: Any) -> None:
        sock = self.sock
        assert sock.claims is not None
        try:
            result = await self.node.rpc.call(
                task, data, claims=sock.claims, client=sock.id, room=sock.room
            )
            sock.send(_dumps({"task": task, "data": result}))
        except ServiceError as exc:
            sock.error(task, exc)
        except RedisError:
            sock.error(task, NotAvailable("temporarily unavailable"))


class _Closed(ServiceError):
    """The socket is being closed; the error frame has been sent already."""


def setup_zeph(app: web.Application) -> None:
    app.router.add_get("/zeph", zeph)
    app.cleanup_ctx.append(_rooms_ctx)
    app.cleanup_ctx.append(supervised("zeph-renew", lambda a: a[zeph_rooms_key].renew()))


async def _rooms_ctx(app: web.Application) -> AsyncIterator[None]:
    app[zeph_rooms_key] = ZephRooms(app[node_key])
    yield
