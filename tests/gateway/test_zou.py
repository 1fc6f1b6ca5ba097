"""Decoding Zou's bridge messages (pure: no Redis)."""

import json
import pickle

import pytest

from services.gateway.zou import BridgeError, ZouEmit, decode_emit


def message(**fields: object) -> bytes:
    base: dict[str, object] = {
        "method": "emit",
        "event": "task:new",
        "data": [{"task_id": "t1", "project_id": "p1"}],
        "binary": False,
        "namespace": "/events",
        "room": None,
        "skip_sid": None,
        "callback": None,
        "host_id": "zou-api",
    }
    base.update(fields)
    return json.dumps(base).encode()


def test_an_emit_of_python_socketio_5_16_and_later():
    emit = decode_emit(message(), "us")
    assert emit == ZouEmit(
        "task:new", ({"task_id": "t1", "project_id": "p1"},), "/events", None, frozenset()
    )
    assert emit.project_id == "p1"


def test_bare_data_of_older_publishers_and_several_arguments():
    assert decode_emit(message(data={"a": 1}), "us").args == ({"a": 1},)  # type: ignore[union-attr]
    emit = decode_emit(message(data=[1, 2], skip_sid=["s1", "s2"], room="r"), "us")
    assert emit is not None
    assert (emit.args, emit.room, emit.skip_sids, emit.project_id) == (
        (1, 2),
        "r",
        frozenset({"s1", "s2"}),
        None,
    )


def test_our_own_messages_and_other_methods_are_not_for_us():
    assert decode_emit(message(host_id="us"), "us") is None
    assert decode_emit(message(method="enter_room"), "us") is None


@pytest.mark.parametrize(
    "raw",
    [
        pickle.dumps({"method": "emit", "event": "x"}),
        b"not json",
        b"[1, 2]",
        message(event=""),
        message(binary=True),
        message(room=["a", "b"]),
        message(skip_sid=3),
    ],
)
def test_what_is_refused(raw: bytes):
    with pytest.raises(BridgeError):
        decode_emit(raw, "us")
