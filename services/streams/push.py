"""WebSocket `/data/{ids}/push`: PTG's producer protocol, acknowledged only once Redis has it.

Query: `batch` (a JSON header text frame, then one binary frame of concatenated entries; implied
by `*` and `a+b` ids), `ack` (answer each message with the comma-joined entry ids, after the
XADDs returned), `parse_meta` (accepted and ignored). Without `batch` every binary frame is one
entry of the path's single stream. Bad input gets an error frame and a close code (closes.py).
"""

import time
from collections import defaultdict

from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from services.common.errors import ServiceError
from services.common.settings import parse_bool
from services.common.web import json_errors

from .announce import Announcer, announcer_key
from .auth import Principal, authenticate
from .closes import BadHeader
from .framing import split_batch
from .keys import settings_key
from .sockets import metrics_key, open_socket, refuse
from .store import Entry, split_ids, store_key


def setup(app: web.Application) -> None:
    for path in ("/data/{ids}/push", "/data/{ids}/push/"):
        app.router.add_get(path, push)


def flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "")
    if raw == "":
        return False
    try:
        return parse_bool(raw)
    except ValueError:
        raise BadHeader(f"{name} must be true or false") from None


@json_errors
async def push(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)  # refused before the upgrade: HTTP 401
    ws = await open_socket(request)
    try:
        await _serve(request, ws, principal)
    except ConnectionError:
        pass  # the client went away; what was acked is stored
    except (ServiceError, RedisError) as exc:
        await refuse(request, ws, exc)
    except Exception as exc:  # a bug: the client still gets an error frame
        await refuse(request, ws, exc)
    return ws


async def _serve(request: web.Request, ws: web.WebSocketResponse, principal: Principal) -> None:
    app = request.app
    store, metrics = app[store_key], app[metrics_key]
    announcer = app[announcer_key] if app[settings_key].announce else None
    path_ids = split_ids(request.match_info["ids"])
    batch = flag(request, "batch") or path_ids == ["*"] or len(path_ids) > 1
    ack = flag(request, "ack")
    flag(request, "parse_meta")
    if path_ids != ["*"]:
        principal.require_write(path_ids)
    allowed: set[str] = set(path_ids)
    header: str | None = None
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if not batch:
                raise BadHeader("text frame on a push without batch=true: send binary entries")
            if header is not None:
                raise BadHeader("two headers in a row: a binary frame must follow each header")
            header = msg.data
            continue
        if msg.type != WSMsgType.BINARY:
            break
        received = time.perf_counter()
        data: bytes = msg.data
        if batch:
            if header is None:
                raise BadHeader("binary frame without a header: send the JSON header first")
            entries = split_batch(header, data, path_ids)
            header = None
        else:
            entries = [Entry(path_ids[0], data)]
        for entry in entries:
            if entry.stream not in allowed:
                principal.require_write(entry.stream)
                allowed.add(entry.stream)
        ids = await store.add(entries)
        if ack:
            await ws.send_str(",".join(ids))
        metrics.push_seconds.observe(time.perf_counter() - received)
        per_stream: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry in entries:
            c = per_stream[entry.stream]
            c[0] += 1
            c[1] += len(entry.data)
        for stream, (n, size) in per_stream.items():
            metrics.entries_in.labels(stream).inc(n)
            metrics.bytes_in.labels(stream).inc(size)
        if announcer is not None:
            await _announce(announcer, entries, ids)


async def _announce(announcer: Announcer, entries: list[Entry], ids: list[str]) -> None:
    grouped: dict[str, tuple[list[str], list[int]]] = defaultdict(lambda: ([], []))
    for entry, entry_id in zip(entries, ids, strict=True):
        grouped[entry.stream][0].append(entry_id)
        grouped[entry.stream][1].append(len(entry.data))
    for stream, (stream_ids, sizes) in grouped.items():
        await announcer.announce(stream, stream_ids, sizes)
