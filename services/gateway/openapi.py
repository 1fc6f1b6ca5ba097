"""The gateway's REST surface as an OpenAPI 3.1 document (served at `/openapi.json`)."""

from typing import Any

from services.common.openapi import (
    ADMIN_ERRORS,
    AUTH_ERRORS,
    SECURITY,
    build,
    errors,
    json_content,
    ok,
    query_param,
    ref,
)

DESCRIPTION = """\
The gateway holds the clients' connections and serves the server API that backends call.

WebSocket endpoints (OpenAPI describes no WebSocket operations; see docs/protocol.md):

| path | protocol |
|---|---|
| `/ws` | the native protocol: JSON commands `{"id", "op", ...}` and pushes, one message per \
line; authenticate with `Authorization: Bearer`, the `access_token_cookie` cookie or a first \
`connect` command |
| `/zeph` | Zephclient's protocol: `{"session_id": "<jwt>", "room"}` joins a room, \
`{"task", "data"}` runs a task of the handlers service |
| `/socket.io/` | Socket.IO v5 (Engine.IO v4), namespace `/events`: Zou's event stream for \
Kitsu and gazu |

Errors of the server API are `{"error": {"code", "message"}}` with an HTTP status; the codes \
are the protocol's (docs/protocol.md, *Error codes*)."""

_CHANNEL = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": "`namespace:name`, or a name in the default namespace",
    "example": "news",
}
_EVENT = {
    "type": "string",
    "minLength": 1,
    "description": "names the event: handlers and Socket.IO clients (on `zou:events`) get it",
    "example": "task:new",
}
_DATA = {"description": "any JSON value, delivered as is", "example": {"text": "hi"}}

SCHEMAS: dict[str, Any] = {
    "Position": {
        "type": "object",
        "required": ["offset", "epoch"],
        "properties": {
            "offset": {
                "type": "string",
                "description": "the publication's id in the channel's history, `<ms>-<seq>`; "
                "empty in a namespace without history",
                "example": "1732222000123-0",
            },
            "epoch": {
                "type": "string",
                "description": "names one continuous history; changes when history is lost",
                "example": "9f2c4a1e",
            },
        },
    },
    "PublishRequest": {
        "type": "object",
        "required": ["channel", "data"],
        "properties": {"channel": _CHANNEL, "data": _DATA, "event": _EVENT},
    },
    "BroadcastRequest": {
        "type": "object",
        "required": ["channels", "data"],
        "properties": {
            "channels": {"type": "array", "minItems": 1, "items": _CHANNEL},
            "data": _DATA,
            "event": _EVENT,
        },
    },
    "BroadcastResult": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "one per channel, in the order given",
                "items": {"oneOf": [ref("Position"), ref("Error")]},
            }
        },
    },
    "Publication": {
        "type": "object",
        "required": ["offset", "data"],
        "properties": {
            "offset": {"type": "string"},
            "data": {"description": "the published JSON value"},
            "event": {"type": "string"},
        },
    },
    "History": {
        "type": "object",
        "required": ["epoch", "offset", "publications"],
        "properties": {
            "epoch": {"type": "string"},
            "offset": {"type": "string", "description": "the channel's current top"},
            "publications": {"type": "array", "items": ref("Publication")},
        },
    },
    "ClientInfo": {
        "type": "object",
        "required": ["user", "client"],
        "properties": {
            "user": {"type": "string"},
            "client": {"type": "string"},
            "name": {"type": "string"},
            "info": {"type": "object", "description": "the token's `info` claim"},
        },
    },
    "Presence": {
        "type": "object",
        "required": ["clients"],
        "properties": {
            "clients": {
                "type": "object",
                "description": "client id -> who",
                "additionalProperties": ref("ClientInfo"),
            }
        },
    },
    "Empty": {"type": "object", "maxProperties": 0},
}

_PUBLISH_ERRORS = {
    **AUTH_ERRORS,
    "s400": "107: not JSON, not an object, larger than `GATEWAY_MAX_MESSAGE_BYTES`, no `data`, "
    "`event` not a non-empty string",
    "s403": "103: the token's `scope` holds neither `publish` nor `admin`",
    "s404": "102: malformed channel name, or a namespace that is not configured",
}
_READ_ERRORS = {
    **AUTH_ERRORS,
    "s400": "107: `limit` not an integer",
    "s403": "103: the token's `scope` holds neither `publish` nor `admin`",
    "s404": "102: malformed channel name, or a namespace that is not configured",
}
_CHANNEL_QUERY = query_param("channel", "the channel", _CHANNEL, required=True)


def _json_body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"required": True, "content": json_content(schema, example)}


PATHS: dict[str, Any] = {
    "/api/publish": {
        "post": {
            "tags": ["server API"],
            "summary": "Publish to a channel",
            "description": "Appends to the channel's history (where it has one) and sends to "
            "every subscriber on every gateway. With `event`, the handlers service receives "
            "it too (`sb:events`); on `zou:events` Socket.IO clients get it as that event.",
            "operationId": "publish",
            "security": SECURITY,
            "requestBody": _json_body(
                ref("PublishRequest"),
                {"channel": "news", "data": {"text": "hi"}, "event": "news:new"},
            ),
            "responses": {
                "200": ok(
                    "published",
                    ref("Position"),
                    {"offset": "1732222000123-0", "epoch": "9f2c4a1e"},
                ),
                **errors(**_PUBLISH_ERRORS),
            },
        }
    },
    "/api/broadcast": {
        "post": {
            "tags": ["server API"],
            "summary": "Publish the same data to several channels",
            "description": "Each channel succeeds or fails on its own: a bad channel gets an "
            "`error` entry in `results`, the others are published.",
            "operationId": "broadcast",
            "security": SECURITY,
            "requestBody": _json_body(
                ref("BroadcastRequest"), {"channels": ["news", "user:#alice"], "data": {"n": 1}}
            ),
            "responses": {
                "200": ok(
                    "one result per channel",
                    ref("BroadcastResult"),
                    {
                        "results": [
                            {"offset": "1732222000123-0", "epoch": "9f2c4a1e"},
                            {"error": {"code": 102, "message": "unknown namespace 'nope'"}},
                        ]
                    },
                ),
                **errors(
                    **{
                        **{k: v for k, v in _PUBLISH_ERRORS.items() if k != "s404"},
                        "s400": "107: not JSON, not an object, too large, `channels` not a "
                        "non-empty list, no `data`, bad `event`",
                    }
                ),
            },
        }
    },
    "/api/history": {
        "get": {
            "tags": ["server API"],
            "summary": "A channel's history",
            "description": "The last `limit` publications, or those after `since` (oldest first).",
            "operationId": "history",
            "security": SECURITY,
            "parameters": [
                _CHANNEL_QUERY,
                query_param(
                    "limit",
                    "at most this many (capped by the namespace's history size, its default)",
                    {"type": "integer", "minimum": 0},
                ),
                query_param("since", "an offset: only publications after it", {"type": "string"}),
                query_param("epoch", "the epoch `since` belongs to", {"type": "string"}),
            ],
            "responses": {
                "200": ok(
                    "the publications",
                    ref("History"),
                    {
                        "epoch": "9f2c4a1e",
                        "offset": "1732222000123-0",
                        "publications": [{"offset": "1732222000123-0", "data": {"text": "hi"}}],
                    },
                ),
                **errors(
                    **{
                        **_READ_ERRORS,
                        "s410": "112: `since` is no longer covered by history (another epoch, "
                        "trimmed or expired)",
                        "s503": "108: history is off in this namespace, or Redis unreachable",
                    }
                ),
            },
        }
    },
    "/api/presence": {
        "get": {
            "tags": ["server API"],
            "summary": "Who is subscribed to a channel, across every gateway",
            "operationId": "presence",
            "security": SECURITY,
            "parameters": [_CHANNEL_QUERY],
            "responses": {
                "200": ok(
                    "the channel's clients",
                    ref("Presence"),
                    {"clients": {"c9f1": {"user": "alice", "client": "c9f1"}}},
                ),
                **errors(
                    **{
                        **{k: v for k, v in _READ_ERRORS.items() if k != "s400"},
                        "s503": "108: presence is off in this namespace, or Redis unreachable",
                    }
                ),
            },
        }
    },
    "/api/disconnect": {
        "post": {
            "tags": ["server API"],
            "summary": "Disconnect every socket of a user, on every gateway (admin)",
            "description": "The sockets get a `disconnect` push and close with 4504 (do not "
            "reconnect); Socket.IO sockets get a DISCONNECT.",
            "operationId": "disconnect",
            "security": SECURITY,
            "requestBody": _json_body(
                {
                    "type": "object",
                    "required": ["user"],
                    "properties": {"user": {"type": "string", "minLength": 1}},
                },
                {"user": "alice"},
            ),
            "responses": {
                "200": ok("done", ref("Empty"), {}),
                **errors(**ADMIN_ERRORS, s400="107: `user` not a non-empty string"),
            },
        }
    },
    "/api/revoke": {
        "post": {
            "tags": ["server API"],
            "summary": "Revoke a token by its `jti` (admin)",
            "description": "Every service refuses the token from now on; live sockets "
            "authenticated with it close with 4502.",
            "operationId": "revoke",
            "security": SECURITY,
            "requestBody": _json_body(
                {
                    "type": "object",
                    "required": ["jti"],
                    "properties": {
                        "jti": {"type": "string", "minLength": 1},
                        "ttl": {
                            "type": "integer",
                            "exclusiveMinimum": 0,
                            "default": 604800,
                            "description": "seconds the revocation is kept (at least the "
                            "token's remaining lifetime)",
                        },
                    },
                },
                {"jti": "5f0c…", "ttl": 86400},
            ),
            "responses": {
                "200": ok("revoked", ref("Empty"), {}),
                **errors(
                    **ADMIN_ERRORS,
                    s400="107: `jti` not a non-empty string, `ttl` not a positive integer",
                ),
            },
        }
    },
    "/": {
        "get": {
            "tags": ["status"],
            "summary": "Zou's event stream answer (its health check reads it)",
            "operationId": "index",
            "responses": {
                "200": ok(
                    "the service",
                    {
                        "type": "object",
                        "required": ["name", "version"],
                        "properties": {
                            "name": {"const": "Zou Event stream"},
                            "version": {"type": "string"},
                        },
                    },
                    {"name": "Zou Event stream", "version": "0.1.0"},
                )
            },
        }
    },
    "/stats": {
        "get": {
            "tags": ["status"],
            "summary": "Connection counts of the whole cluster (Zou's `nb_connections`)",
            "description": "When Redis is unreachable the counts are this gateway's.",
            "operationId": "stats",
            "responses": {
                "200": ok(
                    "the counts",
                    {
                        "type": "object",
                        "required": [
                            "nb_connections",
                            "local_connections",
                            "socketio_connections",
                            "nodes",
                            "local_channels",
                            "redis_connected",
                        ],
                        "properties": {
                            "nb_connections": {
                                "type": "integer",
                                "description": "native and Socket.IO sockets, every gateway",
                            },
                            "local_connections": {"type": "integer"},
                            "socketio_connections": {"type": "integer"},
                            "nodes": {"type": "integer", "description": "live gateways"},
                            "local_channels": {"type": "integer"},
                            "redis_connected": {"type": "boolean"},
                        },
                    },
                )
            },
        }
    },
}


def document() -> dict[str, Any]:
    return build(
        title="Switchboard gateway",
        description=DESCRIPTION,
        port=5001,
        tags=[
            (
                "server API",
                "For backends. Bearer token whose `scope` holds `publish` (or `admin`); "
                "`disconnect` and `revoke` need `admin`.",
            ),
            ("status", "Public status routes (no token), as Zou's event stream had them."),
        ],
        paths=PATHS,
        schemas=SCHEMAS,
    )
