"""room.update and room.get do not hold up a socket's next commands, within a bound."""

import asyncio
from typing import Any

from services.common.errors import ErrorCode
from services.gateway.rooms import ROOM_CALLS_IN_FLIGHT
from tests.helpers import Client


class Recorder:
    """Sends commands on one socket in order and records the order the replies came in."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.answered: list[tuple[str, Any]] = []
        self.calls: list[asyncio.Task[None]] = []

    async def send(self, label: str, op: str, **fields: Any) -> None:
        async def call() -> None:
            reply = await self.client.call(op, timeout_s=15.0, **fields)
            self.answered.append((label, reply.get("result", reply.get("error"))))

        self.calls.append(asyncio.create_task(call()))
        await asyncio.sleep(0.01)  # sent before the next one

    async def settled(self) -> None:
        await asyncio.gather(*self.calls)


async def test_a_socket_is_served_while_its_room_updates_wait(gateway, start_rooms):
    rooms = await start_rooms(ROOMS_CONSUMER="first")
    alice = Recorder(await gateway.connect("alice"))
    await alice.client.ok("room.join", room="r", state={"n": 0})
    await rooms.http.close()  # no rooms service: the updates wait in the stream
    for n in range(1, 4):
        await alice.send(f"update {n}", "room.update", room="r", patch={"n": n})
    await alice.send("get", "room.get", room="r")
    await alice.send("ping", "ping")
    await asyncio.sleep(0.3)
    assert [label for label, _ in alice.answered] == ["ping"]

    await start_rooms(ROOMS_CONSUMER="second")  # a replica takes the waiting commands
    await alice.settled()
    labels = [label for label, _ in alice.answered]
    assert labels == ["ping", "update 1", "update 2", "update 3", "get"]
    versions = [result["version"] for _, result in alice.answered[1:]]
    assert versions == [2, 3, 4, 4]
    assert alice.answered[-1][1]["state"] == {"n": 3}


async def test_past_the_bound_a_sockets_next_commands_wait(gateway, start_rooms):
    rooms = await start_rooms(ROOMS_CONSUMER="first")
    alice = Recorder(await gateway.connect("alice"))
    await alice.client.ok("room.join", room="r", state={"n": 0})
    await rooms.http.close()
    for n in range(1, ROOM_CALLS_IN_FLIGHT + 2):
        await alice.send(f"update {n}", "room.update", room="r", patch={"n": n})
    await alice.send("ping", "ping")
    await asyncio.sleep(0.3)
    assert alice.answered == []  # the frame after the bound, and the ping, wait

    await start_rooms(ROOMS_CONSUMER="second")
    await alice.settled()
    labels = [label for label, _ in alice.answered]
    assert labels.index("ping") > 0  # read once the first update was answered
    updates = [result["version"] for label, result in alice.answered if label != "ping"]
    assert updates == list(range(2, ROOM_CALLS_IN_FLIGHT + 3))  # all of them, in order


async def test_an_update_redis_refuses_to_queue_fails_at_once_with_108(gateway, start_rooms, redis):
    rooms = await start_rooms(ROOMS_CONSUMER="first")
    alice = await gateway.connect("alice")
    await alice.ok("room.join", room="r")
    await rooms.http.close()
    await redis.delete("sb:rooms:cmd")
    await redis.set("sb:rooms:cmd", "not a stream")  # every XADD now fails (WRONGTYPE)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await alice.call("room.update", room="r", patch={"n": 1})
    assert reply["error"]["code"] == ErrorCode.NOT_AVAILABLE
    assert loop.time() - started < 2.0  # not the 5 s timeout
    assert (await alice.call("ping"))["result"] == {}  # the socket goes on
