"""Redis clients and the one key namespace every service uses.

Key layout (prefix `sb` by default, `REDIS_KEY_PREFIX`). `{...}` hash tags keep a channel's keys
in one Redis Cluster slot:

| key / channel                 | type     | purpose                                            |
|-------------------------------|----------|----------------------------------------------------|
| `sb:ch:{<channel>}`           | pub/sub  | live fan-out of one channel to gateways             |
| `sb:hist:{<channel>}`         | stream   | channel history (MAXLEN and TTL per namespace)      |
| `sb:meta:{<channel>}`         | hash     | `e` = epoch of the history; lost with the history   |
| `sb:presence:{<channel>}`     | hash     | client id -> JSON info                              |
| `sb:presence:{<channel>}:exp` | zset     | client id scored by expiry (ms)                     |
| `sb:control`                  | pub/sub  | gateway-to-gateway commands (disconnect, revoke)    |
| `sb:nodes`                    | hash     | gateway id -> JSON stats, refreshed periodically    |
| `sb:revoked:<jti>`            | string   | a revoked token id, expires with the token          |
| `sb:events`                   | stream   | every published event with a name, for handlers     |
| `sb:events:dlq`               | stream   | events and calls whose handler failed every attempt |
| `sb:rpc`                      | stream   | client rpc calls for the handlers service           |
| `sb:rpc:reply:<node>`         | pub/sub  | answers to one gateway's rpc calls                  |
| `sb:say`                      | pub/sub  | `say(event, obj)` between handlers instances        |
| `sb:zeph:{<room>}`            | pub/sub  | frames for every `/zeph` socket in a room           |
| `sb:zeph:{<room>}:members`    | hash     | `/zeph` connection id -> JSON {username, uid}       |
| `sb:zeph:{<room>}:exp`        | zset     | `/zeph` connection id -> deadline (ms)              |
| `sb:rooms:cmd`                | stream   | room commands from gateways (consumer group `rooms`)|
| `sb:rooms`                    | zset     | room id -> when the reaper should look at it (ms)   |
| `sb:room:{<id>}`              | hash     | `state` (JSON), `version`, `updated` (ms)           |
| `sb:room:{<id>}:members`      | zset     | connection id -> heartbeat deadline (ms)            |
| `sb:room:{<id>}:conns`        | hash     | connection id -> user id                            |
| `sb:room:{<id>}:people`       | zset     | user id -> version of their first join (order)      |
| `sb:room:{<id>}:info`         | hash     | connection id -> JSON info sent with its join       |
| `sb:room:{<id>}:done`         | zset     | command entry ids applied (ms), against redelivery  |
| `sb:reply:<node>`             | pub/sub  | answers to one gateway's room commands              |

services/common/rooms.py documents the room keys and commands.
"""

from collections.abc import AsyncIterator, Callable
from typing import Any

import hiredis
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError

from .settings import RedisSettings

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


class Keys:
    """Builds every Redis key and channel name from the configured prefix."""

    __slots__ = (
        "control",
        "dlq",
        "events",
        "nodes",
        "prefix",
        "rooms",
        "rooms_cmd",
        "rpc",
        "say",
    )

    def __init__(self, prefix: str = "sb") -> None:
        self.prefix = prefix
        self.control = f"{prefix}:control"
        self.nodes = f"{prefix}:nodes"
        self.events = f"{prefix}:events"
        self.dlq = f"{prefix}:events:dlq"
        self.rpc = f"{prefix}:rpc"
        self.say = f"{prefix}:say"
        self.rooms = f"{prefix}:rooms"
        self.rooms_cmd = f"{prefix}:rooms:cmd"

    def room(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}"

    def room_members(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}:members"

    def room_conns(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}:conns"

    def room_people(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}:people"

    def room_info(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}:info"

    def room_done(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}:done"

    def reply(self, node: str) -> str:
        return f"{self.prefix}:reply:{node}"

    def zeph_room(self, room: str) -> str:
        return f"{self.prefix}:zeph:{{{room}}}"

    def rpc_reply(self, node: str) -> str:
        return f"{self.prefix}:rpc:reply:{node}"

    def channel(self, channel: str) -> str:
        return f"{self.prefix}:ch:{{{channel}}}"

    def channel_from_pubsub(self, name: str) -> str:
        """Inverse of `channel()`: `sb:ch:{news}` -> `news`."""
        return name[len(self.prefix) + 5 : -1]

    def history(self, channel: str) -> str:
        return f"{self.prefix}:hist:{{{channel}}}"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}:meta:{{{channel}}}"

    def presence(self, channel: str) -> str:
        return f"{self.prefix}:presence:{{{channel}}}"

    def presence_expiry(self, channel: str) -> str:
        return f"{self.prefix}:presence:{{{channel}}}:exp"

    def revoked(self, jti: str) -> str:
        return f"{self.prefix}:revoked:{jti}"


def make_client(settings: RedisSettings, **overrides: Any) -> Redis:
    """A client with the project's pinned reply shape (RESP3) and fail-fast timeouts."""
    options: dict[str, Any] = {
        "protocol": 3,
        "socket_connect_timeout": settings.connect_timeout_s,
        # Fail fast when Redis hangs: a request waits this long at most, then gets error 108.
        "socket_timeout": settings.socket_timeout_s,
        "health_check_interval": settings.health_check_interval_s,
        "retry_on_timeout": False,
    }
    options.update(overrides)
    client = Redis.from_url(settings.url, **options)
    pool = client.connection_pool
    pool.connection_class = packing_with_hiredis(pool.connection_class)
    if "db" in overrides:
        # from_url lets a db in the URL's path win over the keyword: the caller's must win.
        pool.connection_kwargs["db"] = overrides["db"]
    return client


def packing_with_hiredis(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` (TCP, TLS or Unix socket) with commands packed by hiredis, in C, as redis-py's
    synchronous client does when hiredis is installed: its asyncio client packs them in Python,
    an argument at a time, which costs a room update's path more than the rest of the client
    (a rooms batch script of 14 updates: 79 us in Python, 8 us in C)."""
    if (known := _PACKED.get(base)) is not None:
        return known

    class HiredisPacked(base):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            # As redis-py: a command name with a space ("CONFIG GET") is sent as two words.
            if isinstance(args[0], str):
                args = (*args[0].encode().split(), *args[1:])
            elif b" " in args[0]:
                args = (*args[0].split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError as exc:  # None, a dict...: what redis-py's encoder refuses too
                raise DataError(str(exc)) from None

    HiredisPacked.__name__ = HiredisPacked.__qualname__ = f"HiredisPacked{base.__name__}"
    _PACKED[base] = HiredisPacked
    return HiredisPacked


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def redis_ctx(
    key: web.AppKey[Redis], settings: RedisSettings, *, client: Redis | None = None
) -> CleanupCtx:
    """Store a Redis client under `key` for the app's lifetime.

    A client passed in (tests) is stored but not closed: its owner closes it. The service
    starts even when Redis is down: `/readyz` says so, and the bus reconnects by itself.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if client is not None:
            app[key] = client
            yield
            return
        owned = make_client(settings)
        app[key] = owned
        try:
            yield
        finally:
            await owned.aclose()

    return ctx
