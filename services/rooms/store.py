"""Room state in Redis: one Lua script per change, so replicas never interleave on a room.

Why the merge patch is applied in Python and not with cjson inside Lua: Redis's cjson turns an
empty array into `{}` and keeps 14 significant digits of a number, so a state would not survive
a round trip. An update therefore reads the state, merges in Python, and writes with a script
that checks the version is still the one it read (compare-and-set, retried otherwise): the same
guarantee as WATCH/MULTI, in one round trip and without a connection pinned to the WATCH.
Joins and leaves need no merge and are one script each.

Every script that changes a room also bumps its version, publishes the push on the room's
channel and the reply to the gateway, and records the command's stream entry id, all
atomically: a command redelivered after a crash is recognised and not applied twice.
"""

import json
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from services.common.errors import Conflict, LimitExceeded, NotAvailable, NotSubscribed
from services.common.redis import Keys
from services.common.rooms import RoomCommand, dumps, merge_patch, room_channel

# Entry ids of applied commands are kept this long per room (a redelivery comes sooner).
DONE_WINDOW_MS = 3_600_000
CAS_ATTEMPTS = 100

# KEYS: room, members, conns, people, done, index, info.
_COMMON = """
local K_ROOM, K_MEMBERS, K_CONNS, K_PEOPLE, K_DONE, K_INDEX, K_INFO =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

local function people_json()
  local users = redis.call('ZRANGE', K_PEOPLE, 0, -1)
  local out = {}
  for i, user in ipairs(users) do out[i] = cjson.encode(user) end
  return '[' .. table.concat(out, ',') .. ']'
end

local function seen(entry)
  return entry ~= '' and redis.call('ZSCORE', K_DONE, entry)
end

local function done(entry, now)
  if entry ~= '' then
    redis.call('ZADD', K_DONE, now, entry)
    redis.call('ZREMRANGEBYSCORE', K_DONE, '-inf', now - DONE_WINDOW_MS)
  end
end

-- Index score = when the reaper looks next; a room without members expires when idle.
local function settle(room, now, idle_ms)
  local first = redis.call('ZRANGE', K_MEMBERS, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('PERSIST', K_ROOM)
    redis.call('PERSIST', K_DONE)
    redis.call('ZADD', K_INDEX, first[2], room)
  else
    redis.call('PEXPIRE', K_ROOM, idle_ms)
    redis.call('PEXPIRE', K_DONE, idle_ms)
    redis.call('ZADD', K_INDEX, now + idle_ms, room)
  end
end

-- Removes connections; drops a user from people once none of their connections is left.
local function remove(conns)
  local users = {}
  for _, conn in ipairs(conns) do
    redis.call('ZREM', K_MEMBERS, conn)
    local user = redis.call('HGET', K_CONNS, conn)
    redis.call('HDEL', K_CONNS, conn)
    redis.call('HDEL', K_INFO, conn)
    if user then users[user] = true end
  end
  if next(users) == nil then return end
  for _, user in ipairs(redis.call('HVALS', K_CONNS)) do users[user] = nil end
  for user in pairs(users) do redis.call('ZREM', K_PEOPLE, user) end
end

local function bump(now)
  local version = redis.call('HINCRBY', K_ROOM, 'version', 1)
  redis.call('HSET', K_ROOM, 'updated', now)
  return version
end

-- ARGV tail shared by every changing script: push channel, reply channel, req JSON ('' = none)
local function publish(channel, reply_channel, req, room_json, version, body, state)
  local people = people_json()
  if req ~= '' then
    redis.call('PUBLISH', reply_channel, '{"req":' .. req .. ',"result":{"room":' .. room_json
      .. ',"version":' .. version .. ',"state":' .. state .. ',"people":' .. people .. '}}')
  end
  if body ~= '' then
    redis.call('PUBLISH', channel, '\\n{"push":"room","room":' .. room_json .. ',"version":'
      .. version .. body .. ',"people":' .. people .. '}')
  end
  return people
end
""".replace("DONE_WINDOW_MS", str(DONE_WINDOW_MS))

# ARGV: now, room, room JSON, conn, user, ttl ms, initial state JSON, entry, push channel,
# reply channel, req JSON, idle ms, max rooms, info JSON ('' = none). Returns {status, version}.
JOIN_LUA = (
    _COMMON
    + """
local now, room, room_json = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if seen(ARGV[8]) then return {'dup', 0} end
local created = redis.call('EXISTS', K_ROOM) == 0
if created then
  if redis.call('ZCARD', K_INDEX) >= tonumber(ARGV[13])
      and not redis.call('ZSCORE', K_INDEX, room) then
    return {'limit', redis.call('ZCARD', K_INDEX)}
  end
  redis.call('HSET', K_ROOM, 'state', ARGV[7], 'version', 0, 'created', now)
end
local added = redis.call('ZADD', K_MEMBERS, now + tonumber(ARGV[6]), ARGV[4]) == 1
local version = tonumber(redis.call('HGET', K_ROOM, 'version'))
local body = ''
if added or created then
  version = bump(now)
  if added then
    redis.call('HSET', K_CONNS, ARGV[4], ARGV[5])
    if ARGV[14] ~= '' then redis.call('HSET', K_INFO, ARGV[4], ARGV[14]) end
    redis.call('ZADD', K_PEOPLE, 'NX', version, ARGV[5])
  end
  body = created and (',"state":' .. ARGV[7]) or ',"patch":{}'
end
done(ARGV[8], now)
settle(room, now, tonumber(ARGV[12]))
publish(ARGV[9], ARGV[10], ARGV[11], room_json, version, body, redis.call('HGET', K_ROOM, 'state'))
return {'ok', version}
"""
)

# ARGV: now, room, room JSON, conn, entry, push channel, reply channel, req JSON, idle ms.
LEAVE_LUA = (
    _COMMON
    + """
local now, room, room_json = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if seen(ARGV[5]) then return {'dup', 0} end
if redis.call('EXISTS', K_ROOM) == 0 then return {'missing', 0} end
local version = tonumber(redis.call('HGET', K_ROOM, 'version'))
local body = ''
if redis.call('ZSCORE', K_MEMBERS, ARGV[4]) then
  remove({ARGV[4]})
  version = bump(now)
  body = ',"patch":{}'
end
done(ARGV[5], now)
settle(room, now, tonumber(ARGV[9]))
publish(ARGV[6], ARGV[7], ARGV[8], room_json, version, body, redis.call('HGET', K_ROOM, 'state'))
return {'ok', version}
"""
)

# ARGV: now, room, room JSON, conn, version read, new state JSON, patch JSON, entry,
# push channel, reply channel, req JSON, idle ms.
UPDATE_LUA = (
    _COMMON
    + """
local now, room, room_json = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if seen(ARGV[8]) then return {'dup', 0} end
if redis.call('EXISTS', K_ROOM) == 0 or not redis.call('ZSCORE', K_MEMBERS, ARGV[4]) then
  return {'member', 0}
end
if redis.call('HGET', K_ROOM, 'version') ~= ARGV[5] then return {'retry', 0} end
redis.call('HSET', K_ROOM, 'state', ARGV[6])
local version = bump(now)
done(ARGV[8], now)
settle(room, now, tonumber(ARGV[12]))
publish(ARGV[9], ARGV[10], ARGV[11], room_json, version, ',"patch":' .. ARGV[7], ARGV[6])
return {'ok', version}
"""
)

# ARGV: now, room, room JSON, push channel, idle ms. Returns members removed, -1: room gone.
REAP_LUA = (
    _COMMON
    + """
local now, room = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', K_ROOM) == 0 then
  redis.call('DEL', K_MEMBERS, K_CONNS, K_PEOPLE, K_DONE, K_INFO)
  redis.call('ZREM', K_INDEX, room)
  return -1
end
local expired = redis.call('ZRANGEBYSCORE', K_MEMBERS, '-inf', now)
if #expired > 0 then
  remove(expired)
  local version = bump(now)
  publish(ARGV[4], '', '', ARGV[3], version, ',"patch":{}', '')
  settle(room, now, tonumber(ARGV[5]))
  return #expired
end
-- Nothing changed: look again later, without extending an idle room's life (the reaper's
-- clock and Redis's may differ a little; re-arming the expiry here could keep it forever).
local first = redis.call('ZRANGE', K_MEMBERS, 0, 0, 'WITHSCORES')
if first[1] then
  redis.call('ZADD', K_INDEX, first[2], room)
else
  local ttl = redis.call('PTTL', K_ROOM)
  if ttl < 0 then
    ttl = tonumber(ARGV[5])
    redis.call('PEXPIRE', K_ROOM, ttl)
  end
  redis.call('ZADD', K_INDEX, now + math.max(ttl, 100), room)
end
return 0
"""
)

# ARGV: room, room JSON, push channel. Returns the final version, or -1 when there is no room.
DELETE_LUA = (
    _COMMON
    + """
if redis.call('EXISTS', K_ROOM) == 0 then return -1 end
local version = redis.call('HINCRBY', K_ROOM, 'version', 1)
redis.call('PUBLISH', ARGV[3], '\\n{"push":"room","room":' .. ARGV[2] .. ',"version":' .. version
  .. ',"state":null,"people":[],"deleted":true}')
redis.call('DEL', K_ROOM, K_MEMBERS, K_CONNS, K_PEOPLE, K_DONE, K_INFO)
redis.call('ZREM', K_INDEX, ARGV[1])
return version
"""
)


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


class RoomStore:
    """Applies room commands and serves the REST reads; every change is one script call."""

    def __init__(self, redis: Redis, keys: Keys, limits: Limits) -> None:
        self._redis = redis
        self._keys = keys
        self.limits = limits
        self._join = redis.register_script(JOIN_LUA)
        self._leave = redis.register_script(LEAVE_LUA)
        self._update = redis.register_script(UPDATE_LUA)
        self._reap = redis.register_script(REAP_LUA)
        self._delete = redis.register_script(DELETE_LUA)

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
            ],
        )
        if status == b"limit":
            raise LimitExceeded(
                f"room limit reached: {value} rooms exist (ROOMS_MAX={self.limits.max_rooms})"
            )
        return Outcome(int(value), duplicate=status == b"dup")

    async def leave(self, cmd: RoomCommand, entry: str, now_ms: int) -> Outcome:
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

    async def update(self, cmd: RoomCommand, entry: str, now_ms: int) -> Outcome:
        """Merge the patch into the current state; compare-and-set, retried on a race."""
        assert cmd.patch is not None
        keys = self._keys
        for _ in range(CAS_ATTEMPTS):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.room(cmd.room), ["state", "version"])
                pipe.zscore(keys.room_members(cmd.room), cmd.conn)
                (raw_state, raw_version), score = await pipe.execute()
            if raw_version is None or score is None:
                raise NotSubscribed(f"not a member of room {cmd.room!r}: join it first")
            version = int(raw_version)
            current = json.loads(raw_state)
            if cmd.version is not None and cmd.version != version:
                raise Conflict(
                    f"room {cmd.room!r} is at version {version}, not {cmd.version}",
                    version=version,
                    state=current,
                )
            state = dumps(merge_patch(current, cmd.patch))
            if state == raw_state.decode():  # nothing changes: no new version
                await self.reply(cmd, {"result": await self.snapshot(cmd.room)})
                return Outcome(version, changed=False)
            self._check_size(state)
            status, value = await self._update(
                keys=self._room_keys(cmd.room),
                args=[
                    now_ms,
                    cmd.room,
                    dumps(cmd.room),
                    cmd.conn,
                    version,
                    state,
                    dumps(cmd.patch),
                    entry,
                    self._push_channel(cmd.room),
                    *self._reply_args(cmd),
                    self.limits.idle_ttl_ms,
                ],
            )
            if status == b"member":
                raise NotSubscribed(f"not a member of room {cmd.room!r}: join it first")
            if status != b"retry":
                return Outcome(int(value), duplicate=status == b"dup")
        raise NotAvailable(f"room {cmd.room!r} is too busy: update not applied, try again")

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
        version = await self._delete(
            keys=self._room_keys(room), args=[room, dumps(room), self._push_channel(room)]
        )
        if int(version) < 0:
            return None
        await self._redis.publish(self._keys.control, dumps({"op": "room.deleted", "room": room}))
        return int(version)


def _ids(raw: Any) -> list[str]:
    return [i.decode() for i in raw]


def _empty(room: str) -> dict[str, Any]:
    return {"room": room, "version": 0, "state": {}, "people": []}
