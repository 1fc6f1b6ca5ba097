"""The room command contract and the merge patch, without Redis."""

import pytest

from services.common.errors import BadRequest, MethodNotFound
from services.common.rooms import RoomCommand, merge_patch, reply_to
from tests.helpers import RFC_7386


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7386)
def test_merge_patch_follows_rfc_7386(target, patch, result):
    assert merge_patch(target, patch) == result


def test_merge_patch_leaves_its_input_alone():
    target = {"a": {"b": 1}}
    merge_patch(target, {"a": {"b": 2}})
    assert target == {"a": {"b": 1}}


def test_a_command_survives_encoding():
    command = RoomCommand(
        op="update",
        room="r",
        conn="c",
        user="u",
        gw="g",
        req="1",
        patch={"a": [], "big": 2**70, "f": 0.1},
        version=3,
    )
    assert RoomCommand.decode(command.encode()) == command


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        ("nope", BadRequest, "command is not valid JSON"),
        ("[]", BadRequest, "command must be a JSON object"),
        ('{"op": "x", "room": "r"}', MethodNotFound, "unknown room op 'x'"),
        ('{"op": "get", "room": ""}', BadRequest, "room must be a string of 1-128 characters"),
        ('{"op": "update", "room": "r"}', BadRequest, "patch is required"),
        ('{"op": "update", "room": "r", "patch": 1}', BadRequest, "patch must be a JSON object"),
        ('{"op": "get", "room": "r", "conn": 5}', BadRequest, "conn must be a string"),
    ],
)
def test_a_malformed_command_is_refused_precisely(raw, error, message):
    with pytest.raises(error) as caught:
        RoomCommand.decode(raw)
    assert caught.value.message == message


def test_reply_to_reads_what_it_can():
    assert reply_to('{"gw": "g", "req": "9", "op": 1}') == ("g", "9")
    assert reply_to("nope") == ("", "")
