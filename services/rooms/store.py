"""Room state in Redis: each change in a Lua script, so replicas never interleave on a room.

Why the merge patch is applied in Python and not with cjson inside Lua: Redis's cjson turns an
empty array into `{}` and keeps 14 significant digits of a number, so a state would not survive
a round trip. Updates are therefore read, merged here and written by a script that checks the
room is still at the version read (compare-and-set, read and merged again otherwise): the same
guarantee as WATCH/MULTI, without a connection pinned to the WATCH. A batch's updates go
together: one pipelined read of all their rooms, one pipelined script per room that writes the
room's whole run of updates and acks its entries. The replica remembers the state it last wrote
for a room, so that a busy room's next batch is merged from it without the read: one round trip,
with the script checking what the read would have (same room and version, membership, entries
not applied yet) and asking for the read when anything moved. Joins and leaves need no merge and
are one script each.

Every script that changes a room also bumps its version, publishes the push on the room's
channel and the reply to the gateway, and records the command's stream entry id, all
atomically: a command redelivered after a crash is recognised and not applied twice.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from services.common.compact_json import dumps
from services.common.errors import (
    Conflict,
    LimitExceeded,
    NotAvailable,
    NotSubscribed,
    ServiceError,
)
from services.common.redis import Keys
from services.common.redis_direct import DirectConnection
from services.common.rooms import COMMAND_GROUP, RoomCommand, merge_patch, room_channel

from .scripts import DELETE_LUA, JOIN_LUA, LEAVE_LUA, REAP_LUA, UPDATES_LUA

CAS_ATTEMPTS = 100  # an update that loses this many races in a row gets error 108
KNOWN_CHARS = 4 * 1024 * 1024  # JSON of the room states remembered between batches, at most


@dataclass(frozen=True, slots=True)
class Limits:
    """What a room may hold; from the service's settings."""

    idle_ttl_ms: int
    max_rooms: int
    max_state_bytes: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one command did: `duplicate` means it had been applied before."""

    version: int
    duplicate: bool = False
    changed: bool = True


# What became of one command: its outcome, or the error it was refused with (already replied).
Settled = tuple[str, "Outcome | ServiceError"]


@dataclass(frozen=True, slots=True)
class _Known:
    """A room's state at a version: as read, or as this replica wrote it."""

    version: int
    created: str  # when the room was made (ms): versions start again in a room made again
    state: Any
    raw: str  # `state` as JSON


@dataclass(slots=True)
class _Plan:
    """A room's run of updates, merged: the script's arguments and each command's outcome."""

    start: _Known  # the room merged from, which the script checks is still there
    end: _Known  # the room once the script ran (`start` until the merge is done)
    args: list[str] = field(default_factory=list)
    outcomes: list[Settled] = field(default_factory=list)

    def add(
        self,
        kind: str,
        entry: str,
        outcome: "Outcome | ServiceError",
        conn: str,
        reply: list[str],
        a: str = "",
        b: str = "",
    ) -> None:
        """One command: its arguments to the script, and what became of it."""
        self.args += [kind, entry, conn, *reply, a, b]
        self.outcomes.append((entry, outcome))


class RoomStore:
    """Applies room commands and serves the REST reads; every change is one script call."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        limits: Limits,
        *,
        on_read: Callable[[str, int], None] = lambda reason, rooms: None,
    ) -> None:
        self._redis = redis
        self._on_read = on_read  # (reason, rooms): "not_remembered" or "changed"
        self._keys = keys
        self.limits = limits
        self._join = redis.register_script(JOIN_LUA)
        self._leave = redis.register_script(LEAVE_LUA)
        self._updates = redis.register_script(UPDATES_LUA)
        self._direct = DirectConnection(redis)  # the batch writes: one at a time
        self._reap = redis.register_script(REAP_LUA)
        self._delete = redis.register_script(DELETE_LUA)
        # Rooms as this replica last wrote them, least recently written first.
        self._known: dict[str, _Known] = {}
        self._known_chars = 0

    def _room_keys(self, room: str) -> list[str]:
        k = self._keys
        return [
            k.room(room),
            k.room_members(room),
            k.room_conns(room),
            k.room_people(room),
            k.room_done(room),
            k.rooms,
            k.room_info(room),
        ]

    def _push_channel(self, room: str) -> str:
        return self._keys.channel(room_channel(room))

    def _reply_args(self, cmd: RoomCommand) -> list[str]:
        if not cmd.req or not cmd.gw:
            return ["", ""]
        return [self._keys.reply(cmd.gw), dumps(cmd.req)]

    async def join(self, cmd: RoomCommand, entry: str, now_ms: int) -> Outcome:
        state = dumps(cmd.state if cmd.state is not None else {})
        self._check_size(state)
        self.forget(cmd.room)
        status, value = await self._join(
            keys=self._room_keys(cmd.room),
            args=[
                now_ms,
                cmd.room,
                dumps(cmd.room),
                cmd.conn,
                cmd.user,
                cmd.ttl_ms,
                state,
                entry,
                self._push_channel(cmd.room),
                *self._reply_args(cmd),
                self.limits.idle_ttl_ms,
                self.limits.max_rooms,
                dumps(cmd.info) if cmd.info else "",
                "1" if cmd.reset else "",
            ],
        )
        if status == b"limit":
            raise LimitExceeded(
                f"room limit reached: {value} rooms exist (ROOMS_MAX={self.limits.max_rooms})"
            )
        return Outcome(int(value), duplicate=status == b"dup")

    async def leave(self, cmd: RoomCommand, entry: str, now_ms: int) -> Outcome:
        self.forget(cmd.room)
        status, value = await self._leave(
            keys=self._room_keys(cmd.room),
            args=[
                now_ms,
                cmd.room,
                dumps(cmd.room),
                cmd.conn,
                entry,
                self._push_channel(cmd.room),
                *self._reply_args(cmd),
                self.limits.idle_ttl_ms,
            ],
        )
        if status == b"missing":
            await self.reply(cmd, {"result": _empty(cmd.room)})
            return Outcome(0, changed=False)
        return Outcome(int(value), duplicate=status == b"dup")

    async def update_runs(
        self,
        runs: Mapping[str, Sequence[tuple[RoomCommand, str]]],
        now_ms: int,
        *,
        also: Sequence[EncodableT] | None = None,
    ) -> tuple[dict[str, list[Settled]], Any]:
        """Apply runs of updates, each a room's consecutive updates in stream order; every
        entry settled here is acked too. `also` adds one more command to the first write's
        pipeline (the consumer's next read); its reply, as Redis sent it, comes back second
        (None if nothing was written, or if it failed: it is not one of the updates).

        A room this replica wrote last is merged from what it wrote; the others are read, all in
        one pipeline, and merged. Then one pipelined script per room writes its run, checking
        the room is still as merged from (compare-and-set; a room that moved is read and merged
        again). One round trip for a busy room's batch, two when it must be read.
        """
        also_reply: Any = None
        settled: dict[str, list[Settled]] = {}
        refused: list[tuple[RoomCommand, str, ServiceError]] = []
        pending = dict(runs)
        changed: set[str] = set()  # rooms whose write found them moved since the merge
        for _ in range(CAS_ATTEMPTS):
            plans = {
                room: self._merge(room, run, known)
                for room, run in pending.items()
                if (known := self._known.get(room)) is not None
            }
            unread = {room: run for room, run in pending.items() if room not in plans}
            if unread:
                moved = len(changed & unread.keys())
                self._on_read("changed", moved)
                self._on_read("not_remembered", len(unread) - moved)
                plans.update(await self._plan(unread))
            replies: list[Any] = []
            if plans:
                replies, also_reply = await self._write_plans(plans, now_ms, also)
                also = None
            for (room, plan), (status, _) in zip(plans.items(), replies, strict=True):
                if status == b"retry":
                    self.forget(room)
                    changed.add(room)
                else:
                    settled[room] = plan.outcomes
                    del pending[room]
                    self._remember(room, plan.end)
            for room in [room for room in pending if room not in plans]:
                # No room (any more): nobody can be a member of it.
                gone = NotSubscribed(f"not a member of room {room!r}: join it first")
                refused.extend((cmd, entry, gone) for cmd, entry in pending.pop(room))
            if not pending:
                break
        busy = NotAvailable("room is too busy: update not applied, try again")
        refused.extend((cmd, entry, busy) for run in pending.values() for cmd, entry in run)
        for cmd, entry, exc in refused:
            settled.setdefault(cmd.room, []).append((entry, exc))
        await self._refuse(refused)
        return settled, also_reply

    def _remember(self, room: str, known: _Known) -> None:
        self.forget(room)
        self._known[room] = known
        self._known_chars += len(known.raw)
        while self._known_chars > KNOWN_CHARS:
            self.forget(next(iter(self._known)))

    def forget(self, room: str) -> None:
        """Merge the room's next updates from a read (it changed, or may have, elsewhere)."""
        known = self._known.pop(room, None)
        if known is not None:
            self._known_chars -= len(known.raw)

    async def _refuse(self, refused: Sequence[tuple[RoomCommand, str, ServiceError]]) -> None:
        """Reply with each error and ack the entries, in one round trip."""
        if not refused:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for cmd, _, exc in refused:
                if cmd.req and cmd.gw:
                    pipe.publish(
                        self._keys.reply(cmd.gw), dumps({"req": cmd.req, "error": exc.to_dict()})
                    )
            pipe.xack(self._keys.rooms_cmd, COMMAND_GROUP, *(entry for _, entry, _ in refused))
            await pipe.execute()

    async def _write_plans(
        self,
        plans: Mapping[str, "_Plan"],
        now_ms: int,
        also: Sequence[EncodableT] | None,
    ) -> tuple[list[Any], Any]:
        """One EVALSHA per room in one pipeline (and the command `also`): the scripts' replies,
        and the reply to `also` as Redis sent it. On the store's own connection (one batch
        at a time, see services/common/redis_direct.py); the script is loaded again only when
        Redis says it lost it (a restart, SCRIPT FLUSH)."""
        also_reply: Any = None
        for attempt in range(2):
            commands: list[Sequence[EncodableT]] = []
            for room, plan in plans.items():
                keys = self._room_keys(room)
                commands.append(
                    (
                        "EVALSHA",
                        self._updates.sha,
                        len(keys) + 1,
                        *keys,
                        self._keys.rooms_cmd,
                        now_ms,
                        room,
                        dumps(room),
                        self.limits.idle_ttl_ms,
                        self._push_channel(room),
                        plan.start.version,
                        plan.start.created,
                        COMMAND_GROUP,
                        *plan.args,
                    )
                )
            if also is not None:
                commands.append(also)
            replies = await self._direct.execute(*commands)
            if also is not None:
                also_reply = replies.pop()
                also = None  # it ran: not again with the scripts below
                if isinstance(also_reply, Exception):
                    also_reply = None
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                # Redis lost the script (every EVALSHA failed alike): nothing ran, send again.
                await self._redis.script_load(UPDATES_LUA)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies, also_reply
        raise AssertionError("unreachable")

    async def _plan(
        self, runs: Mapping[str, Sequence[tuple[RoomCommand, str]]]
    ) -> dict[str, "_Plan"]:
        """Read every room of `runs` at once; merge each room's patches into a plan."""
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            for room, run in runs.items():
                pipe.hmget(keys.room(room), ["state", "version", "created"])
                pipe.zmscore(keys.room_members(room), [cmd.conn for cmd, _ in run])
                pipe.zmscore(keys.room_done(room), [entry for _, entry in run])
            replies = await pipe.execute()
        plans: dict[str, _Plan] = {}
        for index, (room, run) in enumerate(runs.items()):
            (raw_state, raw_version, created), members, done = replies[3 * index : 3 * index + 3]
            if raw_version is not None:
                raw = raw_state.decode()
                read = _Known(int(raw_version), (created or b"").decode(), json.loads(raw), raw)
                plans[room] = self._merge(room, run, read, members, done)
        return plans

    def _merge(
        self,
        room: str,
        run: Sequence[tuple[RoomCommand, str]],
        start: _Known,
        members: Sequence[float | None] | None = None,
        done: Sequence[float | None] | None = None,
    ) -> "_Plan":
        """Merge a run from `start`. Membership and entries applied before come from a read;
        without one, each command is taken for a member's, not applied yet, and the script
        checks that (and asks for the read when wrong)."""
        version, current, current_raw = start.version, start.state, start.raw
        plan = _Plan(start, start)
        for index, (cmd, entry) in enumerate(run):
            assert cmd.patch is not None
            if done is not None and done[index] is not None:
                # Applied before (redelivered): its reply went out then; acked now.
                plan.add("d", entry, Outcome(version, duplicate=True), "", ["", ""])
                continue
            reply = self._reply_args(cmd)
            try:
                if members is not None and members[index] is None:
                    raise NotSubscribed(f"not a member of room {room!r}: join it first")
                if cmd.version is not None and cmd.version != version:
                    raise Conflict(
                        f"room {room!r} is at version {version}, not {cmd.version}",
                        version=version,
                        state=current,
                    )
                merged = merge_patch(current, cmd.patch)
                merged_raw = dumps(merged)
                if merged_raw == current_raw:
                    plan.add("s", entry, Outcome(version, changed=False), cmd.conn, reply)
                    continue
                self._check_size(merged_raw)
            except ServiceError as exc:
                member = "" if isinstance(exc, NotSubscribed) else cmd.conn
                plan.add("e", entry, exc, member, reply, dumps(exc.to_dict()))
                continue
            version += 1
            current, current_raw = merged, merged_raw
            plan.add("u", entry, Outcome(version), cmd.conn, reply, merged_raw, dumps(cmd.patch))
        plan.end = _Known(version, start.created, current, current_raw)
        return plan

    async def get(self, cmd: RoomCommand) -> Outcome:
        snapshot = await self.snapshot(cmd.room)
        await self.reply(cmd, {"result": snapshot})
        return Outcome(int(snapshot["version"]), changed=False)

    async def reply(self, cmd: RoomCommand, body: dict[str, Any]) -> None:
        if cmd.req and cmd.gw:
            await self._redis.publish(self._keys.reply(cmd.gw), dumps({"req": cmd.req, **body}))

    async def snapshot(self, room: str) -> dict[str, Any]:
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.room(room), ["state", "version"])
            pipe.zrange(keys.room_people(room), 0, -1)
            (raw_state, raw_version), people = await pipe.execute()
        if raw_version is None:
            return _empty(room)
        return {
            "room": room,
            "version": int(raw_version),
            "state": json.loads(raw_state),
            "people": [p.decode() for p in people],
        }

    def _check_size(self, state: str) -> None:
        size = len(state.encode())
        if size > self.limits.max_state_bytes:
            raise LimitExceeded(
                f"room state of {size} bytes is over the limit of {self.limits.max_state_bytes}"
            )

    # -- presence and expiry ---------------------------------------------------------------

    async def due(self, now_ms: int, limit: int = 1000) -> list[str]:
        """Rooms the reaper should look at now."""
        return _ids(await self._redis.zrangebyscore(self._keys.rooms, "-inf", now_ms, 0, limit))

    async def reap(self, room: str, now_ms: int) -> int:
        """Remove members whose deadline passed; -1 when the room itself is gone."""
        self.forget(room)
        removed = await self._reap(
            keys=self._room_keys(room),
            args=[
                now_ms,
                room,
                dumps(room),
                self._push_channel(room),
                self.limits.idle_ttl_ms,
            ],
        )
        return int(removed)

    # -- operators -------------------------------------------------------------------------

    async def count(self) -> int:
        return int(await self._redis.zcard(self._keys.rooms))

    async def list_rooms(self, limit: int) -> list[dict[str, Any]]:
        ids = sorted(await self.all_ids())
        keys = self._keys
        rooms: list[dict[str, Any]] = []
        for start in range(0, min(len(ids), limit), 500):
            chunk = ids[start : min(start + 500, limit)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in chunk:
                    pipe.hget(keys.room(room), "version")
                    pipe.zcard(keys.room_members(room))
                replies = await pipe.execute()
            for i, room in enumerate(chunk):
                version, members = replies[2 * i], replies[2 * i + 1]
                if version is not None:
                    rooms.append({"room": room, "version": int(version), "members": members})
        return rooms

    async def members_total(self, rooms: list[str]) -> int:
        total = 0
        for start in range(0, len(rooms), 500):
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in rooms[start : start + 500]:
                    pipe.zcard(self._keys.room_members(room))
                total += sum(await pipe.execute())
        return total

    async def all_ids(self) -> list[str]:
        return _ids(await self._redis.zrange(self._keys.rooms, 0, -1))

    async def describe(self, room: str) -> dict[str, Any] | None:
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.room(room))
            pipe.zrange(keys.room_people(room), 0, -1)
            pipe.zrange(keys.room_members(room), 0, -1, withscores=True)
            pipe.hgetall(keys.room_conns(room))
            pipe.pttl(keys.room(room))
            pipe.hgetall(keys.room_info(room))
            fields, people, members, conns, ttl, infos = await pipe.execute()
        if not fields:
            return None
        fields = cast(dict[bytes, bytes], fields)
        return {
            "room": room,
            "version": int(fields[b"version"]),
            "state": json.loads(fields[b"state"]),
            "people": [p.decode() for p in people],
            "members": [
                {
                    "conn": c.decode(),
                    "user": conns.get(c, b"").decode(),
                    "deadline_ms": int(d),
                    "info": json.loads(infos[c]) if c in infos else None,
                }
                for c, d in members
            ],
            "updated_ms": int(fields.get(b"updated", b"0")),
            "expires_in_ms": ttl if ttl >= 0 else None,
        }

    async def delete(self, room: str) -> int | None:
        """Delete a room and tell its members; its final version, or None if there was none."""
        self.forget(room)
        version = await self._delete(
            keys=self._room_keys(room),
            args=[room, dumps(room), self._push_channel(room), self._keys.control],
        )
        if int(version) < 0:
            return None
        return int(version)


def _ids(raw: Any) -> list[str]:
    return [i.decode() for i in raw]


def _empty(room: str) -> dict[str, Any]:
    return {"room": room, "version": 0, "state": {}, "people": []}
