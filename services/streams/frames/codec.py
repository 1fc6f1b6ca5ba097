"""The frames wire format: validated uploads, `--IMG--` messages, and frames as sent out.

A binary message is `<UTF-8 JSON header>--IMG--<frame bytes>` in both directions.

Upload header (from `/ws/frames`; `POST /frames` carries the same names as form fields, with the
frame in `file`): `label`, `key` (required, non-empty strings), `warnings_json`,
`cone_polygons_json`, `pole_polygons_json`, `detection_items_json` (strings, may be empty; a JSON
value is accepted too and stored as compact JSON; the polygon and detection fields must be JSON
when not empty), `width`, `height` (integers >= 0, default 0).

Outgoing header (`/ws/labels` and `/ws/stream`): `id`, `key`, `label`, `warnings`,
`cone_polygons`, `pole_polygons`, `detection_items`, `width`, `height`. The backend sent `key`
on one endpoint and `id` on the other; both are always present here.

Unlike the backend, the header is found by JSON, not by the first delimiter, so a `--IMG--`
inside a header string does not corrupt the message, and outgoing headers never contain the
delimiter literally (it is written with a JSON escape), so clients that split at the first
delimiter stay correct.

This module is pure: no aiohttp, no redis.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import BadRequest, LimitExceeded

DELIMITER = b"--IMG--"
ESCAPED_DELIMITER = b"\\u002d-IMG--"
MAX_DELIMITER_TRIES = 16  # delimiters inside header strings we look past before giving up
# Upload name -> stored field name; the stored names are the backend's Redis fields.
TEXT_FIELDS = {
    "warnings_json": "warnings",
    "cone_polygons_json": "cone_polygons",
    "pole_polygons_json": "pole_polygons",
    "detection_items_json": "detection_items",
}
JSON_ONLY = frozenset({"cone_polygons_json", "pole_polygons_json", "detection_items_json"})
MAX_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class FrameUpload:
    """One validated frame, ready to store."""

    label: str
    key: str
    frame: bytes = field(repr=False)
    text: Mapping[str, str]  # stored field name -> value
    width: int
    height: int

    def fields(self) -> dict[str, bytes | str | int]:
        return {"frame": self.frame, **self.text, "width": self.width, "height": self.height}


def split_message(data: bytes, max_header_bytes: int) -> tuple[dict[str, Any], bytes]:
    """Split `<header>--IMG--<frame>`: the header is the first prefix that is a JSON object."""
    start = 0
    for _ in range(MAX_DELIMITER_TRIES):
        at = data.find(DELIMITER, start, max_header_bytes + len(DELIMITER))
        if at < 0:
            break
        try:
            header = json.loads(data[:at])
        except ValueError:
            start = at + 1
            continue
        if not isinstance(header, dict):
            raise BadRequest("Invalid data format: the header must be a JSON object")
        return header, data[at + len(DELIMITER) :]
    if data.find(DELIMITER) < 0:
        raise BadRequest("Invalid data format: no --IMG-- delimiter")
    raise BadRequest(
        f"Invalid data format: no JSON header within {max_header_bytes} bytes before --IMG--"
    )


def parse_upload(header: Mapping[str, Any], frame: bytes, max_frame_bytes: int) -> FrameUpload:
    """Validate an upload's header fields and frame; BadRequest/LimitExceeded say what is wrong."""
    label = _name(header, "label")
    key = _name(header, "key")
    if not frame:
        raise BadRequest("the frame is empty")
    if len(frame) > max_frame_bytes:
        raise LimitExceeded(f"frame of {len(frame)} bytes is over the {max_frame_bytes} limit")
    text = {stored: _text(header, name) for name, stored in TEXT_FIELDS.items()}
    return FrameUpload(
        label=label,
        key=key,
        frame=frame,
        text=text,
        width=_size(header, "width"),
        height=_size(header, "height"),
    )


def _name(header: Mapping[str, Any], name: str) -> str:
    value = header.get(name)
    if value is None or value == "":
        raise BadRequest(f"missing field {name!r}")
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string")
    if len(value) > MAX_NAME_CHARS:
        raise BadRequest(f"field {name!r} is longer than {MAX_NAME_CHARS} characters")
    return value


def _text(header: Mapping[str, Any], name: str) -> str:
    value = header.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"))
    if value and name in JSON_ONLY:
        try:
            json.loads(value)
        except ValueError:
            raise BadRequest(f"field {name!r} is not valid JSON") from None
    return value


def _size(header: Mapping[str, Any], name: str) -> int:
    value = header.get(name, 0)
    if value in (None, ""):
        return 0
    if isinstance(value, bool):
        raise BadRequest(f"field {name!r} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"field {name!r} must be an integer") from None
    if number < 0 or (isinstance(value, float) and value != number):
        raise BadRequest(f"field {name!r} must be an integer >= 0")
    return number


@dataclass(frozen=True, slots=True)
class Frame:
    """A stored frame as every watcher receives it; `message` is encoded once and shared."""

    stream: str  # the Redis key
    id: str
    digest: bytes  # what makes two frames "the same" for change-only delivery
    message: bytes = field(repr=False)


def frame_from_entry(stream: str, label: str, key: str, entry_id: str, fields: Any) -> Frame:
    """Build a Frame from a Redis stream entry (fields as bytes)."""

    def text(name: bytes) -> str:
        raw = fields.get(name, b"")
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    image = fields.get(b"frame", b"")
    header = {
        "id": entry_id,
        "key": key,
        "label": label,
        "warnings": text(b"warnings"),
        "cone_polygons": text(b"cone_polygons"),
        "pole_polygons": text(b"pole_polygons"),
        "detection_items": text(b"detection_items"),
        "width": _stored_int(text(b"width")),
        "height": _stored_int(text(b"height")),
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded = encoded.replace(DELIMITER, ESCAPED_DELIMITER)
    content = hashlib.blake2b(digest_size=16)
    for name in (b"frame", b"warnings", b"cone_polygons", b"pole_polygons", b"detection_items"):
        raw = fields.get(name, b"")
        content.update(len(raw).to_bytes(8, "big"))
        content.update(raw)
    content.update(f"{header['width']}x{header['height']}".encode())
    return Frame(
        stream=stream,
        id=entry_id,
        digest=content.digest(),
        message=encoded + DELIMITER + image,
    )


def _stored_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        return 0


def error_body(code: int, message: str) -> dict[str, Any]:
    """A WebSocket error text frame: our `error` object plus the backend's `status`/`message`."""
    return {"status": "error", "message": message, "error": {"code": code, "message": message}}
