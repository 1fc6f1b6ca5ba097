"""Data streams in Redis: one stream per id with the bytes in field `d`, metadata as JSON.

Retention per stream comes from its metadata (`PUT /streams/{id}`) over the configured defaults:

| metadata key      | default (setting)            | effect                                   |
|-------------------|------------------------------|------------------------------------------|
| `maxlen`          | 1000 (`STREAMS_MAXLEN`)      | `XADD MAXLEN ~ n` (0 = unbounded)         |
| `maxlen_exact`    | false (`STREAMS_MAXLEN_EXACT`)| `MAXLEN = n` instead of `~`             |
| `max_age_s`       | 0 (`STREAMS_MAX_AGE_S`)      | `XTRIM MINID` of now minus the age        |
| `max_entry_bytes` | 16 MiB (`STREAMS_MAX_ENTRY_BYTES`) | larger entries are refused          |

Approximate trimming keeps whole radix-tree nodes (up to ~100 entries more than `maxlen`);
exact trimming costs more CPU in Redis but keeps exactly `maxlen`.
"""

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.common.errors import BadRequest

from .closes import BadHeader, EntryTooLarge, IdNotAboveTop
from .ids import parse_explicit
from .keys import StreamKeys
from .settings import StreamsSettings

MAX_STREAM_ID = 256
_RESERVED = ("XMETA:", "XINDEX", "XWAKE:")
_BAD_CHARS = re.compile(r"[\s+*/]")
META_CACHE_S = 1.0
INDEX_REFRESH_S = 60.0
RETENTION_KEYS = ("maxlen", "maxlen_exact", "max_age_s", "max_entry_bytes")


@dataclass(frozen=True, slots=True)
class Retention:
    maxlen: int
    exact: bool
    max_age_s: float
    max_entry_bytes: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry to append: explicit id `None` means `*` (Redis picks it)."""

    stream: str
    data: bytes | memoryview
    id: str | None = None


def check_stream_id(stream: str) -> str:
    if not stream or len(stream) > MAX_STREAM_ID or _BAD_CHARS.search(stream):
        raise BadHeader(f"invalid stream id {stream[:64]!r}: 1-256 characters, no space + * /")
    if stream.startswith(_RESERVED):
        raise BadHeader(f"stream id {stream[:64]!r} uses a reserved name")
    return stream


def split_ids(path: str) -> list[str]:
    """`a+b` (or `a b`, a `+` decoded as a space) -> ["a", "b"]; `*` stays `*`."""
    ids = [part for part in re.split(r"[+ ]", path) if part]
    if not ids:
        raise BadHeader("no stream id in the path")
    if ids == ["*"]:
        return ids
    return [check_stream_id(s) for s in ids]


# Shared by both scripts: one entry written with its stream's MAXLEN, and MINID trimming after.
_WRITE_LUA = """
local function write(k, id, data)
  local o = 1 + 3 * (k - 1)
  local maxlen = tonumber(ARGV[o])
  if maxlen > 0 then
    local op = ARGV[o + 1] == '1' and '=' or '~'
    return redis.call('XADD', KEYS[k], 'MAXLEN', op, maxlen, id, 'd', data)
  end
  return redis.call('XADD', KEYS[k], id, 'd', data)
end
local function trim()
  for k = 1, #KEYS do
    local o = 1 + 3 * (k - 1)
    if ARGV[o + 2] ~= '' then
      redis.call('XTRIM', KEYS[k], 'MINID', ARGV[o + 1] == '1' and '=' or '~', ARGV[o + 2])
    end
  end
end
"""

# KEYS: the streams, one each. ARGV: per stream `maxlen exact minid` (3 each), then per entry
# `stream index, id, data`. Ids are `*`, `ms-*` or `ms-seq`. Checks every explicit id against
# the stream's top (as XADD would, but before anything is written), then appends all.
# Returns {1, ids...} or {0, stream index, id, top}.
_ADD_LUA = (
    _WRITE_LUA
    + """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local nk = #KEYS
local tops = {}
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for k = 1, nk do
  local top = '0-0'
  if redis.call('EXISTS', KEYS[k]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[k])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then top = info[i + 1] end
    end
  end
  local ms, seq = parse(top)
  tops[k] = {ms, seq}
end
local ids = {}
local base = 1 + 3 * nk
for e = base, #ARGV, 3 do
  local k = tonumber(ARGV[e])
  local id = ARGV[e + 1]
  local ms, seq = tops[k][1], tops[k][2]
  if id == '*' then
    if now_ms > ms then ms, seq = now_ms, 0 else seq = seq + 1 end
  else
    local ims, iseq = string.match(id, '^(%d+)-(%d+)$')
    if ims then
      ims, iseq = tonumber(ims), tonumber(iseq)
      if ims < ms or (ims == ms and iseq <= seq) then
        return {0, k, id, string.format('%d-%d', tops[k][1], tops[k][2])}
      end
      ms, seq = ims, iseq
    else
      ims = tonumber(string.match(id, '^(%d+)-%*$'))
      if ims < ms then return {0, k, id, string.format('%d-%d', tops[k][1], tops[k][2])} end
      if ims == ms then seq = seq + 1 else ms, seq = ims, 0 end
    end
  end
  tops[k] = {ms, seq}
  ids[#ids + 1] = string.format('%d-%d', ms, seq)
end
local out = {1}
local i = 0
for e = base, #ARGV, 3 do
  i = i + 1
  out[#out + 1] = write(tonumber(ARGV[e]), ids[i], ARGV[e + 2])
end
trim()
return out
"""
)


# The same append without explicit ids: one command for a batch of small entries, which costs
# Redis and the client far less than a pipeline of XADDs. KEYS/ARGV as above, every id `*`.
_APPEND_LUA = (
    _WRITE_LUA
    + """
local out = {}
for e = 1 + 3 * #KEYS, #ARGV, 2 do
  out[#out + 1] = write(tonumber(ARGV[e]), '*', ARGV[e + 1])
end
trim()
return out
"""
)
# Above this average entry size a pipeline of XADDs is cheaper: the script copies its arguments.
SCRIPT_MAX_AVG_BYTES = 16 * 1024


class StreamStore:
    """Appends, reads and describes data streams; caches each stream's retention for 1 s."""

    def __init__(self, redis: Redis, settings: StreamsSettings) -> None:
        self.redis = redis
        self.keys = StreamKeys(settings.key_prefix)
        self._settings = settings
        self._meta_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._indexed: dict[str, float] = {}
        self._add_lua = redis.register_script(_ADD_LUA)
        self._append_lua = redis.register_script(_APPEND_LUA)

    def default_retention(self) -> Retention:
        s = self._settings
        return Retention(s.maxlen, s.maxlen_exact, s.max_age_s, s.max_entry_bytes)

    # -- metadata -----------------------------------------------------------------------------

    async def meta(self, stream: str, *, cached: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._meta_cache.get(stream)
        if cached and hit is not None and now - hit[0] < META_CACHE_S:
            return hit[1]
        raw = await self.redis.get(self.keys.meta(stream))
        meta: dict[str, Any] = {}
        if raw:
            try:
                loaded = json.loads(raw)
                meta = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                meta = {}
        if len(self._meta_cache) > 10_000:
            self._meta_cache.clear()
        self._meta_cache[stream] = (now, meta)
        return meta

    async def retention(self, stream: str) -> Retention:
        return retention_of(await self.meta(stream, cached=True), self.default_retention())

    async def put_meta(self, stream: str, body: dict[str, Any], *, override: bool) -> Any:
        retention_of(body, self.default_retention())  # refuse bad retention values early
        meta = body if override else {**await self.meta(stream), **body}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.meta(stream), json.dumps(meta))
            pipe.sadd(self.keys.index, stream)
            await pipe.execute()
        self._meta_cache.pop(stream, None)
        return meta

    # -- writing ------------------------------------------------------------------------------

    async def add(self, entries: Sequence[Entry]) -> list[str]:
        """Append `entries` in order; return their ids once Redis has them all.

        Without explicit ids this is one pipeline of XADDs; with any explicit id it is one
        script that checks every id against its stream's top first, so that a bad id refuses
        the whole batch and writes nothing.
        """
        if not entries:
            return []
        streams = list(dict.fromkeys(e.stream for e in entries))
        retention = {s: await self.retention(s) for s in streams}
        total = 0
        for entry in entries:
            limit = retention[entry.stream].max_entry_bytes
            total += len(entry.data)
            if len(entry.data) > limit:
                raise EntryTooLarge(
                    f"entry of {len(entry.data)} bytes for stream {entry.stream!r}; "
                    f"the limit is {limit}"
                )
        now = time.time()
        if any(e.id is not None for e in entries):
            ids = await self._add_checked(entries, streams, retention, now)
        elif len(entries) > 1 and total <= SCRIPT_MAX_AVG_BYTES * len(entries):
            ids = await self._add_scripted(entries, streams, retention, now)
        else:
            ids = await self._add_pipelined(entries, streams, retention, now)
        await self._index(streams, now)
        return ids

    async def _add_pipelined(
        self,
        entries: Sequence[Entry],
        streams: list[str],
        retention: dict[str, Retention],
        now: float,
    ) -> list[str]:
        keys = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                r = retention[entry.stream]
                pipe.xadd(
                    keys.data(entry.stream),
                    {"d": entry.data},
                    maxlen=r.maxlen or None,
                    approximate=not r.exact,
                )
            for stream in streams:
                r = retention[stream]
                if r.max_age_s:
                    minid = f"{int((now - r.max_age_s) * 1000)}-0"
                    pipe.xtrim(keys.data(stream), minid=minid, approximate=not r.exact)
            results = await pipe.execute()
        return [_text(i) for i in results[: len(entries)]]

    async def _add_scripted(
        self,
        entries: Sequence[Entry],
        streams: list[str],
        retention: dict[str, Retention],
        now: float,
    ) -> list[str]:
        index = {s: i for i, s in enumerate(streams, 1)}
        args: list[Any] = self._trim_args(streams, retention, now)
        for entry in entries:
            args += [index[entry.stream], entry.data]
        result = await self._append_lua(keys=[self.keys.data(s) for s in streams], args=args)
        return [_text(i) for i in result]

    @staticmethod
    def _trim_args(streams: list[str], retention: dict[str, Retention], now: float) -> list[Any]:
        args: list[Any] = []
        for stream in streams:
            r = retention[stream]
            minid = f"{int((now - r.max_age_s) * 1000)}-0" if r.max_age_s else ""
            args += [r.maxlen, int(r.exact), minid]
        return args

    async def _add_checked(
        self,
        entries: Sequence[Entry],
        streams: list[str],
        retention: dict[str, Retention],
        now: float,
    ) -> list[str]:
        index = {s: i for i, s in enumerate(streams, 1)}
        args = self._trim_args(streams, retention, now)
        for entry in entries:
            try:
                entry_id = "*" if entry.id is None else parse_explicit(entry.id)
            except ValueError as exc:
                raise BadHeader(str(exc)) from None
            args += [index[entry.stream], entry_id, bytes(entry.data)]
        try:
            result = await self._add_lua(keys=[self.keys.data(s) for s in streams], args=args)
        except ResponseError as exc:
            raise BadRequest(f"redis refused the entries: {exc}") from None
        if int(result[0]) == 0:
            stream = streams[int(result[1]) - 1]
            raise IdNotAboveTop(
                f"entry id {_text(result[2])} is not above the top {_text(result[3])} "
                f"of stream {stream!r}"
            )
        return [_text(i) for i in result[1:]]

    async def _index(self, streams: Iterable[str], now: float) -> None:
        fresh = [s for s in streams if now - self._indexed.get(s, 0.0) > INDEX_REFRESH_S]
        if fresh:
            await self.redis.sadd(self.keys.index, *fresh)
            for s in fresh:
                self._indexed[s] = now

    # -- reading ------------------------------------------------------------------------------

    async def exists(self, streams: Sequence[str]) -> list[bool]:
        """A stream exists when it has entries or metadata."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in streams:
                pipe.exists(self.keys.data(s), self.keys.meta(s))
            return [bool(n) for n in await pipe.execute()]

    async def top(self, stream: str) -> str:
        """The id of the stream's last entry, `0-0` when it has none."""
        found = await self.redis.xrevrange(self.keys.data(stream), count=1)
        return _text(found[0][0]) if found else "0-0"

    async def after(self, cursors: dict[str, str], count: int) -> list[tuple[str, str, bytes]]:
        """Up to `count` entries per stream after each cursor (exclusive), oldest first."""
        if not cursors:
            return []
        reply = await self.redis.xread(
            {self.keys.data(s): c for s, c in cursors.items()}, count=count
        )
        return [(self.keys.stream_of(k), i, d) for k, i, d in xread_entries(reply)]

    async def latest(self, stream: str, after: str, count: int) -> list[tuple[str, str, bytes]]:
        """The newest `count` entries after `after` (exclusive), oldest first."""
        minimum = "-" if after == "0-0" else f"({after}"
        found = await self.redis.xrevrange(self.keys.data(stream), "+", minimum, count=count)
        return [(stream, _text(i), _field(f)) for i, f in reversed(found or [])]

    async def info(self, stream: str) -> dict[str, Any] | None:
        """PTG's stream description: XINFO STREAM fields, first/last entry ids and times, meta."""
        meta = await self.meta(stream)
        try:
            raw = await self.redis.xinfo_stream(self.keys.data(stream))
        except ResponseError:
            if not meta and not await self.redis.sismember(self.keys.index, stream):
                return None
            raw = {}
        info: dict[str, Any] = {"sid": stream}
        for key, value in raw.items():
            name = _text(key)
            if name in ("first-entry", "last-entry"):
                entry_id = _text(value[0]) if value else None
                info[name] = entry_id
                info[f"{name}-time"] = _iso(entry_id)
            else:
                info[name] = _text(value) if isinstance(value, bytes) else value
        info["meta"] = meta
        return info

    async def list_ids(self) -> list[str]:
        members = sorted(_text(m) for m in await self.redis.smembers(self.keys.index))
        present = await self.exists(members)
        return [s for s, ok in zip(members, present, strict=True) if ok]

    async def delete(self, stream: str) -> list[int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.meta(stream))
            pipe.delete(self.keys.data(stream))
            pipe.srem(self.keys.index, stream)
            result = [int(n) for n in await pipe.execute()]
        self._meta_cache.pop(stream, None)
        self._indexed.pop(stream, None)
        return result


store_key = web.AppKey("store", StreamStore)


def retention_of(meta: dict[str, Any], default: Retention) -> Retention:
    """The retention a stream's metadata asks for; a bad value is a BadRequest."""
    if not any(k in meta for k in RETENTION_KEYS):
        return default
    maxlen = meta.get("maxlen", default.maxlen)
    exact = meta.get("maxlen_exact", default.exact)
    age = meta.get("max_age_s", default.max_age_s)
    size = meta.get("max_entry_bytes", default.max_entry_bytes)
    if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 0:
        raise BadRequest("maxlen must be an integer >= 0 (0 = unbounded)")
    if not isinstance(exact, bool):
        raise BadRequest("maxlen_exact must be true or false")
    if not isinstance(age, int | float) or isinstance(age, bool) or age < 0:
        raise BadRequest("max_age_s must be a number >= 0 (0 = no age limit)")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise BadRequest("max_entry_bytes must be a positive integer")
    return Retention(maxlen, exact, float(age), size)


def xread_entries(reply: Any) -> list[tuple[str, str, bytes]]:
    """Flatten an XREAD reply (RESP2 list or RESP3 map) into (key, id, data) triples."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    out: list[tuple[str, str, bytes]] = []
    for key, value in pairs:
        entries = value[0] if value and isinstance(value[0], list) else value
        name = _text(key)
        for entry_id, fields in entries:
            out.append((name, _text(entry_id), _field(fields)))
    return out


def _field(fields: Any) -> bytes:
    if isinstance(fields, dict):
        value = fields.get(b"d", fields.get("d", b""))
    else:  # a flat [field, value, ...] list
        value = dict(zip(fields[::2], fields[1::2], strict=False)).get(b"d", b"")
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _iso(entry_id: str | None) -> str | None:
    if entry_id is None:
        return None
    from datetime import UTC, datetime

    ms = int(entry_id.split("-")[0])
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
