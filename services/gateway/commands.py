"""The native protocol's commands: one method per op, each a few lines over the node's parts.

A text frame holds one JSON command per line. A command carries an `id`; its reply carries the
same `id` and either `result` or `error: {code, message}`. Commands of one connection run one
after another, in order; the busiest (`room.update`, `room.get`, `ping`) without a task.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from services.common.auth import TokenRevoked
from services.common.bus import Position, encode_data
from services.common.channels import Namespace, Namespaces
from services.common.compact_json import loads
from services.common.errors import (
    AlreadySubscribed,
    BadRequest,
    CloseCode,
    ErrorCode,
    LimitExceeded,
    MethodNotFound,
    NotAvailable,
    NotSubscribed,
    PermissionDenied,
    ServiceError,
    TokenExpired,
    TooManyRequests,
    Unauthorized,
)

from .connection import ClientConnection
from .node import GatewayNode
from .rooms import RoomCommands

log = logging.getLogger(__name__)

Command = dict[str, Any]
# A handler answers at once (returns None) or returns what is left of it to await.
Handler = Callable[[ClientConnection, Command], Awaitable[None] | None]


class Commands:
    def __init__(self, node: GatewayNode) -> None:
        self.node = node
        self.namespaces: Namespaces = node.settings.namespaces
        self.counts: dict[str, int] = {}
        self._rpc_tasks: set[asyncio.Task[None]] = set()
        rooms = RoomCommands(node, self.namespaces, self._failed)
        self._ops: dict[str, Handler] = {
            "connect": self.connect,
            "refresh": self.refresh,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "publish": self.publish,
            "history": self.history,
            "presence": self.presence,
            "ping": self.ping,
            "rpc": self.rpc,
            "room.join": rooms.join,
            "room.leave": rooms.leave,
            "room.get": rooms.get,
            "room.update": rooms.update,
        }

    def handle_frame(self, conn: ClientConnection, text: str) -> Awaitable[None] | None:
        """Handle the commands of one frame, in order. None when all are done; otherwise what
        is left to await, from the first command that has to wait (for Redis, mostly): the
        busy ones (`room.update`, `ping`) need no task or coroutine at all."""
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if line.strip() and not conn.closing:
                pending = self.handle(conn, line)
                if pending is not None:
                    return self._rest_of_frame(conn, pending, lines[i + 1 :])
        return None

    async def _rest_of_frame(
        self, conn: ClientConnection, pending: Awaitable[None], lines: list[str]
    ) -> None:
        await pending
        for line in lines:
            if line.strip() and not conn.closing and (waiting := self.handle(conn, line)):
                await waiting

    def handle(self, conn: ClientConnection, line: str) -> Awaitable[None] | None:
        """Run one command: None once it is answered, or what is left of it to await."""
        try:
            command = loads(line)
        except ValueError:
            self.bad_frame(conn, "frame is not valid JSON")
            return None
        if not isinstance(command, dict):
            self.bad_frame(conn, "a command must be a JSON object")
            return None
        cmd_id = command.get("id")
        op = command.get("op")
        try:
            if cmd_id is not None and (
                not isinstance(cmd_id, int | str) or isinstance(cmd_id, bool)
            ):
                cmd_id = None
                raise BadRequest("id must be an integer or a string")
            if not conn.limiter.take():
                conn.rejected += 1
                if conn.rejected > self.node.settings.limits.command_burst:
                    conn.close(CloseCode.RATE_LIMITED, "command rate limit exceeded")
                raise TooManyRequests("command rate limit exceeded")
            conn.rejected = 0
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None or not isinstance(op, str):
                raise MethodNotFound(f"unknown op {op!r}")
            if conn.claims is None and op != "connect":
                raise Unauthorized("send connect with a token first")
            self.counts[op] = self.counts.get(op, 0) + 1
            pending = handler(conn, command)
        except (ServiceError, RedisError) as exc:
            self._failed(conn, cmd_id, op, exc)
            return None
        return None if pending is None else self._finish(conn, cmd_id, op, pending)

    async def _finish(
        self, conn: ClientConnection, cmd_id: Any, op: Any, pending: Awaitable[None]
    ) -> None:
        try:
            await pending
        except (ServiceError, RedisError) as exc:
            self._failed(conn, cmd_id, op, exc)

    def _failed(
        self, conn: ClientConnection, cmd_id: Any, op: object, exc: ServiceError | RedisError
    ) -> None:
        """Answer a command that failed: its error, or 108 when Redis did not answer."""
        if isinstance(exc, ServiceError):
            conn.error(cmd_id, int(exc.code), exc.message, **exc.details())
            return
        self.node.redis_errors += 1
        log.warning("redis unavailable during a command", extra={"op": op, "conn": conn.id})
        conn.error(cmd_id, int(ErrorCode.NOT_AVAILABLE), "temporarily unavailable")

    def bad_frame(self, conn: ClientConnection, message: str) -> None:
        log.info("bad frame; closing", extra={"conn": conn.id, "reason": message})
        conn.error(None, int(ErrorCode.BAD_REQUEST), message)
        conn.close(CloseCode.BAD_FRAME, message)

    # -- connection ----------------------------------------------------------------------

    async def connect(self, conn: ClientConnection, cmd: Command) -> None:
        token = cmd.get("token")
        name = cmd.get("name", "")
        if not isinstance(name, str) or len(name) > 128:
            raise BadRequest("name must be a string of at most 128 characters")
        if conn.claims is not None:
            if token is not None:
                await self.refresh(conn, cmd)
                return
        else:
            if token is None:
                raise Unauthorized("token required")
            claims = await self._verify_or_close(conn, cmd, token)
            try:
                self.node.check_connection_limit(claims.user)
            except LimitExceeded as exc:
                _refuse(
                    conn, cmd, exc, CloseCode.CONNECTION_LIMIT, "too many connections for this user"
                )
                raise
            self.node.attach(conn, claims)
        conn.name = name or conn.name
        assert conn.claims is not None
        conn.reply(
            cmd.get("id"),
            {
                "client": conn.id,
                "user": conn.user,
                "expires_in": conn.claims.expires_in(),
                "ping": self.node.settings.heartbeat_s,
            },
        )

    async def _verify_or_close(self, conn: ClientConnection, cmd: Command, token: object) -> Any:
        if not isinstance(token, str):
            raise BadRequest("token must be a string")
        try:
            return await self.node.authenticate(token)
        except TokenExpired as exc:
            _refuse(conn, cmd, exc, CloseCode.TOKEN_EXPIRED, "token expired")
            raise
        except TokenRevoked as exc:
            _refuse(conn, cmd, exc, CloseCode.TOKEN_REVOKED, "token revoked")
            raise
        except Unauthorized as exc:
            _refuse(conn, cmd, exc, CloseCode.INVALID_TOKEN, "invalid token")
            raise

    async def refresh(self, conn: ClientConnection, cmd: Command) -> None:
        token = cmd.get("token")
        if not isinstance(token, str):
            raise BadRequest("token must be a string")
        claims = await self.node.authenticate(token)
        if claims.user != conn.user:
            raise Unauthorized("token is for another user")
        conn.claims = claims
        conn.reply(cmd.get("id"), {"expires_in": claims.expires_in()})

    def ping(self, conn: ClientConnection, cmd: Command) -> None:
        conn.reply(cmd.get("id"), {})

    # -- channels ------------------------------------------------------------------------

    def _channel(self, cmd: Command) -> tuple[str, Namespace]:
        channel = cmd.get("channel")
        namespace = self.namespaces.of(channel)
        assert isinstance(channel, str)
        return channel, namespace

    def _authorize(
        self, conn: ClientConnection, channel: str, namespace: Namespace, token: object = None
    ) -> None:
        if channel in conn.subscriptions:
            return
        token_ok = False
        if token is not None:
            if not isinstance(token, str):
                raise BadRequest("token must be a string")
            try:
                self.node.verifier.verify_channel_token(token, user=conn.user, channel=channel)
            except Unauthorized as exc:
                raise PermissionDenied(f"channel token refused: {exc.message}") from exc
            token_ok = True
        assert conn.claims is not None
        Namespaces.check_subscribe(
            namespace,
            channel,
            user=conn.user,
            claimed=conn.claims.channels,
            channel_token_ok=token_ok,
        )

    async def subscribe(self, conn: ClientConnection, cmd: Command) -> None:
        channel, namespace = self._channel(cmd)
        since = _position(cmd.get("since"))
        if channel in conn.subscriptions:
            raise AlreadySubscribed("already subscribed")
        if len(conn.subscriptions) >= self.node.settings.limits.max_subscriptions:
            raise LimitExceeded("too many subscriptions on this connection")
        self._authorize(conn, channel, namespace, cmd.get("token"))
        conn.subscriptions[channel] = namespace
        hub = self.node.hub
        try:
            try:
                await hub.join(channel, conn, namespace)
                if namespace.has_history:
                    read = await self.node.bus.read(channel, namespace, since)
                    await hub.in_flight()
            except (OSError, TimeoutError) as exc:  # the pub/sub link, not a command
                raise NotAvailable("temporarily unavailable") from exc
            if namespace.has_history:
                recovered = read.recovered and since is not None
                conn.reply_raw(cmd.get("id"), read.to_json(recovered=recovered))
                hub.go_live(channel, conn, Position(read.last_offset, read.epoch))
            else:
                conn.reply(
                    cmd.get("id"),
                    {"epoch": "", "offset": "", "recovered": False, "publications": []},
                )
            if namespace.presence:
                await self.node.join_presence(
                    conn, channel, namespace.presence_ttl_s, namespace.join_leave
                )
        except BaseException:
            if conn.subscriptions.pop(channel, None) is not None:
                hub.leave(channel, conn)
            raise

    async def unsubscribe(self, conn: ClientConnection, cmd: Command) -> None:
        channel, namespace = self._channel(cmd)
        if conn.subscriptions.pop(channel, None) is None:
            raise NotSubscribed("not subscribed")
        self.node.hub.leave(channel, conn)
        if namespace.presence:
            await self.node.leave_presence(conn, channel, namespace.join_leave)
        conn.reply(cmd.get("id"), {})

    async def publish(self, conn: ClientConnection, cmd: Command) -> None:
        channel, namespace = self._channel(cmd)
        if "data" not in cmd:
            raise BadRequest("data is required")
        if not namespace.allow_publish:
            raise PermissionDenied("clients may not publish in this namespace")
        self._authorize(conn, channel, namespace)
        event = cmd.get("event")
        if event is not None and (not isinstance(event, str) or not event):
            raise BadRequest("event must be a non-empty string")
        position = await self.node.bus.publish(
            channel,
            encode_data(cmd["data"]),
            namespace,
            event=event,
            source="client" if namespace.events else None,
        )
        conn.reply(cmd.get("id"), {"offset": position.offset, "epoch": position.epoch})

    async def history(self, conn: ClientConnection, cmd: Command) -> None:
        channel, namespace = self._channel(cmd)
        self._authorize(conn, channel, namespace)
        limit = cmd.get("limit", namespace.history_size)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise BadRequest("limit must be a non-negative integer")
        since = _position(cmd.get("since"))
        conn.reply_raw(cmd.get("id"), await self.node.history(channel, namespace, since, limit))

    async def presence(self, conn: ClientConnection, cmd: Command) -> None:
        channel, namespace = self._channel(cmd)
        self._authorize(conn, channel, namespace)
        conn.reply(cmd.get("id"), {"clients": await self.node.who(channel, namespace)})

    # -- rpc -----------------------------------------------------------------------------------

    async def rpc(self, conn: ClientConnection, cmd: Command) -> None:
        """Start the call and return: the answer may take seconds, and the connection's
        other commands must not wait behind it. Replies come back by `id`, in any order."""
        room = cmd.get("room")
        if room is not None and not isinstance(room, str):
            raise BadRequest("room must be a string")
        if conn.rpcs >= self.node.settings.limits.max_rpc_in_flight:
            raise LimitExceeded("too many rpc calls in flight on this connection")
        assert conn.claims is not None
        call = self.node.rpc.call(
            cmd.get("method"), cmd.get("data"), claims=conn.claims, client=conn.id, room=room
        )
        conn.rpcs += 1
        task = asyncio.ensure_future(self._answer(conn, cmd.get("id"), call))
        self._rpc_tasks.add(task)
        task.add_done_callback(self._rpc_tasks.discard)

    async def _answer(self, conn: ClientConnection, cmd_id: Any, call: Awaitable[Any]) -> None:
        try:
            conn.reply(cmd_id, await call)
        except ServiceError as exc:
            conn.error(cmd_id, int(exc.code), exc.message)
        except RedisError:
            self.node.redis_errors += 1
            log.warning("redis unavailable during an rpc call", extra={"conn": conn.id})
            conn.error(cmd_id, int(ErrorCode.NOT_AVAILABLE), "temporarily unavailable")
        finally:
            conn.rpcs -= 1


def _refuse(
    conn: ClientConnection, cmd: Command, exc: ServiceError, code: CloseCode, reason: str
) -> None:
    """Reply with the error, then close: a closing socket sends nothing more, not even replies."""
    conn.error(cmd.get("id"), int(exc.code), exc.message)
    conn.close(code, reason)


def _position(raw: object) -> Position | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("offset"), str)
        or not isinstance(raw.get("epoch"), str)
    ):
        raise BadRequest("since must be {offset: string, epoch: string}")
    return Position(offset=raw["offset"], epoch=raw["epoch"])
