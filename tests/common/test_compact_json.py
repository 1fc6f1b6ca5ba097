"""The one JSON encoder every service writes with: compact, UTF-8, the standard library's
output exactly."""

import json
from typing import Any

import pytest

from services.common.compact_json import dumpb, dumps

VALUES: list[Any] = [
    {"id": 1, "result": {"room": "r", "version": 7, "state": {}, "people": ["é", "ü"]}},
    {"nested": [1, 2.5, -0.0, 1e300, None, True, False, 'a"b\\c\n\u2028'], "": {}},
    "text",
    12345678901234567890123,
    [],
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_is_compact_utf8_json(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected
    assert dumpb(value) == expected.encode()


def test_what_json_cannot_encode_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        dumps({"a": object()})
