"""Room ops through a gateway socket: join, get, update, leave, people, errors."""

import asyncio

import pytest

from services.common.errors import ErrorCode
from services.gateway.keys import node_key


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


async def test_people_lists_a_user_with_two_tabs_once_until_both_leave(gateway, rooms):
    tab1, tab2, bob = (
        await gateway.connect("alice"),
        await gateway.connect("alice"),
        await gateway.connect("bob"),
    )
    assert (await tab1.ok("room.join", room="r"))["people"] == ["alice"]
    assert (await bob.ok("room.join", room="r"))["people"] == ["alice", "bob"]
    assert (await tab2.ok("room.join", room="r"))["people"] == ["alice", "bob"]
    assert (await tab1.ok("room.leave", room="r"))["people"] == ["alice", "bob"]
    version = (await bob.ok("room.get", room="r"))["version"]
    await tab2.close()  # a closed socket leaves every room it was in
    while (push := await bob.push(kind="room"))["version"] <= version:
        pass
    assert push == {
        "push": "room",
        "room": "r",
        "version": version + 1,
        "patch": {},
        "people": ["bob"],
    }
    assert (await bob.ok("room.get", room="r"))["people"] == ["bob"]


async def test_a_stale_update_gets_113_with_the_current_version_and_state(gateway, rooms):
    alice, bob = await gateway.connect("alice"), await gateway.connect("bob")
    await alice.ok("room.join", room="r", state={"x": 0})
    version = (await bob.ok("room.join", room="r"))["version"]
    replies = await asyncio.gather(
        alice.call("room.update", room="r", patch={"x": 1}, version=version),
        bob.call("room.update", room="r", patch={"x": 2}, version=version),
    )
    wins = [r for r in replies if "result" in r]
    losses = [r for r in replies if "error" in r]
    assert len(wins) == 1 and len(losses) == 1, replies
    won = wins[0]["result"]
    assert won["version"] == version + 1
    assert losses[0]["error"] == {
        "code": ErrorCode.CONFLICT,
        "message": f"room 'r' is at version {version + 1}, not {version}",
        "version": version + 1,
        "state": won["state"],
    }
    # Without `version` the patch is merged into whatever is current.
    merged = await bob.ok("room.update", room="r", patch={"y": [], "x": None})
    assert merged["state"] == {"y": []} and merged["version"] == version + 2


async def test_two_hundred_concurrent_updates_keep_a_strict_version_sequence(gateway, rooms):
    watcher = await gateway.connect("watcher")
    start = await watcher.ok("room.join", room="busy", state={"n": {}})
    writers = [await gateway.connect(f"w{i}") for i in range(4)]
    for writer in writers:
        await writer.ok("room.join", room="busy")

    async def write(i: int, writer) -> None:
        for j in range(50):
            await writer.ok("room.update", room="busy", patch={"n": {f"w{i}": j}, "last": [i, j]})

    await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    final = await watcher.ok("room.get", room="busy")
    assert final["version"] == start["version"] + 4 + 200
    assert final["state"]["n"] == {f"w{i}": 49 for i in range(4)}
    seen = []
    while not seen or seen[-1] < final["version"]:
        seen.append((await watcher.push(kind="room"))["version"])
    assert seen == list(range(start["version"], final["version"] + 1))


BAD = ErrorCode.BAD_REQUEST
ROOM_ID = "room must be a string of 1-128 characters"
ROOM_CHARS = "room must not contain whitespace, control characters or braces"
VERSION = "version must be a non-negative integer"
UPDATE = {"op": "room.update", "room": "r", "patch": {}}


@pytest.mark.parametrize(
    ("command", "code", "message"),
    [
        ({"op": "room.nope", "room": "r"}, ErrorCode.METHOD_NOT_FOUND, "unknown op 'room.nope'"),
        ({"op": "room.join", "room": 5}, BAD, ROOM_ID),
        ({"op": "room.get", "room": "x" * 129}, BAD, ROOM_ID),
        ({"op": "room.get"}, BAD, ROOM_ID),
        ({"op": "room.join", "room": "a b"}, BAD, ROOM_CHARS),
        ({"op": "room.join", "room": "a{b}"}, BAD, ROOM_CHARS),
        ({"op": "room.join", "room": "r", "state": [1]}, BAD, "state must be a JSON object"),
        ({"op": "room.update", "room": "r"}, BAD, "patch is required"),
        ({**UPDATE, "patch": [1]}, BAD, "patch (a JSON merge patch) must be a JSON object"),
        ({**UPDATE, "version": "3"}, BAD, VERSION),
        ({**UPDATE, "version": True}, BAD, VERSION),
        ({**UPDATE, "version": 1.5}, BAD, VERSION),
        (UPDATE, ErrorCode.NOT_SUBSCRIBED, "not in room 'r': join it first"),
        ({"op": "room.leave", "room": "r"}, ErrorCode.NOT_SUBSCRIBED, "not in room 'r'"),
        (
            {"op": "subscribe", "channel": "room:r"},
            ErrorCode.PERMISSION_DENIED,
            "permission denied: only the server subscribes here",
        ),
    ],
)
async def test_bad_room_commands_get_a_precise_error(gateway, rooms, command, code, message):
    client = await gateway.connect("alice")
    fields = dict(command)
    reply = await client.call(fields.pop("op"), **fields)
    assert reply["error"] == {"code": code, "message": message}


async def test_joining_twice_is_105_and_the_room_channel_is_not_a_subscription(gateway, rooms):
    client = await gateway.connect("alice")
    await client.ok("room.join", room="r")
    assert (await client.call("room.join", room="r"))["error"][
        "code"
    ] == ErrorCode.ALREADY_SUBSCRIBED
    assert (await client.call("unsubscribe", channel="room:r"))["error"]["code"] == (
        ErrorCode.NOT_SUBSCRIBED
    )


async def test_a_room_command_without_an_answer_in_time_gets_108(start_gateway):
    gw = await start_gateway(GATEWAY_ROOM_TIMEOUT_S="0.3")  # no rooms service running
    client = await gw.connect("alice")
    reply = await client.call("room.join", room="r")
    assert reply["error"] == {
        "code": ErrorCode.NOT_AVAILABLE,
        "message": "the rooms service did not answer in time",
    }
    # The socket is not left subscribed to the room's channel nor counted in it.
    node = gw.app[node_key]
    assert node.hub.subscribers("room:r") == 0
    assert all(not conn.rooms for conn in node.connections.values())


async def test_each_unanswered_room_command_expires_at_its_own_deadline(start_gateway):
    gw = await start_gateway(GATEWAY_ROOM_TIMEOUT_S="0.4")  # no rooms service running
    client = await gw.connect("alice")
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def get_at(delay_s: float) -> float:
        await asyncio.sleep(delay_s)
        reply = await client.call("room.get", room="r")
        assert reply["error"]["code"] == ErrorCode.NOT_AVAILABLE
        return loop.time() - started

    first, second = await asyncio.gather(get_at(0.0), get_at(0.2))
    assert 0.4 <= first < second
    assert second >= 0.6  # not expired with the first
    assert not gw.app[node_key].rooms._pending  # nothing left behind


async def test_after_a_pubsub_outage_members_get_the_current_state(start_gateway, rooms):
    one, two = await start_gateway(), await start_gateway()
    alice, bob = await one.connect("alice"), await two.connect("bob")
    await alice.ok("room.join", room="r", state={"a": 0})
    joined = await bob.ok("room.join", room="r")
    while (await alice.push(kind="room"))["version"] < joined["version"]:
        pass
    subscriber = one.app[node_key].subscriber
    subscriber._protocol.transport.abort()  # alice's gateway loses its pub/sub link a while
    updated = await bob.ok("room.update", room="r", patch={"a": 1})  # its push is lost to alice
    assert await alice.push(kind="room") == {
        "push": "room",
        "room": "r",
        "version": updated["version"],
        "state": {"a": 1},
        "people": ["alice", "bob"],
    }
