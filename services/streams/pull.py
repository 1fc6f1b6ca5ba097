"""WebSocket `/data/{ids}/pull`: PTG's consumer protocol over the shared read loop.

Each batch is a text frame `[[stream id, entry id, start offset], ...]` then one binary frame
of the concatenated entries (`onebyone=true`: one pair per entry).

Query parameters:

- `count` (1): entries per stream per batch, 1-10000.
- `last_entry_id` (`$`): `$` new entries only, `0` everything retained, `-` or `*` the newest
  now, or an id `ms-seq` (exclusive); one value for all streams or `+`/space separated per
  stream.
- `latest`: send only the newest `count` entries per stream and skip older ones; on by default
  for `$`, `-` and `*`, off for `0` and ids (PTG turned it on for ids too, losing entries).
- `timeout`: ms without data after which the socket is closed (1000); without it, it waits.
- `ack` (false): credit flow control, one batch per client message (a text integer N grants N).
- `onebyone` (false): one text+binary pair per entry.
- `rate_limit` (0): seconds between batches (asyncio.sleep, not PTG's loop-blocking sleep).
- `time_sync_id`, `input`, `output`: accepted and ignored (no format conversion).
"""

import asyncio
import contextlib
import functools
import re
import time
from dataclasses import dataclass

from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from services.common.errors import ServiceError
from services.common.settings import parse_bool
from services.common.web import json_errors

from .auth import Principal, authenticate
from .closes import BadHeader, StreamClose, UnknownStream
from .ids import parse_id
from .keys import settings_key
from .metrics import StreamsMetrics
from .readers import Reader, ReadHub, hub_key
from .sockets import drained, metrics_key, open_socket, refuse, write_pair
from .store import StreamStore, split_ids, store_key

MAX_COUNT = 10_000
DEFAULT_BLOCK_S = 3.0
LATEST_MARKERS = ("$", "-", "*")


@dataclass(frozen=True, slots=True)
class PullParams:
    count: int
    last_ids: tuple[str, ...]
    latest: bool | None
    timeout_s: float | None
    ack: bool
    onebyone: bool
    rate_limit_s: float


def _bool(query: dict[str, str], name: str) -> bool | None:
    raw = query.get(name, "")
    if raw == "":
        return None
    try:
        return parse_bool(raw)
    except ValueError:
        raise BadHeader(f"{name} must be true or false") from None


def _number(query: dict[str, str], name: str, cast: type[int] | type[float]) -> float | None:
    raw = query.get(name, "")
    if raw == "":
        return None
    try:
        value = cast(raw)
    except ValueError:
        raise BadHeader(f"{name} must be a number") from None
    if not value >= 0:
        raise BadHeader(f"{name} must not be negative")
    return value


def parse_params(query: dict[str, str]) -> PullParams:
    count = _number(query, "count", int)
    count = 1 if count is None else int(count)
    if not 1 <= count <= MAX_COUNT:
        raise BadHeader(f"count must be 1-{MAX_COUNT}")
    last = query.get("last_entry_id", "") or "$"
    values = tuple(v for v in re.split(r"[+ ]", last) if v) or ("$",)
    for value in values:
        if value not in LATEST_MARKERS and value != "0":
            try:
                parse_id(value)
            except ValueError:
                raise BadHeader(f"last_entry_id {value!r} is not $, 0, -, * or an id") from None
    timeout = _number(query, "timeout", int)
    return PullParams(
        count=count,
        last_ids=values,
        latest=_bool(query, "latest"),
        timeout_s=None if timeout is None else max(timeout, 1) / 1000,
        ack=bool(_bool(query, "ack")),
        onebyone=bool(_bool(query, "onebyone")),
        rate_limit_s=_number(query, "rate_limit", float) or 0.0,
    )


async def start_positions(
    store: StreamStore, streams: list[str], values: tuple[str, ...]
) -> dict[str, str]:
    """Resolve `$` to the stream's top now, `0`/`-`/`*` to the beginning, ids as given."""
    positions = {}
    for i, stream in enumerate(streams):
        value = values[i % len(values)]
        if value == "$":
            positions[stream] = await store.top(stream)
        elif value in ("0", "-", "*"):
            positions[stream] = "0-0"
        else:
            ms, seq = parse_id(value)
            positions[stream] = f"{ms}-{seq}"
    return positions


def setup(app: web.Application) -> None:
    for path in ("/data/{ids}/pull", "/data/{ids}/pull/"):
        app.router.add_get(path, pull)


@json_errors
async def pull(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)  # refused before the upgrade: HTTP 401
    ws = await open_socket(request)
    try:
        await _serve(request, ws, principal)
    except ConnectionError:
        pass  # the client went away
    except (ServiceError, RedisError) as exc:
        await refuse(request, ws, exc)
    except Exception as exc:  # a bug: the client still gets an error frame
        await refuse(request, ws, exc)
    return ws


class _Credit:
    """Batches the client allows: unlimited without `ack`, else one per client message."""

    def __init__(self, ack: bool) -> None:
        self.ack = ack
        self.available = 1
        self.changed = asyncio.Event()
        self.closed = False

    def grant(self, data: str | bytes) -> None:
        n = 1
        if isinstance(data, str) and data.strip().isdigit():
            n = max(1, int(data.strip()))
        self.available += n
        self.changed.set()

    async def acquire(self) -> bool:
        if not self.ack:
            return not self.closed
        while self.available <= 0 and not self.closed:
            self.changed.clear()
            await self.changed.wait()
        if self.closed:
            return False
        self.available -= 1
        return True


async def _serve(request: web.Request, ws: web.WebSocketResponse, principal: Principal) -> None:
    app = request.app
    store, hub, metrics = app[store_key], app[hub_key], app[metrics_key]
    streams = split_ids(request.match_info["ids"])
    if streams == ["*"]:
        raise BadHeader("pull needs stream ids: a, or a+b")
    streams = list(dict.fromkeys(streams))
    params = parse_params(dict(request.query))
    principal.require_read(streams)
    for stream, exists in zip(streams, await store.exists(streams), strict=True):
        if not exists:
            raise UnknownStream(f"no stream {stream!r}")
    latest = params.latest
    if latest is None:
        latest = all(v in LATEST_MARKERS for v in params.last_ids)
    positions = await start_positions(store, streams, params.last_ids)
    reader = hub.reader(positions, latest=latest, max_entries=app[settings_key].reader_buffer)
    credit = _Credit(params.ack)
    if not params.onebyone and not params.rate_limit_s:
        reader.direct = functools.partial(_direct, request, credit, hub, metrics)
    listener = asyncio.create_task(_listen(ws, credit, reader))
    await hub.subscribe(reader)
    try:
        await _send_loop(request, ws, reader, credit, params, metrics, hub)
    finally:
        hub.unsubscribe(reader)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _listen(ws: web.WebSocketResponse, credit: _Credit, reader: Reader) -> None:
    """Read the client's messages: acks grant credit; a close ends the pull."""
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                credit.grant(msg.data)
    finally:
        credit.closed = True
        credit.changed.set()
        reader.close()


async def _send_loop(
    request: web.Request,
    ws: web.WebSocketResponse,
    reader: Reader,
    credit: _Credit,
    params: PullParams,
    metrics: StreamsMetrics,
    hub: ReadHub,
) -> None:
    block_s = params.timeout_s or DEFAULT_BLOCK_S
    while not ws.closed:
        items = await reader.take(params.count, block_s)
        if reader.closed or ws.closed:
            return
        if not items:
            if params.timeout_s is not None:
                await ws.close(code=StreamClose.NORMAL, message=b"timeout")
                return
            continue
        groups = [[item] for item in items] if params.onebyone else [items]
        for group in groups:
            if not await credit.acquire():
                return
            frames = hub.frames(group)
            await drained(request)
            write_pair(request, frames)
        _sent(metrics, items)
        if params.rate_limit_s:
            await asyncio.sleep(params.rate_limit_s)


def _sent(metrics: StreamsMetrics, items: list[tuple[str, str, bytes]]) -> None:
    metrics.sent(items)
    newest_ms = max(int(i[1].split("-", 1)[0]) for i in items)
    metrics.reader_lag.observe(max(0.0, time.time() - newest_ms / 1000))


def _direct(
    request: web.Request,
    credit: _Credit,
    hub: ReadHub,
    metrics: StreamsMetrics,
    items: list[tuple[str, str, bytes]],
) -> bool:
    """The hub's synchronous send (Reader.flush): only with credit and room in the socket."""
    if credit.closed or (credit.ack and credit.available <= 0):
        return False
    if not write_pair(request, hub.frames(items)):
        return False
    if credit.ack:
        credit.available -= 1
    metrics.sent(items)  # the read loop observes the lag once per round, not per reader
    return True
