"""The one JSON encoder every service writes with: compact, UTF-8, the standard library's
output exactly."""

import json
from typing import Any

import pytest

from services.common.compact_json import dumpb, dumps, loads

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


DOCUMENTS = [
    '{"id":1,"op":"room.update","room":"r","patch":{"a":[1,2.5,null,true]}}',
    ' {"id": 1} ',  # surrounding whitespace: the long way, same value
    '{"a":1}\n',
    '"text"',
    "12",
    "[]",
    '{"n":NaN}',
]
BAD = ["", " ", "{", '{"a":1} x', '{"a":1}{"b":2}', "nul", "{'a':1}", '{"a":1,}']


@pytest.mark.parametrize("text", DOCUMENTS)
def test_loads_reads_what_json_loads_reads(text: str) -> None:
    expected, got = json.loads(text), loads(text)
    assert got == expected or (got != got and expected != expected)  # NaN
    assert repr(got) == repr(expected)


@pytest.mark.parametrize("text", BAD)
def test_loads_refuses_what_json_loads_refuses_with_the_same_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        loads(text)
    assert str(got.value) == str(expected.value)
