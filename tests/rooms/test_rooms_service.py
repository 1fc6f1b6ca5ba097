"""The rooms service itself: REST, limits, idle expiry, replicas sharing the stream, restarts,
members of a dead gateway, SIGTERM."""

import asyncio
import json
import time

import aiohttp

from services.common.errors import ErrorCode
from services.common.redis import Keys
from services.common.rooms import RoomCommand
from services.rooms.keys import consumer_key
from tests.helpers import Client, wait_until


async def test_rest_lists_reads_and_deletes_rooms_with_the_admin_scope(gateway, rooms):
    alice = await gateway.connect("alice")
    await alice.ok("room.join", room="r1", state={"a": 1})
    await (await gateway.connect("bob")).ok("room.join", room="r2")

    assert (await rooms.api("GET", "/rooms", scope=None))[0] == 401
    status, body = await rooms.api("GET", "/rooms", scope="publish")
    assert (status, body["error"]["code"]) == (403, ErrorCode.PERMISSION_DENIED)
    status, body = await rooms.api("GET", "/rooms")
    assert status == 200
    assert body == {
        "rooms": [
            {"room": "r1", "version": 1, "members": 1},
            {"room": "r2", "version": 1, "members": 1},
        ],
        "total": 2,
    }
    status, body = await rooms.api("GET", "/rooms/r1")
    assert status == 200
    assert (body["version"], body["state"], body["people"]) == (1, {"a": 1}, ["alice"])
    [member] = body["members"]
    assert member["user"] == "alice"
    assert member["info"] == {"user": "alice", "client": member["conn"]}
    assert (await rooms.api("GET", "/rooms/nope"))[0] == 404
    assert (await rooms.api("DELETE", "/rooms/r1", scope="publish"))[0] == 403

    await alice.push(kind="room")  # her join
    status, body = await rooms.api("DELETE", "/rooms/r1")
    assert (status, body) == (200, {"room": "r1", "version": 2, "deleted": True})
    assert await alice.push(kind="room") == {
        "push": "room",
        "room": "r1",
        "version": 2,
        "state": None,
        "people": [],
        "deleted": True,
    }
    assert (await rooms.api("GET", "/rooms/r1"))[0] == 404
    # The gateway forgot the membership: joining again starts a new room.
    await wait_until(lambda: not any("r1" in c.rooms for c in _node(gateway).connections.values()))
    assert (await alice.ok("room.join", room="r1"))["version"] == 1


async def test_rooms_max_refuses_a_new_room_with_106(gateway, start_rooms):
    await start_rooms(ROOMS_MAX="2")
    alice, bob = await gateway.connect("alice"), await gateway.connect("bob")
    await alice.ok("room.join", room="r1")
    await alice.ok("room.join", room="r2")
    reply = await alice.call("room.join", room="r3")
    assert reply["error"] == {
        "code": ErrorCode.LIMIT_EXCEEDED,
        "message": "room limit reached: 2 rooms exist (ROOMS_MAX=2)",
    }
    assert (await bob.ok("room.join", room="r1"))["people"] == ["alice", "bob"]  # existing: fine


async def test_an_idle_room_expires(gateway, start_rooms, redis):
    await start_rooms(ROOMS_IDLE_TTL_S="0.5", ROOMS_REAP_INTERVAL_S="0.1")
    alice = await gateway.connect("alice")
    await alice.ok("room.join", room="r", state={"a": 1})
    await alice.ok("room.update", room="r", patch={"b": 2})
    await asyncio.sleep(0.7)  # a member keeps the room however long it is quiet
    assert (await alice.ok("room.get", room="r"))["state"] == {"a": 1, "b": 2}
    await alice.ok("room.leave", room="r")
    keys = Keys()

    async def gone() -> bool:
        return not await redis.exists(keys.room("r")) and not await redis.zcard(keys.rooms)

    await wait_until(gone, timeout_s=3, what="the idle room to expire")
    assert await alice.ok("room.get", room="r") == {
        "room": "r",
        "version": 0,
        "state": {},
        "people": [],
    }


async def test_two_replicas_share_the_stream_and_keep_versions_strict(start_gateway, start_rooms):
    replicas = [await start_rooms(), await start_rooms()]
    gateways = [await start_gateway(), await start_gateway()]
    watcher = await gateways[0].connect("watcher")
    start = await watcher.ok("room.join", room="busy")
    writers = [await gateways[i % 2].connect(f"w{i}") for i in range(6)]
    for writer in writers:
        await writer.ok("room.join", room="busy")

    async def write(i: int, writer: Client) -> None:
        for j in range(40):
            await writer.ok("room.update", room="busy", patch={f"w{i}": j})

    await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    final = await watcher.ok("room.get", room="busy")
    assert final["version"] == start["version"] + 6 + 240
    assert final["state"] == {f"w{i}": 39 for i in range(6)}
    seen = []
    while not seen or seen[-1] < final["version"]:
        seen.append((await watcher.push(kind="room"))["version"])
    assert seen == list(range(start["version"], final["version"] + 1))
    assert all(r.app[consumer_key].applied > 0 for r in replicas)


async def test_no_command_is_lost_when_the_rooms_service_restarts(start_gateway, rooms_process):
    gw = await start_gateway(GATEWAY_ROOM_TIMEOUT_S="30")
    service = await rooms_process()
    writers = [await gw.connect(f"w{i}") for i in range(5)]
    watcher = await gw.connect("watcher")
    start = await watcher.ok("room.join", room="r")
    for writer in writers:
        await writer.ok("room.join", room="r")

    async def write(i: int, writer: Client) -> list[int]:
        return [
            (await writer.ok("room.update", room="r", patch={f"w{i}": j}))["version"]
            for j in range(30)
        ]

    tasks = [asyncio.create_task(write(i, w)) for i, w in enumerate(writers)]
    await wait_until(lambda: watcher.pushes.qsize() > 20, what="updates under way")
    service.kill()  # SIGKILL mid-stream: some commands pending, others not yet read
    await asyncio.sleep(0.5)
    await rooms_process(port=service.port)  # same consumer name: its pending come first
    versions = sorted(v for vs in await asyncio.gather(*tasks) for v in vs)
    assert len(set(versions)) == 150
    final = await watcher.ok("room.get", room="r")
    assert final["version"] == start["version"] + 5 + 150
    assert final["state"] == {f"w{i}": 29 for i in range(5)}
    seen = []
    while not seen or seen[-1] < final["version"]:
        seen.append((await watcher.push(kind="room"))["version"])
    assert seen == list(range(start["version"], final["version"] + 1))


async def test_members_of_a_killed_gateway_are_removed_within_15_s(
    gateway_process, rooms, make_token
):
    doomed, survivor = await gateway_process(), await gateway_process()
    async with aiohttp.ClientSession() as session:

        async def connect(gp, user: str) -> Client:
            headers = {"Authorization": f"Bearer {make_token(user)}"}
            return Client(await session.ws_connect(gp.url("/ws"), headers=headers))

        alice, alice2, bob = (
            await connect(doomed, "alice"),
            await connect(doomed, "carol"),
            await connect(survivor, "bob"),
        )
        await alice.ok("room.join", room="r")
        await alice2.ok("room.join", room="r")
        joined = await bob.ok("room.join", room="r")
        assert joined["people"] == ["alice", "carol", "bob"]
        killed_at = time.monotonic()
        doomed.proc.kill()
        while True:
            push = await bob.push(kind="room", timeout_s=15)
            if push["people"] == ["bob"]:
                break
        assert time.monotonic() - killed_at < 15
        assert push["version"] == joined["version"] + 1  # both reaped in one change
        assert (await bob.ok("room.get", room="r"))["people"] == ["bob"]
        await bob.close()


async def test_sigterm_stops_the_service_cleanly(rooms_process):
    service = await rooms_process()
    service.terminate()
    assert await asyncio.to_thread(service.proc.wait, 10) == 0


def _node(gw):
    from services.gateway.keys import node_key

    return gw.app[node_key]


async def test_commands_left_pending_by_a_dead_replica_are_claimed_and_applied_once(
    start_rooms, redis
):
    keys = Keys()
    await redis.xgroup_create(keys.rooms_cmd, "rooms", id="0", mkstream=True)
    for i in range(100):  # several claim batches' worth
        command = RoomCommand(op="join", room="r", conn=f"c{i}", user=f"u{i}", gw="gw1", req=str(i))
        await redis.xadd(keys.rooms_cmd, {"c": command.encode()})
    # A replica read them, then died before applying them.
    await redis.xreadgroup("rooms", "dead", {keys.rooms_cmd: ">"}, count=100)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.reply("gw1"))
    await start_rooms(ROOMS_CLAIM_IDLE_MS="300", ROOMS_BATCH="16")
    replies = []
    async with asyncio.timeout(5):
        while len(replies) < 100:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                replies.append(json.loads(message["data"]))
    assert sorted(int(r["req"]) for r in replies) == list(range(100))
    assert replies[-1]["result"]["version"] == 100
    assert replies[-1]["result"]["people"] == [f"u{i}" for i in range(100)]

    async def acked() -> bool:
        return (await redis.xpending(keys.rooms_cmd, "rooms"))["pending"] == 0

    await wait_until(acked, what="the claimed commands acked")
    await pubsub.aclose()


async def test_metrics_count_commands_by_op_and_time_them(gateway, start_rooms):
    service = await start_rooms(ROOMS_STATS_INTERVAL_S="0.1")
    alice = await gateway.connect("alice")
    await alice.ok("room.join", room="r")
    await alice.ok("room.update", room="r", patch={"a": 1})
    await alice.call("room.update", room="r", patch={"a": 2}, version=0)

    async def scrape() -> str:
        async with service.http.session.get(service.http.make_url("/metrics")) as resp:
            return await resp.text()

    async def counted() -> bool:
        return "switchboard_rooms_members 1.0" in await scrape()

    await wait_until(counted, what="gauges refreshed")
    text = await scrape()
    for line in (
        'switchboard_rooms_commands_total{op="join",outcome="ok"} 1.0',
        'switchboard_rooms_commands_total{op="update",outcome="ok"} 1.0',
        'switchboard_rooms_commands_total{op="update",outcome="conflict"} 1.0',
        'switchboard_rooms_apply_seconds_count{op="update"} 2.0',
        "switchboard_rooms_rooms 1.0",
        "switchboard_rooms_consumer_lag 0.0",
    ):
        assert line in text, line


async def test_a_gateway_stopped_with_sigterm_takes_its_members_out_at_once(
    gateway_process, rooms, make_token
):
    leaving, staying = await gateway_process(), await gateway_process()
    async with aiohttp.ClientSession() as session:

        async def connect(gp, user: str) -> Client:
            headers = {"Authorization": f"Bearer {make_token(user)}"}
            return Client(await session.ws_connect(gp.url("/ws"), headers=headers))

        alice, bob = await connect(leaving, "alice"), await connect(staying, "bob")
        await alice.ok("room.join", room="r")
        joined = await bob.ok("room.join", room="r")
        leaving.terminate()
        while (push := await bob.push(kind="room", timeout_s=5))["version"] <= joined["version"]:
            pass
        assert push["people"] == ["bob"]  # long before the 10 s heartbeat deadline
        await bob.close()


async def test_heartbeats_keep_live_members_past_their_ttl(start_gateway, start_rooms, redis):
    await start_rooms(ROOMS_REAP_INTERVAL_S="0.1")
    gw = await start_gateway(GATEWAY_ROOM_HEARTBEAT_S="0.2", GATEWAY_ROOM_MEMBER_TTL_S="0.5")
    alice = await gw.connect("alice")
    await alice.ok("room.join", room="r")
    await asyncio.sleep(2.0)  # four times the member TTL: only the heartbeats keep her in
    room = await alice.ok("room.get", room="r")
    assert (room["version"], room["people"]) == (1, ["alice"])
    deadline = await redis.zscore(Keys().room_members("r"), alice_id(gw))
    assert deadline > time.time() * 1000


async def test_state_size_and_rooms_per_connection_are_bounded(start_gateway, start_rooms):
    await start_rooms(ROOMS_MAX_STATE_BYTES="20")
    gw = await start_gateway(GATEWAY_MAX_ROOMS="1")
    alice = await gw.connect("alice")
    await alice.ok("room.join", room="r", state={"a": 1})
    reply = await alice.call("room.update", room="r", patch={"text": "x" * 20})
    assert reply["error"] == {
        "code": ErrorCode.LIMIT_EXCEEDED,
        "message": "room state of 37 bytes is over the limit of 20",
    }
    reply = await alice.call("room.join", room="other")
    assert reply["error"] == {
        "code": ErrorCode.LIMIT_EXCEEDED,
        "message": "too many rooms on this connection",
    }
    assert (await alice.ok("room.get", room="r"))["state"] == {"a": 1}


def alice_id(gw) -> str:
    [conn] = _node(gw).connections.values()
    return conn.id  # type: ignore[no-any-return]
