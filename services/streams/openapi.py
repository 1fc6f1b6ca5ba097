"""The streams service's REST surface as an OpenAPI 3.1 document (served at `/openapi.json`)."""

from typing import Any

from services.common.openapi import (
    AUTH_ERRORS,
    build,
    cookie_scheme,
    errors,
    json_content,
    ok,
    path_param,
    query_param,
    ref,
)

from .frames.routes import STORED
from .login import MAX_FORM_BYTES
from .rest import MAX_COUNT, MAX_META_BYTES

DESCRIPTION = """\
Binary data streams in Redis Streams with the PTG Data Store API's wire protocol \
(docs/streams.md), and the streaming web backend's frames API (docs/frames.md). Every path of \
the PTG routes (`/token`, `/ping`, `/streams...`, `/data...`, `/mjpeg...`) also answers with a \
trailing slash.

A token is read, in this order, from `?token=`, `Authorization: Bearer`, the cookie \
`authorization` (`Bearer <jwt>`, set by `POST /token`) or `access_token_cookie`. The `streams` \
claim (fnmatch patterns, `{"read": [...], "write": [...]}` or one list for both) and the \
`labels` claim of the frames API say what a token may touch; without them \
`STREAMS_DEFAULT_ACCESS` / `FRAMES_DEFAULT_ACCESS` apply; the scope `admin` may do anything.

WebSocket endpoints (OpenAPI describes no WebSocket operations; the same tokens apply, checked \
at the handshake: HTTP 401 for a bad one):

| path | what |
|---|---|
| `/data/{ids}/push` | producers: binary entries (`?batch=true`: a JSON header text frame, \
then the entries concatenated in one binary frame; `?ack=true`: a text frame of the stored ids \
per message) |
| `/data/{ids}/pull` | readers: per batch a text frame `[[stream id, entry id, start offset], \
...]` then one binary frame; `count`, `last_entry_id`, `latest`, `timeout`, `ack` (credit), \
`onebyone`, `rate_limit` |
| `/ws/frames` | frame producers: binary `<JSON header>--IMG--<frame>`, one text reply per \
frame |
| `/ws/labels/{label}` | watch every camera of a site: binary \
`<JSON header>--IMG--<frame>` on each change |
| `/ws/stream/{label}/{key}` | pull one camera: text `{"action": "pull"}` answered with the \
next frame |

Bad input on a push or pull socket gets one text frame \
`{"error": {"code", "message", "close"}}`, then that close code (4501 malformed, 4503 \
forbidden, 4505 unknown stream, 4506 id not above the top, 4507 entry too large, 4508 offsets \
out of range; 1012 on shutdown).

REST errors are `{"error": {"code", "message"}}` with an HTTP status; stream errors also carry \
`close`, the close code a socket would get."""

SECURITY: list[dict[str, list[str]]] = [
    {"bearer": []},
    {"tokenQuery": []},
    {"authorizationCookie": []},
    {"accessTokenCookie": []},
]
SCHEMES = {
    "tokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "the JWT (what an `<img>` or a browser WebSocket can send)",
    },
    "authorizationCookie": cookie_scheme(
        "authorization", "`Bearer <jwt>`, as `POST /token` sets it (ptgctl)"
    ),
    "accessTokenCookie": cookie_scheme("access_token_cookie", "the JWT (Zou's cookie)"),
}

_STREAM = path_param(
    "id",
    "a stream id: 1-256 characters, no space, `+`, `*` or `/`, not starting with `XMETA:`, "
    "`XINDEX` or `XWAKE:`",
    "main",
)
_STREAMS = path_param(
    "ids",
    "one stream id, several joined by `+` (`main+depth`), or `*` (upload: each part's file "
    "name is its stream)",
    "main+depth",
)
_BAD_ID = "107: malformed stream id (`close` 4501)"
_READ_DENIED = "103: the token may not read this stream (`close` 4503)"
_WRITE_DENIED = "103: the token may not write this stream (`close` 4503)"
_NO_STREAM = "102: no such stream (`close` 4505)"


def _flag(name: str, description: str) -> dict[str, Any]:
    return query_param(name, description, {"type": "boolean", "default": False})


SCHEMAS: dict[str, Any] = {
    "Token": {
        "type": "object",
        "required": ["access_token", "token_type"],
        "properties": {
            "access_token": {"type": "string", "description": "a JWT whose `sub` is the user"},
            "token_type": {"const": "bearer"},
        },
    },
    "StreamInfo": {
        "type": "object",
        "required": ["sid", "meta"],
        "description": "PTG's description: the XINFO STREAM fields (absent for a stream that "
        "has metadata but no entry yet), the first and last entry ids and times, the metadata.",
        "properties": {
            "sid": {"type": "string"},
            "length": {"type": "integer"},
            "last-generated-id": {"type": "string"},
            "entries-added": {"type": "integer"},
            "first-entry": {"type": ["string", "null"]},
            "first-entry-time": {"type": ["string", "null"], "description": "ISO 8601"},
            "last-entry": {"type": ["string", "null"]},
            "last-entry-time": {"type": ["string", "null"]},
            "meta": ref("StreamMeta"),
        },
        "additionalProperties": True,
    },
    "StreamMeta": {
        "type": "object",
        "description": "Free JSON metadata; these keys set the stream's retention.",
        "properties": {
            "maxlen": {"type": "integer", "minimum": 0, "description": "0 = unbounded"},
            "maxlen_exact": {"type": "boolean"},
            "max_age_s": {"type": "number", "minimum": 0},
            "max_entry_bytes": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": True,
    },
    "FrameStored": {
        "type": "object",
        "required": ["status", "message", "id"],
        "properties": {
            "status": {"const": STORED["status"]},
            "message": {"const": STORED["message"]},
            "id": {"type": "string", "description": "the frame's entry id"},
        },
    },
}

_COMMON = {"security": SECURITY}

PATHS: dict[str, Any] = {
    "/token": {
        "post": {
            "tags": ["login"],
            "summary": "Log in with a user of the operator's users file (OAuth2 password form)",
            "description": 'Answers a token and sets the cookie `authorization="Bearer <jwt>"` '
            "(HttpOnly, SameSite=Lax; Secure with `STREAMS_COOKIE_SECURE`). Users are added "
            "with `switchboard users add NAME`; there is no other login.",
            "operationId": "login",
            "parameters": [
                query_param(
                    "exp",
                    "a shorter lifetime in seconds (never above `STREAMS_TOKEN_TTL_S`)",
                    {"type": "number", "exclusiveMinimum": 0},
                )
            ],
            "requestBody": {
                "required": True,
                "description": f"at most {MAX_FORM_BYTES} bytes",
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["username", "password"],
                            "properties": {
                                "username": {"type": "string", "minLength": 1},
                                "password": {"type": "string", "format": "password"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "logged in",
                    "headers": {
                        "Set-Cookie": {
                            "description": '`authorization="Bearer <jwt>"`',
                            "schema": {"type": "string"},
                        }
                    },
                    "content": json_content(
                        ref("Token"), {"access_token": "eyJhbGciOi…", "token_type": "bearer"}
                    ),
                },
                **errors(
                    s400="107: form too large, `username` or `password` missing, bad `exp`",
                    s401="101: incorrect username or password",
                ),
            },
        }
    },
    "/ping": {
        "get": {
            **_COMMON,
            "tags": ["streams"],
            "summary": "Redis's PING, as PTG answers it",
            "operationId": "ping",
            "responses": {
                "200": ok("Redis answers", {"type": "boolean"}, True),
                **errors(**AUTH_ERRORS),
            },
        }
    },
    "/streams": {
        "get": {
            **_COMMON,
            "tags": ["streams"],
            "summary": "The streams the token may read",
            "description": "From the service's index (streams written through it, or given "
            "metadata), not a keyspace scan.",
            "operationId": "listStreams",
            "parameters": [_flag("info", "their descriptions instead of their ids")],
            "responses": {
                "200": ok(
                    "ids, or descriptions with `info=true`",
                    {
                        "anyOf": [
                            {"type": "array", "items": {"type": "string"}},
                            {"type": "array", "items": ref("StreamInfo")},
                        ]
                    },
                    ["depth", "main"],
                ),
                **errors(**AUTH_ERRORS, s400="107: `info` not true or false"),
            },
        }
    },
    "/streams/{id}": {
        "get": {
            **_COMMON,
            "tags": ["streams"],
            "summary": "A stream's description",
            "operationId": "getStream",
            "parameters": [_STREAM],
            "responses": {
                "200": ok("the description", ref("StreamInfo")),
                **errors(**AUTH_ERRORS, s400=_BAD_ID, s403=_READ_DENIED, s404=_NO_STREAM),
            },
        },
        "put": {
            **_COMMON,
            "tags": ["streams"],
            "summary": "Set a stream's metadata (and create it for pulls and listings)",
            "operationId": "putStream",
            "parameters": [
                _STREAM,
                _flag("override", "replace the metadata instead of merging the body into it"),
            ],
            "requestBody": {
                "required": True,
                "description": f"a JSON object, at most {MAX_META_BYTES} bytes",
                "content": json_content(ref("StreamMeta"), {"maxlen": 5000, "fps": 30}),
            },
            "responses": {
                "200": ok("the stored metadata", ref("StreamMeta"), {"maxlen": 5000, "fps": 30}),
                **errors(
                    **AUTH_ERRORS,
                    s400=f"{_BAD_ID}; body not a JSON object; a bad retention value",
                    s403=_WRITE_DENIED,
                ),
            },
        },
        "delete": {
            **_COMMON,
            "tags": ["streams"],
            "summary": "Delete streams and their metadata",
            "operationId": "deleteStream",
            "parameters": [{**_STREAM, "description": "a stream id, or several joined by `+`"}],
            "responses": {
                "200": ok(
                    "per stream: [metadata deleted, data deleted, unindexed] (Redis's counts)",
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "minItems": 3,
                            "maxItems": 3,
                        },
                    },
                    {"main": [1, 1, 1]},
                ),
                **errors(**AUTH_ERRORS, s400=f"{_BAD_ID}, or `*`", s403=_WRITE_DENIED),
            },
        },
    },
    "/data/{ids}": {
        "get": {
            **_COMMON,
            "tags": ["data"],
            "summary": "Read entries as one binary body",
            "description": "The entries' bytes concatenated; the header `entry-offset` "
            "locates each one.",
            "operationId": "getData",
            "parameters": [
                _STREAMS,
                query_param(
                    "count",
                    "entries per stream",
                    {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "default": 1},
                ),
                query_param(
                    "last_entry_id",
                    "`*` the newest `count`; `0` from the start; an id `ms-seq`: the entries "
                    "after it; `$` nothing. One value, or one per stream separated by `+`",
                    {"type": "string", "default": "*"},
                ),
            ],
            "responses": {
                "200": {
                    "description": "the entries (an empty body when there is none)",
                    "headers": {
                        "entry-offset": {
                            "description": "JSON `[[stream id, entry id, start offset], ...]`",
                            "schema": {"type": "string"},
                            "example": '[["main", "1650811721065-0", 0]]',
                        }
                    },
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        }
                    },
                },
                **errors(
                    **AUTH_ERRORS,
                    s400=f"{_BAD_ID}; `*`; `count` not in 1-{MAX_COUNT}; bad `last_entry_id`",
                    s403=_READ_DENIED,
                ),
            },
        },
        "post": {
            **_COMMON,
            "tags": ["data"],
            "summary": "Append entries (multipart upload)",
            "description": "Each file part named `entries` is one entry. With one id in the "
            "path every part goes to it; with `*` or `a+b` each part's file name is its "
            "stream. All or nothing.",
            "operationId": "postData",
            "parameters": [_STREAMS],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["entries"],
                            "properties": {
                                "entries": {
                                    "type": "array",
                                    "items": {
                                        "type": "string",
                                        "contentMediaType": "application/octet-stream",
                                    },
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": ok(
                    "the new entry ids, in order",
                    {"type": "array", "items": {"type": "string"}},
                    ["1650811721065-0", "1650811721065-1"],
                ),
                **errors(
                    **AUTH_ERRORS,
                    s400=f"{_BAD_ID}; not multipart; a part not named `entries`; a part for a "
                    "stream not in the path",
                    s403=_WRITE_DENIED,
                    s413="106: upload over `STREAMS_MAX_MESSAGE_BYTES`, or an entry over the "
                    "stream's `max_entry_bytes` (`close` 4507)",
                ),
            },
        },
    },
    "/mjpeg/{id}": {
        "get": {
            **_COMMON,
            "tags": ["data"],
            "summary": "A stream of JPEG entries for an `<img>` tag",
            "description": "The newest entry at once, then each new one; a slow viewer skips "
            'frames. Entries that are not JPEG are skipped. `<img src="/mjpeg/main?token=…">`.',
            "operationId": "mjpeg",
            "parameters": [_STREAM],
            "responses": {
                "200": {
                    "description": "parts `--frame`, `Content-Type: image/jpeg`, "
                    "`Content-Length`, the JPEG",
                    "content": {
                        "multipart/x-mixed-replace": {
                            "schema": {"type": "string", "contentMediaType": "image/jpeg"}
                        }
                    },
                },
                **errors(**AUTH_ERRORS, s400=_BAD_ID, s403=_READ_DENIED, s404=_NO_STREAM),
            },
        }
    },
    "/frames": {
        "post": {
            **_COMMON,
            "tags": ["frames"],
            "summary": "Store one camera frame (the streaming web backend's form)",
            "operationId": "postFrame",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["label", "key", "file"],
                            "properties": {
                                "label": {"type": "string", "minLength": 1, "maxLength": 256},
                                "key": {"type": "string", "minLength": 1, "maxLength": 256},
                                "file": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                    "description": "the frame, at most `FRAMES_MAX_FRAME_BYTES`",
                                },
                                "warnings_json": {"type": "string"},
                                "cone_polygons_json": {
                                    "type": "string",
                                    "description": "JSON when not empty",
                                },
                                "pole_polygons_json": {
                                    "type": "string",
                                    "description": "JSON when not empty",
                                },
                                "detection_items_json": {
                                    "type": "string",
                                    "description": "JSON when not empty",
                                },
                                "width": {"type": "integer", "minimum": 0, "default": 0},
                                "height": {"type": "integer", "minimum": 0, "default": 0},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": ok("stored", ref("FrameStored"), {**STORED, "id": "1732222000123-0"}),
                **errors(
                    **AUTH_ERRORS,
                    s400="107: not multipart; `label`, `key` or `file` missing or empty; bad "
                    "`width`/`height`; a polygon or detection field that is not JSON; a field "
                    "that is not UTF-8",
                    s403="103: the token may not write this label/key",
                    s413="106: frame over `FRAMES_MAX_FRAME_BYTES`, fields over "
                    "`FRAMES_MAX_HEADER_BYTES`",
                ),
            },
        }
    },
    "/labels": {
        "get": {
            **_COMMON,
            "tags": ["frames"],
            "summary": "The labels (sites) the token may read, in name order",
            "description": "Rate-limited per user (`FRAMES_LABELS_RATE` per "
            "`FRAMES_LABELS_RATE_WINDOW_S`), across replicas.",
            "operationId": "listLabels",
            "responses": {
                "200": ok(
                    "the labels",
                    {
                        "type": "object",
                        "required": ["labels"],
                        "properties": {"labels": {"type": "array", "items": {"type": "string"}}},
                    },
                    {"labels": ["site-a", "site-b"]},
                ),
                **errors(**AUTH_ERRORS),
                "429": {
                    "description": "111: over the rate limit; retry after `Retry-After` seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": json_content({"$ref": "#/components/schemas/Error"}),
                },
            },
        }
    },
}


def document() -> dict[str, Any]:
    return build(
        title="Switchboard streams",
        description=DESCRIPTION,
        port=7890,
        tags=[
            ("login", "PTG's `/token`, for users of the operator's users file."),
            ("streams", "Stream ids, descriptions and metadata (PTG)."),
            ("data", "Entries over HTTP (PTG); live pushes and pulls are WebSockets."),
            ("frames", "The streaming web backend's camera frames (docs/frames.md)."),
        ],
        paths=PATHS,
        schemas=SCHEMAS,
        schemes=SCHEMES,
    )
