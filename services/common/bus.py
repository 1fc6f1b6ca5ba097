"""Publishing to channels and reading their history: one Lua script per operation.

A publication is appended to the channel's history stream and PUBLISHed in the same script, so
live delivery and history never disagree. What is PUBLISHed is the push frame the gateways send
to their sockets, already encoded (gateways never decode it), preceded by its offset:

    <offset>\\n{"push":"pub","channel":"news","offset":"<offset>","data":{...}}

Messages that are not in history (presence join/leave) carry an empty offset. The history
keeps one entry more than the namespace's size so that a client whose last offset is the oldest
entry still recovers. Its epoch (in the channel's meta hash) is created on first use and is lost
with the history (expiry or a flushed Redis): a client holding another epoch is told it did not
recover.
"""

import json
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from .channels import Namespace
from .compact_json import dumpb
from .events import EVENTS_MAXLEN, event_fields
from .redis import Keys

_ID_LT = """
local function id_lt(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
"""

_EPOCH = """
-- A read creates the epoch when missing but never extends it: the epoch must not outlive
-- the history it names (a publication extends both together).
local function epoch_of(meta, candidate, ttl, extend)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = candidate
    redis.call('HSET', meta, 'e', epoch)
    redis.call('PEXPIRE', meta, ttl)
  elseif extend then
    redis.call('PEXPIRE', meta, ttl)
  end
  return epoch
end
"""

# KEYS: history, meta. ARGV: pubsub channel, frame prefix, data JSON, maxlen (0 = no history),
# ttl ms, epoch candidate, event name ('' = none).
PUBLISH_LUA = (
    _EPOCH
    + """
local offset = ''
local epoch = ''
if tonumber(ARGV[4]) > 0 then
  epoch = epoch_of(KEYS[2], ARGV[6], ARGV[5], true)
  if ARGV[7] ~= '' then
    offset = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', 'd', ARGV[3], 'e', ARGV[7])
  else
    offset = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', 'd', ARGV[3])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
redis.call('PUBLISH', ARGV[1],
  offset .. '\\n' .. ARGV[2] .. ',"offset":"' .. offset .. '","data":' .. ARGV[3] .. '}')
return {offset, epoch}
"""
)

# KEYS: history, meta. ARGV: since offset ('' = none), since epoch, epoch candidate, ttl ms,
# limit of entries to return when there is no `since` (0 = none).
# Returns {epoch, top, covered (0/1), entries}.
READ_LUA = (
    _ID_LT
    + _EPOCH
    + """
local epoch = epoch_of(KEYS[2], ARGV[3], ARGV[4], false)
local top = '0-0'
local added = 0
local first = nil
local length = redis.call('XLEN', KEYS[1])
if length > 0 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = info[i + 1]
    elseif info[i] == 'entries-added' then added = info[i + 1]
    elseif info[i] == 'first-entry' then first = info[i + 1][1] end
  end
end
local since = ARGV[1]
if since == '' then
  local limit = tonumber(ARGV[5])
  if limit > 0 and length > 0 then
    return {epoch, top, 1, redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)}
  end
  return {epoch, top, 1, {}}
end
if ARGV[2] ~= epoch or id_lt(top, since) then return {epoch, top, 0, {}} end
if since == top then return {epoch, top, 1, {}} end
if added > length and id_lt(since, first) then return {epoch, top, 0, {}} end
return {epoch, top, 1, redis.call('XRANGE', KEYS[1], '(' .. since, '+')}
"""
)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is in a channel's history."""

    offset: str
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """The answer to a subscribe-with-recovery or a history call.

    `publications` are encoded JSON objects `{"offset","data"[,"event"]}`, oldest first,
    ready to be joined into a reply without decoding.
    """

    epoch: str
    offset: str
    recovered: bool
    publications: list[bytes]

    def to_json(self, *, recovered: bool | None) -> bytes:
        """The result object of `subscribe` (with `recovered`) or `history`, encoded once."""
        head = b'{"epoch":"%s","offset":"%s"' % (self.epoch.encode(), self.offset.encode())
        if recovered is not None:
            head += b',"recovered":true' if recovered else b',"recovered":false'
        return head + b',"publications":[' + b",".join(self.publications) + b"]}"

    @property
    def last_offset(self) -> str:
        if self.publications:
            return json.loads(self.publications[-1])["offset"]  # type: ignore[no-any-return]
        return self.offset


def parse_offset(offset: str | bytes) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence); b"" (no history) sorts first."""
    if not offset:
        return (-1, -1)
    ms, _, seq = (offset.decode() if isinstance(offset, bytes) else offset).partition("-")
    return (int(ms), int(seq or 0))


def encode_data(data: Any) -> bytes:
    return dumpb(data)


def _new_epoch() -> str:
    return secrets.token_hex(4)


def _render(entry_id: bytes, fields: dict[bytes, bytes] | list[bytes]) -> bytes:
    if isinstance(fields, list):  # RESP2 shape inside a script reply: flat list
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    event = fields.get(b"e")
    tail = b',"event":' + json.dumps(event.decode()).encode() if event else b""
    return b'{"offset":"' + entry_id + b'","data":' + fields[b"d"] + tail + b"}"


class Bus:
    """Publishes to channels and reads their history; shared by every service that publishes."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._publish = redis.register_script(PUBLISH_LUA)
        self._read = redis.register_script(READ_LUA)

    @property
    def keys(self) -> Keys:
        return self._keys

    def frame_prefix(self, channel: str, event: str | None) -> bytes:
        head = '{"push":"pub","channel":' + json.dumps(channel, ensure_ascii=False)
        if event:
            head += ',"event":' + json.dumps(event, ensure_ascii=False)
        return head.encode()

    async def publish(
        self,
        channel: str,
        data: bytes,
        namespace: Namespace,
        *,
        event: str | None = None,
        source: str | None = None,
    ) -> Position:
        """Publish already-encoded JSON `data`; return its position (empty without history).

        With an `event` and a `source`, the event is also appended to the handlers' stream, in
        the same round trip (a separate command: the stream is in another Redis Cluster slot).
        """
        keys = self._keys
        script_keys = [keys.history(channel), keys.meta(channel)]
        args: list[bytes | str | int] = [
            keys.channel(channel),
            self.frame_prefix(channel, event),
            data,
            namespace.history_size + 1 if namespace.history_size else 0,
            namespace.history_ttl_ms,
            _new_epoch(),
            event or "",
        ]
        if event and source:
            async with self._redis.pipeline(transaction=False) as pipe:
                await self._publish(keys=script_keys, args=args, client=pipe)
                self.append_event(pipe, event, data, source=source, channel=channel)
                (offset, epoch), _ = await pipe.execute()
        else:
            offset, epoch = await self._publish(keys=script_keys, args=args)
        return Position(offset=offset.decode(), epoch=epoch.decode())

    def append_event(
        self, redis: Redis | Pipeline, event: str, data: bytes, *, source: str, channel: str = ""
    ) -> Awaitable[Any]:
        """XADD one event to the handlers' stream (services/common/events.py)."""
        fields = event_fields(event, data.decode(), source=source, channel=channel)
        return redis.xadd(
            self._keys.events,
            cast(Any, fields),
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )

    async def send(self, channel: str, frame: bytes) -> None:
        """PUBLISH a push that is not part of history (presence join/leave)."""
        await self._redis.publish(self._keys.channel(channel), b"\n" + frame)

    async def read(
        self, channel: str, namespace: Namespace, since: Position | None, *, limit: int = 0
    ) -> HistoryRead:
        """Publications after `since` (all of them, or `recovered=False`), or the last `limit`."""
        keys = self._keys
        epoch, top, covered, entries = await self._read(
            keys=[keys.history(channel), keys.meta(channel)],
            args=[
                since.offset if since else "",
                since.epoch if since else "",
                _new_epoch(),
                namespace.history_ttl_ms,
                limit,
            ],
        )
        if since is None:
            entries = entries[::-1]
        return HistoryRead(
            epoch=epoch.decode(),
            offset=top.decode(),
            recovered=bool(covered),
            publications=[_render(entry_id, fields) for entry_id, fields in entries],
        )
