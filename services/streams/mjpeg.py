"""`GET /mjpeg/{id}`: a stream of JPEG entries as `multipart/x-mixed-replace`, for `<img>` tags.

The newest entry is sent at once, then every new one; a slow viewer skips frames (latest mode)
instead of queueing them. Entries that are not JPEG (no FF D8 start) are skipped: there is no
format conversion. Unlike PTG this needs a token (`?token=` works in an `<img src>`).

Each frame is followed at once by the next part's boundary and headers: browsers show a part only
once the next one has begun, so a frame written with only its own boundary would stay hidden
until the following frame arrived (and a still camera would show nothing). The parts therefore
carry no Content-Length (it belongs to a frame not known yet).
"""

from aiohttp import web

from services.common.web import json_errors

from .auth import authenticate
from .closes import UnknownStream
from .readers import hub_key
from .sockets import metrics_key
from .store import check_stream_id, store_key

BOUNDARY = "frame"
PART_HEAD = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode()
IDLE_S = 3.0
JPEG_START = b"\xff\xd8"


def setup(app: web.Application) -> None:
    for path in ("/mjpeg/{id}", "/mjpeg/{id}/"):
        app.router.add_get(path, mjpeg)


@json_errors
async def mjpeg(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    stream = check_stream_id(request.match_info["id"])
    principal.require_read(stream)
    store, hub, metrics = request.app[store_key], request.app[hub_key], request.app[metrics_key]
    if not (await store.exists([stream]))[0]:
        raise UnknownStream(f"no stream {stream!r}")
    response = web.StreamResponse(
        headers={
            "Content-Type": f"multipart/x-mixed-replace;boundary={BOUNDARY}",
            "Cache-Control": "no-cache, no-store",
        }
    )
    await response.prepare(request)
    await response.write(PART_HEAD)
    reader = hub.reader({stream: "0-0"}, latest=True, max_entries=4)
    await hub.subscribe(reader)
    try:
        while True:
            items = await reader.take(1, IDLE_S)
            transport = request.transport
            if reader.closed or transport is None or transport.is_closing():
                break
            for item in items:
                data = item[2]
                if not data.startswith(JPEG_START):
                    continue
                await response.write(data + b"\r\n" + PART_HEAD)
                metrics.sent([item])
    except (ConnectionError, RuntimeError):
        pass  # the viewer went away
    finally:
        hub.unsubscribe(reader)
    return response
