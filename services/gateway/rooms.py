"""The native `room.*` ops, and the gateway's link to the rooms service.

A command goes out on the stream `sb:rooms:cmd`; its answer comes back on this node's reply
channel (`sb:reply:<node id>`, subscribed for good by the node), matched by request id. A socket
that joined a room is subscribed to the channel `room:<id>` through the hub, so it receives the
room's pushes like any other channel's. The node renews the heartbeat deadlines of its members
in one pipeline every few seconds; see services/common/rooms.py for the whole contract.
"""

import asyncio
import functools
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from services.common.bus import Position
from services.common.channels import Namespaces
from services.common.compact_json import dumpb, dumps
from services.common.errors import (
    AlreadySubscribed,
    BadRequest,
    InternalError,
    LimitExceeded,
    NotAvailable,
    NotSubscribed,
    PermissionDenied,
    ServiceError,
    error_from,
)
from services.common.redis import Keys
from services.common.redis_direct import DirectConnection
from services.common.rooms import (
    STREAM_MAXLEN,
    RoomCommand,
    check_object,
    check_room,
    check_version,
    room_channel,
)
from services.common.tasks import spawn

from .connection import ClientConnection
from .settings import RoomLinkSettings

if TYPE_CHECKING:
    from .node import GatewayNode

log = logging.getLogger(__name__)

PREVIEW_ROOMS = "preview:"  # services/gateway/preview_rooms.py
ROOM_CALLS_IN_FLIGHT = 32  # room.get/room.update a socket may have unanswered before it waits

Command = dict[str, Any]


# Each command its own entry, as if sent one by one; ARGV[1] is MAXLEN (approximate).
XADD_ALL_LUA = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[i])
end
return #ARGV - 1
"""


_REQ = b'{"req":"'  # how a reply starts: {"req":"<id>","result":{...}} or ,"error":{...}}
_RESULT = b'"result":'


def result_of(body: bytes) -> bytes:
    """The result in a reply body (`"result":...`), as encoded; raise its `"error":{...}`."""
    if body.startswith(_RESULT):
        return body[len(_RESULT) :]
    try:
        error = json.loads(b"{" + body + b"}")["error"]
        if not isinstance(error, dict):
            raise TypeError("error is not an object")
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable room reply", extra={"reply": body[:200].decode(errors="replace")})
        raise InternalError("the rooms service answered something unreadable") from None
    raise error_from(error)


T = TypeVar("T")

# What a call does with its outcome: the body of its reply, or the error that ended it.
Settle = Callable[[bytes | None, BaseException | None], None]


def _settle(future: "asyncio.Future[T]", result: T, exc: BaseException | None) -> None:
    """End `future` with `result`, or `exc` when there is one (unless it ended already)."""
    if not future.done():
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class RoomLink:
    """Sends room commands and resolves each with the reply the rooms service publishes."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        node_id: str,
        settings: RoomLinkSettings,
        *,
        replies_connected: Callable[[], bool],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.node_id = node_id
        self.settings = settings
        self.replies_connected = replies_connected  # whether a reply can reach us now
        # Calls awaiting their reply, oldest first: what settles each, and its deadline.
        self._pending: dict[str, tuple[Settle, float]] = {}
        self._sweep_at: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        # The commands of the next write (encoded), and who is told once it is done (None) or
        # failed: a call then fails, a send returns.
        self._queued: list[str] = []
        self._waiters: list[Callable[[BaseException | None], None]] = []
        self._writing = False  # an XADD is on its way: new commands wait for the next
        self._direct = DirectConnection(redis)
        self._xadd_all = redis.register_script(XADD_ALL_LUA)

    def command(self, op: str, room: str, conn: ClientConnection, **fields: Any) -> RoomCommand:
        return RoomCommand(
            op=op,
            room=room,
            conn=conn.id,
            user=conn.user,
            gw=self.node_id,
            ttl_ms=int(self.settings.member_ttl_s * 1000),
            **fields,
        )

    async def call(self, command: RoomCommand) -> dict[str, Any]:
        """Send `command`, return its result; raise the error the rooms service answered."""
        result: dict[str, Any] = json.loads(await self.call_raw(command))
        return result

    async def call_raw(self, command: RoomCommand) -> bytes:
        """Send `command`, return its result as the rooms service encoded it (a native client
        gets it as is); raise the error the rooms service answered."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.submit(command, functools.partial(_settle, future))
        return result_of(await future)

    def submit(self, command: RoomCommand, settle: Settle) -> None:
        """Send `command`; `settle` gets the body of its reply (see `result_of`) when it comes,
        called from the subscriber's callback (a reply written then leaves with the pushes of
        the same read), or the XADD's error, or NotAvailable after the timeout.

        No future, task or timer of its own (one sweep expires the calls in the order they
        were made, all with the same timeout): this runs for every room update."""
        if not self.replies_connected():
            # The answer could not reach us: say so now rather than after the timeout.
            raise NotAvailable("temporarily unavailable")
        req = str(next(self._ids))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s
        self._pending[req] = (settle, deadline)
        if self._sweep_at is None:
            self._sweep_at = loop.call_at(deadline, self._sweep)
        self._enqueue([command.encode(req)], functools.partial(self._unwritten, req))

    def _unwritten(self, req: str, exc: BaseException | None) -> None:
        """After the XADD: a call whose command did not reach Redis fails at once."""
        if exc is not None and (call := self._pending.pop(req, None)) is not None:
            call[0](None, exc)

    def _sweep(self) -> None:
        """Expire the calls whose deadline passed."""
        self._sweep_at = None
        loop = asyncio.get_running_loop()
        now, pending = loop.time(), self._pending
        while pending:
            req, (settle, deadline) = next(iter(pending.items()))
            if deadline > now:
                self._sweep_at = loop.call_at(deadline, self._sweep)
                return
            del pending[req]
            settle(None, NotAvailable("the rooms service did not answer in time"))

    async def send(self, commands: list[RoomCommand]) -> None:
        """Send commands nobody waits for (the leaves of a closed socket); return once written."""
        if commands:
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            encoded = [command.encode() for command in commands]
            self._enqueue(encoded, functools.partial(_settle, written, None))
            await written

    def _enqueue(self, commands: list[str], waiter: Callable[[BaseException | None], None]) -> None:
        """Queue commands for the next XADD: the commands of every socket read in one loop turn,
        and those queued while the last XADD was on its way, go to Redis in one round trip."""
        self._queued.extend(commands)
        self._waiters.append(waiter)
        if not self._writing:
            self._writing = True
            spawn(self._write_all())  # runs after this turn's other callbacks

    async def _write_all(self) -> None:
        try:
            while self._queued:
                commands, waiters = self._queued, self._waiters
                self._queued, self._waiters = [], []
                await self._write(commands, waiters)
        finally:
            self._writing = False

    async def _write(
        self, commands: list[str], waiters: list[Callable[[BaseException | None], None]]
    ) -> None:
        stream = self._keys.rooms_cmd
        xadd: tuple[EncodableT, ...]
        if len(commands) == 1:  # the common case: a plain XADD
            xadd = ("XADD", stream, "MAXLEN", "~", STREAM_MAXLEN, "*", "c", commands[0])
        else:  # one command for the batch: each reply costs the client more than Redis
            xadd = ("EVALSHA", self._xadd_all.sha, 1, stream, STREAM_MAXLEN, *commands)
        try:
            (reply,) = await self._direct.execute(xadd)
            if isinstance(reply, NoScriptError):  # Redis restarted or flushed its scripts
                (reply,) = await self._direct.execute(("EVAL", XADD_ALL_LUA, *xadd[2:]))
            if isinstance(reply, Exception):
                raise reply
        except Exception as exc:  # every waiter of the batch gets it (RedisError, mostly)
            for waiter in waiters:
                waiter(exc)
        else:
            for waiter in waiters:
                waiter(None)

    def on_reply(self, data: bytes) -> None:
        """Subscriber callback for this node's reply channel: hands the waiting call the body
        of the reply, `"result":...` or `"error":...`, without decoding it."""
        end = data.find(b'",', len(_REQ)) if data.startswith(_REQ) and data.endswith(b"}") else -1
        if end >= 0:
            req, body = data[len(_REQ) : end].decode(), data[end + 2 : -1]
        else:  # not as the rooms service writes them: read it the long way
            try:
                reply = json.loads(data)
                req = reply["req"]
                key = "result" if "result" in reply else "error"
                body = b'"' + key.encode() + b'":' + dumpb(reply[key])
            except (ValueError, KeyError, TypeError):
                log.warning("malformed room reply ignored")
                return
        call = self._pending.pop(req, None)
        if call is not None:
            call[0](body, None)

    async def renew(self, members: dict[str, list[str]]) -> None:
        """Push the heartbeat deadline of every member of this node, in one round trip."""
        if not members:
            return
        deadline = int((time.time() + self.settings.member_ttl_s) * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for room, conns in members.items():
                # XX: a member the rooms service removed (reaped, room deleted) stays removed.
                pipe.zadd(self._keys.room_members(room), dict.fromkeys(conns, deadline), xx=True)
            await pipe.execute()


class RoomCommands:
    """`room.join`, `room.leave`, `room.get`, `room.update` for the native protocol."""

    def __init__(
        self,
        node: "GatewayNode",
        namespaces: Namespaces,
        failed: Callable[[ClientConnection, Any, str, ServiceError | RedisError], None],
    ) -> None:
        self.node = node
        self.link = node.rooms
        self.namespaces = namespaces
        self._failed = failed  # answers a command that failed (Commands._failed)

    async def join(self, conn: ClientConnection, cmd: Command) -> None:
        room = _native_room(cmd.get("room"))
        state = cmd.get("state")
        if state is not None:
            check_object(state, "state")
        if room in conn.rooms:
            raise AlreadySubscribed(f"already in room {room!r}")
        if len(conn.rooms) >= self.link.settings.max_rooms:
            raise LimitExceeded("too many rooms on this connection")
        channel = room_channel(room)
        namespace = self.namespaces.of(channel)
        hub = self.node.hub
        # Subscribed before the command is sent: no push of a version after the join is missed.
        conn.rooms.add(room)
        try:
            try:
                await hub.join(channel, conn, namespace)
            except (OSError, TimeoutError) as exc:  # the pub/sub link, not a command
                raise NotAvailable("temporarily unavailable") from exc
            if namespace.has_history:  # a configuration gave the namespace history
                hub.go_live(channel, conn, Position("", ""))
            info = self.node.presence_info(conn)
            result = await self.link.call_raw(
                self.link.command("join", room, conn, state=state, info=info)
            )
        except BaseException:
            conn.rooms.discard(room)
            hub.leave(channel, conn)
            raise
        conn.reply_raw(cmd.get("id"), result)

    async def leave(self, conn: ClientConnection, cmd: Command) -> None:
        room = check_room(cmd.get("room"))
        if room not in conn.rooms:
            raise NotSubscribed(f"not in room {room!r}")
        self._forget(conn, room)
        conn.reply_raw(
            cmd.get("id"), await self.link.call_raw(self.link.command("leave", room, conn))
        )

    def get(self, conn: ClientConnection, cmd: Command) -> Awaitable[None] | None:
        room = check_room(cmd.get("room"))
        return self._pipelined(conn, cmd.get("id"), self.link.command("get", room, conn))

    def update(self, conn: ClientConnection, cmd: Command) -> Awaitable[None] | None:
        room = _native_room(cmd.get("room"))
        if "patch" not in cmd:
            raise BadRequest("patch is required")
        patch = check_object(cmd["patch"], "patch (a JSON merge patch)")
        version = check_version(cmd.get("version"))
        if room not in conn.rooms:
            raise NotSubscribed(f"not in room {room!r}: join it first")
        command = self.link.command("update", room, conn, patch=patch, version=version)
        return self._pipelined(conn, cmd.get("id"), command)

    def _pipelined(
        self, conn: ClientConnection, cmd_id: Any, command: RoomCommand
    ) -> Awaitable[None] | None:
        """Send a command the socket's next frames need not wait for: its reply goes out when it
        comes. A member that streams updates (a cursor, a playhead) would otherwise wait a whole
        round trip through the rooms service per update. The commands of one socket still reach
        the rooms service in the order sent; those for one room are applied and answered in
        that order; at
        `ROOM_CALLS_IN_FLIGHT` unanswered ones, the socket's next frames wait for one (what
        is returned then)."""
        if conn.room_calls >= ROOM_CALLS_IN_FLIGHT:
            return self._send_when_answered(conn, cmd_id, command)
        self._send(conn, cmd_id, command)
        return None

    async def _send_when_answered(
        self, conn: ClientConnection, cmd_id: Any, command: RoomCommand
    ) -> None:
        while conn.room_calls >= ROOM_CALLS_IN_FLIGHT:
            conn.room_slot = slot = asyncio.get_running_loop().create_future()
            await slot
        self._send(conn, cmd_id, command)

    def _send(self, conn: ClientConnection, cmd_id: Any, command: RoomCommand) -> None:
        self.link.submit(command, functools.partial(self._answer, conn, cmd_id, command))
        conn.room_calls += 1

    def _answer(
        self,
        conn: ClientConnection,
        cmd_id: Any,
        command: RoomCommand,
        body: bytes | None,
        error: BaseException | None,
    ) -> None:
        """Answer the socket (called from the subscriber's callback: it must not raise)."""
        conn.room_calls -= 1
        slot, conn.room_slot = conn.room_slot, None
        if slot is not None and not slot.done():
            slot.set_result(None)
        try:
            if error is not None:
                raise error
            conn.reply_raw(cmd_id, result_of(body or b""))
        except (ServiceError, RedisError) as exc:
            if isinstance(exc, NotSubscribed):
                # The rooms service no longer counts this socket in (reaped, room deleted):
                # forget the room here too, so that a new `room.join` works.
                self._forget(conn, command.room)
            self._failed(conn, cmd_id, f"room.{command.op}", exc)
        except Exception:  # a bug: the socket still gets an answer
            log.exception("room command failed", extra={"conn": conn.id, "op": command.op})
            self._failed(conn, cmd_id, f"room.{command.op}", InternalError())

    def _forget(self, conn: ClientConnection, room: str) -> None:
        conn.rooms.discard(room)
        self.node.hub.leave(room_channel(room), conn)


def _native_room(room: object) -> str:
    """A room a native client may join or update: not one of the Socket.IO preview rooms,
    whose state is Zou's and whose Redis channel the Socket.IO endpoint holds."""
    checked = check_room(room)
    if checked.startswith(PREVIEW_ROOMS):
        raise PermissionDenied(f"rooms {PREVIEW_ROOMS}* are Socket.IO preview rooms (read only)")
    return checked


def members_by_room(conns: Iterable[ClientConnection]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for conn in conns:
        for room in conn.rooms:
            members.setdefault(room, []).append(conn.id)
    return members


async def resync_rooms(link: RoomLink, conns: Iterable[ClientConnection]) -> None:
    """After a pub/sub outage the rooms' pushes of that time were lost: send each local member
    the current state, as a push with `state` (it replaces what the client holds)."""
    by_room: dict[str, list[ClientConnection]] = {}
    for conn in conns:
        for room in conn.rooms:
            by_room.setdefault(room, []).append(conn)

    async def one(room: str, members: list[ClientConnection]) -> None:
        try:
            snapshot = await link.call(link.command("get", room, members[0]))
        except (ServiceError, RedisError) as exc:
            log.warning("room not resynced", extra={"room": room, "error": repr(exc)})
            return
        frame = dumps({"push": "room", **snapshot}).encode()
        for conn in members:
            if room in conn.rooms:
                conn.send(frame)

    await asyncio.gather(*(one(room, members) for room, members in by_room.items()))


async def leave_all(link: RoomLink, conn: ClientConnection, rooms: set[str]) -> None:
    """The leaves of a closed socket; if they are lost, the reaper removes it soon anyway."""
    try:
        await link.send([link.command("leave", room, conn) for room in rooms])
    except RedisError:
        log.warning("room leaves not sent; the rooms service reaps them", extra={"conn": conn.id})
