"""HTTP views of the frames API: `POST /frames` and `GET /labels`."""

import time

from aiohttp import BodyPartReader, web

from services.common.errors import BadRequest, LimitExceeded, ServiceError, TooManyRequests
from services.common.web import json_errors

from ..auth import authenticate
from ..keys import settings_key
from .access import LabelAccess, access_from
from .codec import FrameUpload, parse_upload
from .keys import hub_key, limiter_key, metrics_key, store_key

routes = web.RouteTableDef()
STORED = {"status": "ok", "message": "Frame stored successfully."}
# Larger than anything the request's buffer holds at once (it pauses the socket at 128 KiB), so
# aiohttp's read_chunk never reads past `size` and never calls its deprecated unread_data(),
# whose DeprecationWarning would fail an upload under warnings-as-errors.
READ_CHUNK_BYTES = 4 * 1024 * 1024


async def request_access(request: web.Request) -> LabelAccess:
    """Authenticate the request's token and read its label permissions."""
    principal = await authenticate(request)
    default = request.app[settings_key].frames.default_access
    return access_from(principal.user, principal.claims, principal.scopes, default)


@routes.get("/labels")
@json_errors
async def list_labels(request: web.Request) -> web.Response:
    """The labels the token may read, from the index; rate-limited per user."""
    access = await request_access(request)
    retry_after = await request.app[limiter_key].hit(access.user)
    if retry_after is not None:
        request.app[metrics_key].rejected.labels(str(int(TooManyRequests.code))).inc()
        error = TooManyRequests(f"too many /labels requests; retry in {retry_after} s")
        return web.json_response(
            {"error": error.to_dict()},
            status=error.http_status,
            headers={"Retry-After": str(retry_after)},
        )
    labels = await request.app[store_key].labels()
    return web.json_response({"labels": [label for label in labels if access.can_see_label(label)]})


@routes.post("/frames")
@json_errors
async def post_frame(request: web.Request) -> web.Response:
    """Store one frame sent as a multipart form (the backend's field names)."""
    metrics = request.app[metrics_key]
    try:
        access = await request_access(request)
        upload = await _read_form(request)
        access.require_write(upload.label, upload.key)
    except ServiceError as exc:
        metrics.rejected.labels(str(int(exc.code))).inc()
        raise
    started = time.perf_counter()
    stored = await request.app[store_key].add(upload)
    metrics.store_seconds.observe(time.perf_counter() - started)
    metrics.stored.labels("http").inc()
    metrics.bytes_in.inc(len(upload.frame))
    if stored.new_key:
        request.app[hub_key].key_added(upload.label)
    return web.json_response({**STORED, "id": stored.entry_id})


async def _read_form(request: web.Request) -> FrameUpload:
    settings = request.app[settings_key].frames
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("the body must be multipart/form-data")
    try:
        reader = await request.multipart()
    except ValueError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    fields: dict[str, str] = {}
    frame: bytes | None = None
    header_bytes = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        if part.name == "file":
            too_big = LimitExceeded(f"frame is over the {settings.max_frame_bytes} byte limit")
            frame = await _read_part(part, settings.max_frame_bytes, too_big)
            continue
        too_big = LimitExceeded(f"form fields are over the {settings.max_header_bytes} byte limit")
        value = await _read_part(part, settings.max_header_bytes - header_bytes, too_big)
        header_bytes += len(value)
        if part.name:
            try:
                fields[part.name] = value.decode()
            except UnicodeDecodeError:
                raise BadRequest(f"field {part.name!r} is not UTF-8 text") from None
    if frame is None:
        raise BadRequest("missing field 'file'")
    return parse_upload(fields, frame, settings.max_frame_bytes)


async def _read_part(part: BodyPartReader, limit: int, too_big: LimitExceeded) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(READ_CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
