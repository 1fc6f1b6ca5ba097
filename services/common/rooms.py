"""Rooms: the contract between the gateways and the rooms service (services/rooms).

A room is a JSON object shared by the people in it, with a version bumped by every change, and a
membership by connection (a user with two tabs is two connections and stays until both leave).

Commands. A gateway XADDs one entry per command on the stream `sb:rooms:cmd` (`Keys.rooms_cmd`,
MAXLEN ~ `STREAM_MAXLEN`) with one field `c`, a JSON object:

    {"op": "join" | "leave" | "get" | "update", "room": "<id>", "conn": "<connection id>",
     "user": "<user id>", "gw": "<gateway node id>", "req": "<request id>",
     "state"?: {...}      join: the initial state, used only when the join creates the room,
     "reset"?: true       join: also use `state` when the room exists but has no members
                          (a room nobody is in starts afresh, as Zou's preview rooms),
     "ttl"?: ms           join: heartbeat deadline of this member (default 10 s),
     "patch"?: {...}      update: a JSON merge patch (RFC 7386),
     "version"?: int      update: the version the patch was written against (else: applied to
                          whatever is current),
     "info"?: {...}}      join: who the connection is (user, client, name, token info),
                          shown to operators (GET /rooms/{id})

A command without `req` gets no reply (the leaves a gateway sends for a closed socket). The
rooms service reads the stream with the consumer group `rooms` (several replicas share it; an
entry left pending by a dead replica is claimed again with XAUTOCLAIM once idle), applies each
command with one Lua script, atomic in Redis, and acks it (a run of updates: in that script).
The script also records the entry id in the room (`:done`), so an entry delivered twice (its
replica died before the ack) is applied once.

Replies. PUBLISHed on `sb:reply:<gw>` (`Keys.reply`), in the same script as the change:

    {"req": "<id>", "result": {"room": "<id>", "version": 7, "state": {...}, "people": [...]}}
    {"req": "<id>", "error": {"code": 113, "message": "conflict", "version": 7, "state": {...}}}

with the protocol's error codes (services.common.errors.ErrorCode): 104 unknown op, 106 room
limit (`ROOMS_MAX`) or state size, 107 malformed command, 110 not a member (update), 113 stale
`version`, with the current `version` and `state`. A room that does not exist reads as version
0, state `{}`, nobody.

Pushes. Every change is published, in the same script, on the channel `room:<id>` of the
built-in namespace `room` (no history, no presence, subscribed by the gateway only, after a
`room.join`), in the bus's framing for pushes outside history (services.common.bus `send`):

    {"push":"room","room":"<id>","version":8,"patch":{...},"people":["alice","bob"]}
    {"push":"room","room":"<id>","version":1,"state":{...},"people":["alice"]}   (room created)
    {"push":"room","room":"<id>","version":9,"state":null,"people":[],"deleted":true}

A membership change carries `"patch":{}`. Versions of one room are published in order, each
once: a client applies a patch push whose version is its own + 1, ignores older ones, and reads
the room again (`room.get`) after a gap. A gateway whose pub/sub link broke sends each of its
members a push with the current `state` once it is back (pushes of that time were lost).

Presence. Each gateway renews the deadlines of its own members every few seconds (ZADD XX on
`:members`, no stream traffic); the rooms service removes members whose deadline passed (their
gateway died), bumps the version and publishes the new `people`. A room without members expires
`ROOMS_IDLE_TTL_S` after its last change.

Room keys (hash tag `{<id>}`, see services.common.redis): `sb:room:{<id>}` hash (`state` JSON,
`version`, `updated` ms), `:members` zset (connection -> deadline ms), `:conns` hash (connection
-> user), `:info` hash (connection -> its join's `info`), `:people` zset (user -> version of
their first join, the order of `people`), `:done` zset (applied entry ids). `sb:rooms` indexes
every room, scored by when the reaper should look at it next (the earliest member deadline, or
the idle expiry). The index is one key outside the rooms' hash tags: on Redis Cluster it would
have to be split per slot.
"""

from dataclasses import dataclass
from typing import Any

from .channels import usable_name
from .compact_json import dumps, loads
from .errors import BadRequest, MethodNotFound

NAMESPACE = "room"
COMMAND_GROUP = "rooms"  # the consumer group of the rooms service on `sb:rooms:cmd`
OPS = ("join", "leave", "get", "update")
MAX_ROOM_LENGTH = 128
STREAM_MAXLEN = 100_000
DEFAULT_MEMBER_TTL_MS = 10_000
MIN_MEMBER_TTL_MS, MAX_MEMBER_TTL_MS = 1_000, 3_600_000


def check_room(room: object) -> str:
    """A room id, or a BadRequest saying what is wrong with it."""
    if not isinstance(room, str) or not 0 < len(room) <= MAX_ROOM_LENGTH:
        raise BadRequest(f"room must be a string of 1-{MAX_ROOM_LENGTH} characters")
    if not usable_name(room):
        raise BadRequest("room must not contain whitespace, control characters or braces")
    return room


def room_channel(room: str) -> str:
    return f"{NAMESPACE}:{room}"


def check_object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object")
    return value


def check_version(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest("version must be a non-negative integer")
    return value


@dataclass(slots=True)
class RoomCommand:
    """One command on `sb:rooms:cmd`; `decode` checks every field a gateway may have sent."""

    op: str
    room: str
    conn: str = ""
    user: str = ""
    gw: str = ""
    req: str = ""
    state: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    version: int | None = None
    ttl_ms: int = DEFAULT_MEMBER_TTL_MS
    info: dict[str, Any] | None = None
    reset: bool = False

    def encode(self, req: str = "") -> str:
        """The entry's JSON; `req` (if any) replaces the command's request id."""
        body: dict[str, Any] = {"op": self.op, "room": self.room, "conn": self.conn}
        body.update(user=self.user, gw=self.gw)
        if req := req or self.req:
            body["req"] = req
        if self.state is not None:
            body["state"] = self.state
        if self.patch is not None:
            body["patch"] = self.patch
        if self.version is not None:
            body["version"] = self.version
        if self.op == "join":
            body["ttl"] = self.ttl_ms
            if self.reset:
                body["reset"] = True
        if self.info:
            body["info"] = self.info
        return dumps(body)

    @classmethod
    def decode(cls, raw: bytes | str) -> "RoomCommand":
        """Raises BadRequest or MethodNotFound; `reply_to` tells where to say so."""
        body = _object(raw)
        op = body.get("op")
        if op not in OPS:
            raise MethodNotFound(f"unknown room op {op!r}")
        ttl = body.get("ttl", DEFAULT_MEMBER_TTL_MS)
        if not isinstance(ttl, int) or isinstance(ttl, bool):
            raise BadRequest("ttl must be an integer (ms)")
        state = body.get("state")
        patch = body.get("patch")
        if op == "update" and patch is None:
            raise BadRequest("patch is required")
        info = body.get("info")
        return cls(
            op=op,
            room=check_room(body.get("room")),
            conn=_text(body, "conn"),
            user=_text(body, "user"),
            gw=_text(body, "gw"),
            req=_text(body, "req"),
            state=None if state is None else check_object(state, "state"),
            patch=None if patch is None else check_object(patch, "patch"),
            version=check_version(body.get("version")),
            ttl_ms=min(max(ttl, MIN_MEMBER_TTL_MS), MAX_MEMBER_TTL_MS),
            info=None if info is None else check_object(info, "info"),
            reset=body.get("reset") is True,
        )


def reply_to(raw: bytes | str) -> tuple[str, str]:
    """(gateway, request id) of a command, as far as it can be read, to send an error back."""
    try:
        body = _object(raw)
    except BadRequest:
        return "", ""
    gw, req = body.get("gw"), body.get("req")
    return (gw if isinstance(gw, str) else ""), (req if isinstance(req, str) else "")


def _object(raw: bytes | str) -> dict[str, Any]:
    try:
        body = loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:  # UnicodeDecodeError too
        raise BadRequest("command is not valid JSON") from None
    return check_object(body, "command")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, `null` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
