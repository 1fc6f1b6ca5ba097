"""A batch of room commands applied together: runs of updates of several rooms in two round
trips, joins between them, each command answered as if it had been applied alone."""

import asyncio
import json
from typing import Any

from services.common.errors import ErrorCode
from services.common.rooms import RoomCommand
from services.gateway.keys import node_key


async def test_a_queued_batch_is_applied_in_order_with_every_outcome(
    start_gateway, start_rooms, redis
):
    gw = await start_gateway()
    first = await start_rooms()
    alice, bob, carol = [await gw.connect(u) for u in ("alice", "bob", "carol")]
    conn = {
        name: (await c.ok("connect"))["client"]
        for name, c in zip("abc", (alice, bob, carol), strict=True)
    }
    for room in ("r1", "r2"):
        await alice.ok("room.join", room=room, state={"n": 0})
    await bob.ok("room.join", room="r1")
    r1 = (await bob.ok("room.get", room="r1"))["version"]
    await first.http.close()  # the commands below wait in the stream, then come as one batch

    node = gw.app[node_key].id
    replies = redis.pubsub()
    await replies.subscribe(f"sb:reply:{node}")
    users = {"a": "alice", "b": "bob", "c": "carol"}

    async def queue(req: str, op: str, room: str, **fields: Any) -> None:
        who = req[0]
        cmd = RoomCommand(op, room, conn[who], users[who], node, req, **fields)
        await redis.xadd("sb:rooms:cmd", {"c": cmd.encode()})

    await queue("a1", "update", "r1", patch={"n": 1})
    await queue("a2", "update", "r2", patch={"n": 1})
    await queue("b1", "update", "r1", patch={"b": True}, version=r1 + 1)
    await queue("b2", "update", "r1", patch={"n": 9}, version=r1)  # stale
    await queue("b3", "update", "r1", patch={"b": True})  # changes nothing
    await queue("c1", "update", "r1", patch={"c": 1})  # not a member yet
    await queue("c2", "join", "r1")
    await queue("c3", "update", "r1", patch={"c": 1})  # a member by now
    await queue("a3", "update", "r2", patch={"n": None, "m": [1, 2.5]})
    await queue("a4", "update", "nowhere", patch={"x": 1})
    await start_rooms()

    got: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while len(got) < 10:
            msg = await replies.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                body = json.loads(msg["data"])
                got[body["req"]] = body
    await replies.aclose()

    assert got["a1"]["result"]["version"] == r1 + 1
    assert got["b1"]["result"]["version"] == r1 + 2
    assert got["b1"]["result"]["state"] == {"n": 1, "b": True}
    assert got["b2"]["error"]["code"] == 113
    assert got["b2"]["error"]["version"] == r1 + 2
    assert got["b2"]["error"]["state"] == {"n": 1, "b": True}
    assert got["b3"]["result"]["version"] == r1 + 2  # no new version for no change
    assert got["c1"]["error"]["code"] == 110
    assert got["c2"]["result"]["people"] == ["alice", "bob", "carol"]
    assert got["c3"]["result"]["version"] == r1 + 4  # after the join's version
    assert got["c3"]["result"]["state"] == {"n": 1, "b": True, "c": 1}
    assert got["a3"]["result"]["state"] == {"m": [1, 2.5]}  # lists and floats survive
    assert got["a4"]["error"]["code"] == 110
    # Bob saw every version of r1 once, in order, each with its own patch.
    pushes = []
    while not pushes or pushes[-1][0] < r1 + 4:
        push = await bob.push(kind="room")
        if push["room"] == "r1" and push["version"] > r1:
            pushes.append((push["version"], push.get("patch")))
    assert pushes == [
        (r1 + 1, {"n": 1}),
        (r1 + 2, {"b": True}),
        (r1 + 3, {}),  # carol joined
        (r1 + 4, {"c": 1}),
    ]
    # Nothing else happened to the room.
    assert (await bob.ok("room.get", room="r1"))["version"] == r1 + 4
    for client in (alice, bob, carol):
        await client.close()


async def test_updates_go_on_after_redis_forgets_its_scripts(gateway, rooms, redis):
    alice = await gateway.connect("alice")
    joined = await alice.ok("room.join", room="r", state={})
    await redis.script_flush()  # as after a Redis restart: the service must load them again
    updated = await alice.ok("room.update", room="r", patch={"a": 1})
    assert (updated["version"], updated["state"]) == (joined["version"] + 1, {"a": 1})
    await redis.script_flush()
    # Three commands in one frame: the gateway sends them with its batch script, lost too.
    await alice.ws.send_str(
        "\n".join(
            json.dumps({"id": f"u{n}", "op": "room.update", "room": "r", "patch": {"n": n}})
            for n in range(3)
        )
    )
    async with asyncio.timeout(5):
        replies = [await alice.orphans.get() for _ in range(3)]  # ids the helper did not send
    assert [(r["id"], r["result"]["version"]) for r in replies] == [
        (f"u{n}", updated["version"] + 1 + n) for n in range(3)
    ]
    await alice.close()


async def test_a_reply_written_another_way_still_answers_and_garbage_is_ignored(
    start_gateway, start_rooms, redis
):
    """The gateway reads the rooms service's replies without decoding them when they are laid
    out as the service writes them; any other valid layout still answers its call."""
    gw = await start_gateway()
    service = await start_rooms()
    alice = await gw.connect("alice")
    await alice.ok("room.join", room="r", state={"a": 1})
    await service.http.close()  # nobody applies commands now: the test answers them
    pending = asyncio.create_task(alice.call("room.get", room="r"))
    command: dict[str, Any] = {}
    async with asyncio.timeout(5):
        while command.get("op") != "get":
            await asyncio.sleep(0.01)
            [(_, fields)] = await redis.xrevrange("sb:rooms:cmd", count=1)
            command = json.loads(fields[b"c"])
    channel = f"sb:reply:{gw.app[node_key].id}"
    await redis.publish(channel, b"not json")
    await redis.publish(channel, b'{"req":"nope"}')
    await redis.publish(channel, json.dumps({"error": {"code": 1}, "req": "unknown"}))
    answer = {"result": {"room": "r", "version": 9, "state": {}, "people": []}}
    answer_to = command["req"]
    await redis.publish(channel, json.dumps({**answer, "req": answer_to}, indent=1))
    assert await pending == {"id": 2, **answer}
    # Laid out as the service writes them, but neither a result nor an error: refused, not fatal.
    pending = asyncio.create_task(alice.call("room.get", room="r"))
    async with asyncio.timeout(5):
        while command.get("req") == answer_to:
            await asyncio.sleep(0.01)
            [(_, fields)] = await redis.xrevrange("sb:rooms:cmd", count=1)
            command = json.loads(fields[b"c"])
    await redis.publish(channel, b'{"req":"' + command["req"].encode() + b'","what":1}')
    refused = await pending
    assert refused["error"]["code"] == ErrorCode.INTERNAL, refused
    assert (await alice.call("ping"))["result"] == {}
    await alice.close()
