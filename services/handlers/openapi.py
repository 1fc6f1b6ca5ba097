"""The handlers service's REST surface as an OpenAPI 3.1 document (served at `/openapi.json`)."""

from typing import Any

from services.common.openapi import (
    ADMIN_ERRORS,
    SECURITY,
    build,
    errors,
    ok,
    path_param,
    query_param,
    ref,
)

from .routes import MAX_LIST

DESCRIPTION = """\
The handlers service runs the event handlers and client-callable tasks of a folder \
(docs/handlers.md). Events reach it through the Redis stream `sb:events` and task calls through \
`sb:rpc`, not over HTTP. These operator routes need a bearer token with `admin` in its `scope` \
(401 without a valid token, 403 without the scope).

Errors are `{"error": {"code", "message"}}` with an HTTP status."""

_ID = path_param("id", "a dead-letter id, `<ms>-<seq>`", "1732222000123-0")
_BAD_ID = "107: the id does not look like `1732222000123-0`"
_NO_ENTRY = "104: no dead letter with this id"
_COUNTS = {
    "runs": {"type": "integer"},
    "failures": {"type": "integer"},
    "dead_lettered": {"type": "integer"},
    "last_error": {"type": ["string", "null"]},
    "last_error_at": {"type": ["number", "null"], "description": "seconds since the epoch"},
}

SCHEMAS: dict[str, Any] = {
    "HandlerInfo": {
        "type": "object",
        "required": ["id", "event", "name", "kind", "file", "async", *_COUNTS],
        "properties": {
            "id": {"type": "string", "example": "task:start/shotgun_wip"},
            "event": {"type": "string", "description": "the event it handles"},
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "file": {"type": "string"},
            "async": {"type": "boolean"},
            **_COUNTS,
        },
    },
    "TaskInfo": {
        "type": "object",
        "required": ["name", "file", "async", "requires", *_COUNTS],
        "properties": {
            "name": {"type": "string"},
            "file": {"type": "string"},
            "async": {"type": "boolean"},
            "requires": {"description": "the task's `requires` rule, or null"},
            **{k: v for k, v in _COUNTS.items() if k != "dead_lettered"},
            "dead_lettered": {"type": "integer"},
        },
    },
    "Handlers": {
        "type": "object",
        "required": [
            "generation",
            "loaded_at",
            "isolation",
            "folders",
            "handlers",
            "tasks",
            "errors",
            "subscriptions",
            "counts",
            "last_error",
        ],
        "properties": {
            "generation": {"type": "integer", "description": "bumped by every reload"},
            "loaded_at": {"type": "number"},
            "isolation": {"type": "string", "enum": ["thread", "process"]},
            "folders": {
                "type": "object",
                "required": ["handlers", "tasks"],
                "properties": {"handlers": {"type": "string"}, "tasks": {"type": "string"}},
            },
            "handlers": {"type": "array", "items": ref("HandlerInfo")},
            "tasks": {"type": "array", "items": ref("TaskInfo")},
            "errors": {
                "type": "array",
                "description": "files that could not be loaded (the rest runs)",
                "items": {
                    "type": "object",
                    "required": ["file", "error"],
                    "properties": {"file": {"type": "string"}, "error": {"type": "string"}},
                },
            },
            "subscriptions": {
                "type": "object",
                "description": "cluster-wide `subscribe` listeners per event",
                "additionalProperties": {"type": "integer"},
            },
            "counts": {
                "type": "object",
                "required": [
                    "handlers",
                    "tasks",
                    "errors",
                    "runs",
                    "failures",
                    "dead_lettered",
                    "events_in_flight",
                    "rpc_in_flight",
                ],
                "additionalProperties": {"type": "integer"},
            },
            "last_error": {
                "type": ["object", "null"],
                "properties": {
                    "name": {"type": "string"},
                    "error": {"type": "string"},
                    "at": {"type": "number"},
                },
            },
        },
    },
    "DeadLetter": {
        "type": "object",
        "required": ["id", "kind", "entry", "handler", "error", "attempts", "failed_at"],
        "description": "The original event's fields, and why it was dead-lettered.",
        "properties": {
            "id": {"type": "string"},
            "event": {"type": "string"},
            "data": {"type": "string", "description": "the event's data, JSON text"},
            "source": {"type": "string"},
            "channel": {"type": "string"},
            "ts": {"type": "string"},
            "kind": {"type": "string", "enum": ["event", "rpc"]},
            "entry": {"type": "string", "description": "the event's id in `sb:events`"},
            "handler": {"type": "string"},
            "error": {"type": "string"},
            "traceback": {"type": "string"},
            "attempts": {"type": "integer"},
            "failed_at": {"type": "string", "description": "ms since the epoch"},
        },
    },
    "DeadLetters": {
        "type": "object",
        "required": ["entries", "total"],
        "properties": {
            "entries": {"type": "array", "items": ref("DeadLetter")},
            "total": {"type": "integer"},
        },
    },
    "RetryResult": {
        "type": "object",
        "required": ["id", "ok"],
        "properties": {
            "id": {"type": "string"},
            "ok": {"type": "boolean"},
            "error": {"type": "string", "description": "when `ok` is false"},
            "dlq_id": {
                "type": "string",
                "description": "when `ok` is false: the entry that replaced this one",
            },
        },
    },
}

PATHS: dict[str, Any] = {
    "/handlers": {
        "get": {
            "tags": ["handlers"],
            "summary": "What is loaded and how it runs",
            "operationId": "listHandlers",
            "security": SECURITY,
            "responses": {"200": ok("the registry", ref("Handlers")), **errors(**ADMIN_ERRORS)},
        }
    },
    "/dlq": {
        "get": {
            "tags": ["dead letters"],
            "summary": "Dead letters, oldest first",
            "operationId": "listDeadLetters",
            "security": SECURITY,
            "parameters": [
                query_param(
                    "limit",
                    "at most this many",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 100},
                ),
                query_param(
                    "after",
                    "the last id of the previous page: page on after it",
                    {"type": "string", "example": "1732222000123-0"},
                ),
            ],
            "responses": {
                "200": ok("a page of dead letters", ref("DeadLetters")),
                **errors(
                    **ADMIN_ERRORS,
                    s400=f"107: `limit` not an integer in 1-{MAX_LIST}, malformed `after`",
                ),
            },
        }
    },
    "/dlq/{id}/retry": {
        "parameters": [_ID],
        "post": {
            "tags": ["dead letters"],
            "summary": "Run that handler once more on that event",
            "description": "Success: the entry is removed. Failure: it is replaced by one with "
            "`attempts` + 1 (`dlq_id`).",
            "operationId": "retryDeadLetter",
            "security": SECURITY,
            "responses": {
                "200": ok(
                    "the attempt's outcome",
                    ref("RetryResult"),
                    {"id": "1732222000123-0", "ok": True},
                ),
                **errors(
                    **ADMIN_ERRORS,
                    s400=f"{_BAD_ID}; an rpc entry (only events are retried); data not JSON",
                    s404=f"{_NO_ENTRY}, or its handler is not loaded",
                ),
            },
        },
    },
    "/dlq/{id}": {
        "parameters": [_ID],
        "delete": {
            "tags": ["dead letters"],
            "summary": "Drop a dead letter",
            "operationId": "deleteDeadLetter",
            "security": SECURITY,
            "responses": {
                "200": ok(
                    "dropped",
                    {
                        "type": "object",
                        "required": ["id", "deleted"],
                        "properties": {"id": {"type": "string"}, "deleted": {"const": True}},
                    },
                    {"id": "1732222000123-0", "deleted": True},
                ),
                **errors(**ADMIN_ERRORS, s400=_BAD_ID, s404=_NO_ENTRY),
            },
        },
    },
}


def document() -> dict[str, Any]:
    return build(
        title="Switchboard handlers",
        description=DESCRIPTION,
        port=5003,
        tags=[
            ("handlers", "Operator routes (admin scope)."),
            ("dead letters", "Events whose handler failed after every retry (admin scope)."),
        ],
        paths=PATHS,
        schemas=SCHEMAS,
    )
