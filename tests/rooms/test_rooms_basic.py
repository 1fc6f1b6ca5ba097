"""Room ops through a gateway socket: join, get, update, leave, people, errors."""

from services.common.errors import ErrorCode


async def test_join_get_update_leave_round_trip(gateway, rooms):
    alice = await gateway.connect("alice")
    joined = await alice.ok("room.join", room="r1", state={"frame": 0, "notes": []})
    assert joined == {
        "room": "r1",
        "version": 1,
        "state": {"frame": 0, "notes": []},
        "people": ["alice"],
    }
    push = await alice.push(kind="room")
    assert push == {
        "push": "room",
        "room": "r1",
        "version": 1,
        "state": {"frame": 0, "notes": []},
        "people": ["alice"],
    }
    updated = await alice.ok("room.update", room="r1", patch={"frame": 12})
    assert updated["version"] == 2
    assert updated["state"] == {"frame": 12, "notes": []}
    push = await alice.push(kind="room")
    assert push == {
        "push": "room",
        "room": "r1",
        "version": 2,
        "patch": {"frame": 12},
        "people": ["alice"],
    }
    assert await alice.ok("room.get", room="r1") == updated
    left = await alice.ok("room.leave", room="r1")
    assert left == {"room": "r1", "version": 3, "state": {"frame": 12, "notes": []}, "people": []}
    reply = await alice.call("room.update", room="r1", patch={"frame": 1})
    assert reply["error"]["code"] == ErrorCode.NOT_SUBSCRIBED
