"""Kitsu's review room flow (spec §3.5-3.6) with socket.io-client 4 under Node: clients on two
gateway processes share one preview room through the rooms service."""

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

# Three Node clients and two gateway processes, on a machine that may be busy.
pytestmark = pytest.mark.timeout(120)
JS = Path(__file__).resolve().parents[1] / "js"
PEOPLE = "preview-room:room-people-updated"
UPDATED = "preview-room:room-updated"


class Reviewer:
    """tests/js/preview_room.mjs as a child process: commands on stdin, events on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.local_id = ""

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def line(self, timeout_s: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            raw = await self.proc.stdout.readline()
        assert raw, "the node client exited"
        return json.loads(raw)  # type: ignore[no-any-return]

    async def event(self, name: str, timeout_s: float = 10.0) -> Any:
        """The next Socket.IO event; it must be `name`."""
        message = await self.line(timeout_s)
        assert message["type"] == "event" and message["event"] == name, message
        (data,) = message["args"]
        return data

    async def open(self, playlist: str) -> None:
        await self.send(f"open {playlist}")
        opened = await self.line()
        assert opened["type"] == "opened", opened
        self.local_id = opened["localId"]

    async def silent(self, wait_s: float = 0.5) -> None:
        with contextlib.suppress(TimeoutError):
            message = await self.line(wait_s)
            raise AssertionError(f"unexpected {message}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.send("quit")
            try:
                async with asyncio.timeout(2):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def reviewer(make_token) -> AsyncIterator[Callable[..., Any]]:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("node or tests/js/node_modules is missing: run `make setup`")
    started: list[Reviewer] = []

    async def start(gp: Any, user: str, **options: Any) -> Reviewer:
        options = {"url": gp.url(""), "cookie": make_token(user), "user": user, **options}
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS / "preview_room.mjs"),
            json.dumps(options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=JS,
        )
        client = Reviewer(proc)
        started.append(client)
        assert (await client.line())["type"] == "connect"
        return client

    yield start
    for client in started:
        await client.stop()


def people(names: list[str], playlist: str = "pl") -> dict[str, Any]:
    return {"people": names, "playlist_id": playlist, "id": playlist}


async def test_kitsu_review_flow_across_two_gateways(gateway_process, rooms, reviewer):
    a, b = await gateway_process(), await gateway_process()
    alice = await reviewer(a, "alice", transports=["websocket"])
    bob = await reviewer(b, "bob")  # Kitsu's default: polling, then the upgrade
    carol = await reviewer(a, "carol")  # only opens the playlist: she watches
    everyone = (alice, bob, carol)

    await alice.open("pl")
    assert await alice.event(PEOPLE) == people([])
    await bob.open("pl")
    for client in (alice, bob):
        assert await client.event(PEOPLE) == people([])
    await carol.open("pl")
    for client in everyone:
        assert await client.event(PEOPLE) == people([])

    await alice.send("join")
    for client in everyone:
        assert await client.event(PEOPLE) == people(["alice"])
        room = await client.event(UPDATED)
        assert "only_newcomer" not in room
        assert room["people"] == ["alice"] and room["playlist_id"] == "pl"
        assert room["current_frame"] == 0 and room["local_id"] is None
    await bob.send("join")
    for client in everyone:
        assert await client.event(PEOPLE) == people(["alice", "bob"])
        assert (await client.event(UPDATED))["people"] == ["alice", "bob"]

    # room-updated: local_id relayed verbatim (Kitsu's sequence rides in it), the rest stripped.
    await alice.send("update 42 playing")
    for client in everyone:
        room = await client.event(UPDATED)
        assert room["only_newcomer"] is False
        assert room["local_id"].startswith(alice.local_id + "#")
        assert int(room["local_id"].split("#")[1]) > 0
        assert room["is_playing"] is True and room["current_frame"] == 42
        assert "room_seq" not in room and "previous_preview_file_id" not in room

    await alice.send("annotate add o1")
    for client in everyone:  # the sender too: Kitsu drops it by data.local_id
        annotation = await client.event("preview-room:add-annotation")
        assert annotation["playlist_id"] == "pl"
        assert annotation["data"]["local_id"] == alice.local_id
        assert annotation["data"]["obj"]["id"] == "o1"
    await bob.send("annotate update o1")
    await bob.send("annotate remove o1")
    for client in everyone:
        assert (await client.event("preview-room:update-annotation"))["data"]["user_id"] == "bob"
        assert (await client.event("preview-room:remove-annotation"))["data"]["user_id"] == "bob"
    await bob.send("panzoom 2")
    await bob.send("comparison-panzoom 3")
    for client in everyone:
        panzoom = await client.event("preview-room:panzoom-changed")
        assert panzoom == {
            "playlist_id": "pl",
            "data": {"local_id": bob.local_id, "user_id": "bob", "x": 10, "y": 20, "zoom": 2},
        }
        assert (await client.event("preview-room:comparison-panzoom-changed"))["data"]["zoom"] == 3

    await alice.send("leave")
    for client in everyone:
        assert await client.event(PEOPLE) == people(["bob"])
    await alice.send("close")
    await asyncio.sleep(0.5)  # the close reaches gateway A before bob's relay does
    await bob.send("panzoom 4")
    for client in (bob, carol):
        assert (await client.event("preview-room:panzoom-changed"))["data"]["zoom"] == 4
    await alice.silent()


async def test_two_tabs_of_one_user_stay_until_both_left(gateway_process, rooms, reviewer):
    a, b = await gateway_process(), await gateway_process()
    tab1, tab2, bob = (
        await reviewer(a, "alice"),
        await reviewer(b, "alice"),
        await reviewer(b, "bob"),
    )
    await bob.open("pl")
    assert await bob.event(PEOPLE) == people([])
    for tab in (tab1, tab2):
        await tab.open("pl")
        assert await bob.event(PEOPLE) == people([])
    for tab in (tab1, tab2):
        await tab.send("join")
        assert await bob.event(PEOPLE) == people(["alice"])
        await bob.event(UPDATED)
    await tab1.send("quit")  # one tab closes: alice is still in the room
    assert await bob.event(PEOPLE) == people(["alice"])
    await tab2.send("leave")
    assert await bob.event(PEOPLE) == people([])


async def test_people_of_a_gateway_killed_with_sigkill_are_removed_within_15_s(
    gateway_process, rooms, reviewer
):
    doomed, survivor = await gateway_process(), await gateway_process()
    alice, bob = await reviewer(doomed, "alice"), await reviewer(survivor, "bob")
    await bob.open("pl")
    assert await bob.event(PEOPLE) == people([])
    await alice.open("pl")
    assert await bob.event(PEOPLE) == people([])
    for client, expected in ((alice, ["alice"]), (bob, ["alice", "bob"])):
        await client.send("join")
        assert await bob.event(PEOPLE) == people(expected)
        await bob.event(UPDATED)
    killed_at = time.monotonic()
    doomed.proc.kill()
    assert await bob.event(PEOPLE, timeout_s=15) == people(["bob"])
    assert time.monotonic() - killed_at < 15
