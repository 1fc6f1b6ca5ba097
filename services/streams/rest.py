"""PTG's REST surface: `/ping`, `/streams`, `/streams/{id}`, `GET/POST /data/{ids}`.

Every path answers with and without a trailing slash, as PTG's patched router does. Errors are
`{"error": {"code", "message"}}` with the HTTP status of the error.
"""

import re
from typing import Any

from aiohttp import BodyPartReader, web

from services.common.errors import BadRequest, LimitExceeded
from services.common.settings import parse_bool
from services.common.web import json_body, json_errors

from .auth import authenticate
from .closes import UnknownStream
from .framing import pack
from .ids import parse_id
from .keys import redis_key, settings_key
from .sockets import metrics_key
from .store import Entry, check_stream_id, split_ids, store_key

MAX_COUNT = 10_000
MAX_META_BYTES = 64 * 1024


def setup(app: web.Application) -> None:
    def both(method: str, path: str, view: Any) -> None:
        app.router.add_route(method, path, view)
        app.router.add_route(method, path + "/", view)

    both("GET", "/ping", ping)
    both("GET", "/streams", list_streams)
    both("GET", "/streams/{id}", get_stream)
    both("PUT", "/streams/{id}", put_stream)
    both("DELETE", "/streams/{id}", delete_stream)
    both("GET", "/data/{ids}", get_data)
    both("POST", "/data/{ids}", post_data)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "")
    try:
        return parse_bool(raw) if raw else False
    except ValueError:
        raise BadRequest(f"{name} must be true or false") from None


@json_errors
async def ping(request: web.Request) -> web.Response:
    """PTG answers Redis's PING result: `true`."""
    await authenticate(request)
    return web.json_response(bool(await request.app[redis_key].ping()))


@json_errors
async def list_streams(request: web.Request) -> web.Response:
    """Stream ids the caller may read (`?info=true`: their descriptions)."""
    principal = await authenticate(request)
    store = request.app[store_key]
    streams = [s for s in await store.list_ids() if principal.can_read(s)]
    if not _flag(request, "info"):
        return web.json_response(streams)
    infos = [await store.info(s) for s in streams]
    return web.json_response([i for i in infos if i is not None])


@json_errors
async def get_stream(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    stream = check_stream_id(request.match_info["id"])
    principal.require_read(stream)
    info = await request.app[store_key].info(stream)
    if info is None:
        raise UnknownStream(f"no stream {stream!r}")
    return web.json_response(info)


@json_errors
async def put_stream(request: web.Request) -> web.Response:
    """Merge the JSON body into the stream's metadata (`?override=true`: replace it)."""
    principal = await authenticate(request)
    stream = check_stream_id(request.match_info["id"])
    principal.require_write(stream)
    body = await json_body(request, MAX_META_BYTES)
    meta = await request.app[store_key].put_meta(stream, body, override=_flag(request, "override"))
    return web.json_response(meta)


@json_errors
async def delete_stream(request: web.Request) -> web.Response:
    """Delete streams (`a+b` allowed) and their metadata; answers Redis's counts per stream."""
    principal = await authenticate(request)
    streams = split_ids(request.match_info["id"])
    if streams == ["*"]:
        raise BadRequest("name the streams to delete")
    principal.require_write(streams)
    store = request.app[store_key]
    return web.json_response({s: await store.delete(s) for s in streams})


@json_errors
async def get_data(request: web.Request) -> web.Response:
    """Entries as one binary body; header `entry-offset` = `[[sid, id, start offset], ...]`.

    `last_entry_id=*` (default): the newest `count` entries of each stream. Else the `count`
    entries after the given id (`0` from the start; `+`/space separated per stream).
    """
    principal = await authenticate(request)
    streams = split_ids(request.match_info["ids"])
    if streams == ["*"]:
        raise BadRequest("name the streams to read")
    principal.require_read(streams)
    try:
        count = int(request.query.get("count", "1"))
    except ValueError:
        raise BadRequest("count must be an integer") from None
    if not 1 <= count <= MAX_COUNT:
        raise BadRequest(f"count must be 1-{MAX_COUNT}")
    values = [v for v in re.split(r"[+ ]", request.query.get("last_entry_id", "*")) if v] or ["*"]
    store = request.app[store_key]
    items: list[tuple[str, str, bytes]] = []
    cursors: dict[str, str] = {}
    for i, stream in enumerate(streams):
        value = values[i % len(values)]
        if value == "*":
            items += await store.latest(stream, "0-0", count)
        elif value == "$":
            continue  # nothing is newer than now (a non-blocking read, as on PTG)
        else:
            try:
                ms, seq = (0, 0) if value in ("0", "-") else parse_id(value)
            except ValueError:
                raise BadRequest(f"last_entry_id {value!r} is not *, $, 0 or an id") from None
            cursors[stream] = f"{ms}-{seq}"
    items += await store.after(cursors, count)
    header, body = pack(items)
    request.app[metrics_key].sent(items)
    return web.Response(
        body=body, content_type="application/octet-stream", headers={"entry-offset": header}
    )


@json_errors
async def post_data(request: web.Request) -> web.Response:
    """Multipart upload, repeated file field `entries`; answers the new entry ids.

    With `*` (or `a+b`) each part's file name names its stream; with one id, every part goes to
    it.
    """
    principal = await authenticate(request)
    streams = split_ids(request.match_info["ids"])
    settings = request.app[settings_key]
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send multipart/form-data with file fields named 'entries'")
    reader = await request.multipart()
    entries: list[Entry] = []
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "entries":
            raise BadRequest("every part must be a file field named 'entries'")
        if len(streams) == 1 and streams != ["*"]:
            stream = streams[0]
        else:
            stream = check_stream_id(part.filename or "")
            if streams != ["*"] and stream not in streams:
                raise BadRequest(f"part for stream {stream!r}, which is not in the path")
        data = await _read_part(part, settings.max_message_bytes - total)
        total += len(data)
        entries.append(Entry(stream, data))
    principal.require_write(list(dict.fromkeys(e.stream for e in entries)))
    ids = await request.app[store_key].add(entries)
    metrics = request.app[metrics_key]
    for entry in entries:
        metrics.entries_in.labels(entry.stream).inc()
        metrics.bytes_in.labels(entry.stream).inc(len(entry.data))
    return web.json_response(ids)


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await part.read_chunk(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise LimitExceeded("upload larger than STREAMS_MAX_MESSAGE_BYTES")
        chunks.append(chunk)
    return b"".join(chunks)
