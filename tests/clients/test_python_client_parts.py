"""The Python client's pure parts: JSON merge patch (RFC 7386), offsets, errors."""

import copy
from typing import Any

import pytest
from switchboard_client import (
    ErrorCode,
    SwitchboardError,
    compare_offsets,
    is_terminal_close,
    merge_patch,
)

from tests.helpers import RFC_7386


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_7386)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == before  # not modified


def test_offsets_compare_as_numbers() -> None:
    assert compare_offsets("9-0", "10-0") < 0
    assert compare_offsets("10-2", "10-10") < 0
    assert compare_offsets("1732222-3", "1732222-3") == 0
    assert compare_offsets("1732223-0", "1732222-99") > 0


def test_close_codes_and_errors() -> None:
    codes = [4499, 4500, 4504, 4999, 5000, 1012, 4001]
    assert [is_terminal_close(c) for c in codes] == [False, True, True, True, False, False, False]
    conflict = SwitchboardError.from_reply(
        {"code": 113, "message": "stale", "version": 2, "state": {"a": 1}}
    )
    assert (conflict.code, conflict.message, conflict.version, conflict.state) == (
        ErrorCode.CONFLICT,
        "stale",
        2,
        {"a": 1},
    )
    assert SwitchboardError.from_reply({"code": 108, "message": "x", "temporary": True}).temporary
    assert not SwitchboardError(ErrorCode.BAD_REQUEST, "no").temporary
