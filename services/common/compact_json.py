"""Compact JSON, as every service writes it: no spaces, non-ASCII text kept as UTF-8; and
reading it back.

The standard library's C encoder, made once and called directly: `json.dumps` with options
builds a new `JSONEncoder` on every call, and even a kept `JSONEncoder` builds a new C encoder
on every `encode`, together more than a third of the cost of encoding a small message; the
gateway and the rooms service encode several per room update. Without the circular-reference
check (what is encoded here came from JSON or from our own code): a cycle raises
RecursionError rather than ValueError.
"""

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _make() -> Callable[[Any], str]:
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    encode = c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, True
    )
    return lambda value: "".join(encode(value, 0))


dumps: Callable[[Any], str] = _make()


def dumpb(value: Any) -> bytes:
    return dumps(value).encode()


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """`json.loads` of a str, in half the time for a document without surrounding whitespace
    (what the services and most clients send): the C scanner straight away, without
    `json.loads`'s type checks and two whitespace matches. Anything it does not take whole
    goes through `json.loads`, which gives the same value, or the same error."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)
