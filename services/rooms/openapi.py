"""The rooms service's REST surface as an OpenAPI 3.1 document (served at `/openapi.json`)."""

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
The rooms service keeps the rooms' state and members; clients reach rooms through the gateway \
(`room.join`, `room.update`, ... on `/ws`, docs/protocol.md). These operator routes need a \
bearer token with `admin` in its `scope` (401 without a valid token, 403 without the scope).

Errors are `{"error": {"code", "message"}}` with an HTTP status."""

_ROOM = path_param(
    "room",
    "the room id: 1-128 printable characters without whitespace or braces",
    "review-42",
)
_BAD_ROOM = "107: malformed room id"
_NO_ROOM = "102: no such room"

SCHEMAS: dict[str, Any] = {
    "RoomSummary": {
        "type": "object",
        "required": ["room", "version", "members"],
        "properties": {
            "room": {"type": "string"},
            "version": {"type": "integer"},
            "members": {"type": "integer", "description": "connections in the room"},
        },
    },
    "RoomList": {
        "type": "object",
        "required": ["rooms", "total"],
        "properties": {
            "rooms": {"type": "array", "items": ref("RoomSummary")},
            "total": {"type": "integer", "description": "rooms in all"},
        },
    },
    "Member": {
        "type": "object",
        "required": ["conn", "user", "deadline_ms", "info"],
        "properties": {
            "conn": {"type": "string", "description": "the gateway connection"},
            "user": {"type": "string"},
            "deadline_ms": {
                "type": "integer",
                "description": "removed at this time (ms since the epoch) unless its gateway "
                "renews it",
            },
            "info": {"type": ["object", "null"]},
        },
    },
    "Room": {
        "type": "object",
        "required": [
            "room",
            "version",
            "state",
            "people",
            "members",
            "updated_ms",
            "expires_in_ms",
        ],
        "properties": {
            "room": {"type": "string"},
            "version": {"type": "integer", "description": "grows by one with every change"},
            "state": {"type": "object", "description": "the shared JSON object"},
            "people": {
                "type": "array",
                "items": {"type": "string"},
                "description": "users in the room, in the order they came",
            },
            "members": {"type": "array", "items": ref("Member")},
            "updated_ms": {"type": "integer"},
            "expires_in_ms": {
                "type": ["integer", "null"],
                "description": "ms until an idle room is freed (null: no expiry set)",
            },
        },
    },
    "RoomDeleted": {
        "type": "object",
        "required": ["room", "version", "deleted"],
        "properties": {
            "room": {"type": "string"},
            "version": {"type": "integer", "description": "the room's last version"},
            "deleted": {"const": True},
        },
    },
}

PATHS: dict[str, Any] = {
    "/rooms": {
        "get": {
            "tags": ["rooms"],
            "summary": "List rooms (by id)",
            "operationId": "listRooms",
            "security": SECURITY,
            "parameters": [
                query_param(
                    "limit",
                    "at most this many rooms",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 1000},
                )
            ],
            "responses": {
                "200": ok(
                    "the rooms",
                    ref("RoomList"),
                    {"rooms": [{"room": "review-42", "version": 7, "members": 2}], "total": 1},
                ),
                **errors(**ADMIN_ERRORS, s400=f"107: `limit` not an integer in 1-{MAX_LIST}"),
            },
        }
    },
    "/rooms/{room}": {
        "parameters": [_ROOM],
        "get": {
            "tags": ["rooms"],
            "summary": "A room's state, people and members",
            "operationId": "getRoom",
            "security": SECURITY,
            "responses": {
                "200": ok(
                    "the room",
                    ref("Room"),
                    {
                        "room": "review-42",
                        "version": 7,
                        "state": {"frame": 120},
                        "people": ["alice"],
                        "members": [
                            {
                                "conn": "g1:c9f1",
                                "user": "alice",
                                "deadline_ms": 1732222010000,
                                "info": None,
                            }
                        ],
                        "updated_ms": 1732222000000,
                        "expires_in_ms": 3599000,
                    },
                ),
                **errors(**ADMIN_ERRORS, s400=_BAD_ROOM, s404=_NO_ROOM),
            },
        },
        "delete": {
            "tags": ["rooms"],
            "summary": "Delete a room",
            "description": 'Its members get a last `room` push with `"deleted": true` and are '
            "out of it.",
            "operationId": "deleteRoom",
            "security": SECURITY,
            "responses": {
                "200": ok(
                    "deleted",
                    ref("RoomDeleted"),
                    {"room": "review-42", "version": 8, "deleted": True},
                ),
                **errors(**ADMIN_ERRORS, s400=_BAD_ROOM, s404=_NO_ROOM),
            },
        },
    },
}


def document() -> dict[str, Any]:
    return build(
        title="Switchboard rooms",
        description=DESCRIPTION,
        port=5002,
        tags=[("rooms", "Operator routes (admin scope).")],
        paths=PATHS,
        schemas=SCHEMAS,
    )
