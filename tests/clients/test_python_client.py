"""The Python client (clients/python) against a real gateway and rooms service."""

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from switchboard_client import (
    CloseCode,
    ErrorCode,
    Publication,
    Subscribed,
    Switchboard,
    SwitchboardError,
)

from tests.clients.conftest import Live, Stack
from tests.helpers import wait_until

FAST = {"min_reconnect_delay_s": 0.05, "max_reconnect_delay_s": 0.5, "timeout_s": 5.0}


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


async def test_subscribe_publish_and_iterate(live: Live, make_token: Callable[..., str]) -> None:
    states: list[str] = []
    channel = unique("chat:py")
    async with (
        Switchboard(live.ws_url, token=make_token("alice"), **FAST) as alice,
        Switchboard(live.ws_url, token=make_token("bob"), **FAST) as bob,
    ):
        alice.on("state", lambda state, previous: states.append(state))
        assert (alice.state, alice.user) == ("connected", "alice")
        sub = await alice.subscribe(channel)
        assert sub.subscribed
        first = await bob.publish(channel, {"text": "one"})
        second = await live.publish(channel, {"text": "two"})
        got = [await sub.get(timeout_s=5), await sub.get(timeout_s=5)]
        assert got == [
            Publication(channel, {"text": "one"}, first["offset"]),
            Publication(channel, {"text": "two"}, second["offset"]),
        ]
        assert sub.position() == {"offset": second["offset"], "epoch": second["epoch"]}

        await alice.unsubscribe(channel)
        assert [pub async for pub in sub] == []  # the iteration ends
        assert alice.subscription(channel) is None
    assert states == ["closed"]


async def test_history_presence_join_and_leave(live: Live, make_token: Callable[..., str]) -> None:
    channel = unique("chat:who")
    joins: list[Any] = []
    leaves: list[Any] = []
    async with (
        Switchboard(live.ws_url, token=make_token("alice"), **FAST) as alice,
        Switchboard(live.ws_url, get_token=lambda: make_token("bob"), **FAST) as bob,
    ):
        offsets = [(await live.publish(channel, {"i": i}))["offset"] for i in range(4)]
        await alice.subscribe(channel, on_join=joins.append, on_leave=leaves.append)
        await bob.subscribe(channel)
        await wait_until(lambda: any(j["user"] == "bob" for j in joins), what="bob's join")
        clients = await alice.presence(channel)
        assert sorted(c["user"] for c in clients.values()) == ["alice", "bob"]
        assert alice.client_id in clients and bob.client_id in clients
        await bob.unsubscribe(channel)
        await wait_until(lambda: any(x["user"] == "bob" for x in leaves), what="bob's leave")

        history = await alice.history(channel)
        assert [p["offset"] for p in history["publications"]] == offsets
        since = {"offset": offsets[1], "epoch": history["epoch"]}
        later = await alice.history(channel, since=since, limit=10)
        assert [p["data"]["i"] for p in later["publications"]] == [2, 3]

        # A subscribe from a kept position delivers what came after it.
        subscribed: list[Subscribed] = []
        resumed = await bob.subscribe(channel, since=since, on_subscribed=subscribed.append)
        assert [(await resumed.get(5)).data["i"] for _ in range(2)] == [2, 3]
        assert subscribed[0].recovered and not subscribed[0].resubscribed


async def test_errors_carry_the_protocol_codes(live: Live, make_token: Callable[..., str]) -> None:
    async with Switchboard(live.ws_url, token=make_token("alice"), **FAST) as alice:

        async def code_of(awaitable: Any) -> int:
            with pytest.raises(SwitchboardError) as caught:
                await awaitable
            return caught.value.code

        assert await code_of(alice.publish("news", {})) == ErrorCode.PERMISSION_DENIED
        assert await code_of(alice.subscribe("nowhere:x")) == ErrorCode.UNKNOWN_CHANNEL
        assert await code_of(alice.subscribe("user:#bob")) == ErrorCode.PERMISSION_DENIED
        assert alice.subscription("user:#bob") is None
        assert await code_of(alice.presence("zou:events")) == ErrorCode.NOT_AVAILABLE
        channel = unique("chat:twice")
        await alice.subscribe(channel)
        assert await code_of(alice.subscribe(channel)) == ErrorCode.ALREADY_SUBSCRIBED
        await live.publish(channel, {})
        bogus = {"offset": "1-0", "epoch": "another"}
        assert (
            await code_of(alice.history(channel, since=bogus)) == ErrorCode.UNRECOVERABLE_POSITION
        )
        assert await code_of(alice.join_room("bad room")) == ErrorCode.BAD_REQUEST
        assert await code_of(alice.update_room(unique("r"), {"x": 1})) == ErrorCode.NOT_SUBSCRIBED
        # The connection took none of it badly.
        assert alice.state == "connected"
        await alice.ping()


async def test_rooms_updates_conflicts_and_retries(
    live: Live, make_token: Callable[..., str]
) -> None:
    room_id = unique("review")
    async with (
        Switchboard(live.ws_url, token=make_token("alice"), **FAST) as alice,
        Switchboard(live.ws_url, token=make_token("bob"), **FAST) as bob,
    ):
        changes: list[str] = []
        alice.on_room(lambda room, change: changes.append(change.cause))
        room = await alice.join_room(room_id, state={"frame": 0})
        assert (room.version, room.state, room.people) == (1, {"frame": 0}, ["alice"])
        bob_room = await bob.join_room(room_id)
        assert (bob_room.state, bob_room.people) == ({"frame": 0}, ["alice", "bob"])
        await wait_until(lambda: room.people == ["alice", "bob"], what="alice seeing bob")

        await alice.update_room(room_id, {"frame": 120, "note": "hi"}, version=True)
        await wait_until(lambda: bob_room.version == room.version, what="bob catching up")
        assert bob_room.state == {"frame": 120, "note": "hi"}
        change = await bob_room.next_change(timeout_s=5)  # bob's join
        while change.patch is None:
            change = await bob_room.next_change(timeout_s=5)
        assert change.patch == {"frame": 120, "note": "hi"}
        await alice.update_room(room_id, {"note": None})
        await wait_until(lambda: bob_room.state == {"frame": 120}, what="the note deleted")

        stale = bob_room.version
        assert stale is not None
        await alice.update_room(room_id, {"frame": 121})
        with pytest.raises(SwitchboardError) as caught:
            await bob.update_room(room_id, {"frame": 0}, version=stale)
        assert caught.value.code == ErrorCode.CONFLICT
        assert (caught.value.version, caught.value.state) == (stale + 1, {"frame": 121})

        # Both move on from the same version: the loser's function runs again on the winner's.
        base = room.version
        await alice.update_room(room_id, {"frame": 200}, version=base)
        after = await bob.update_room(
            room_id, lambda state: {"frame": state["frame"] + 1}, version=base, retries=2
        )
        assert after["state"] == {"frame": 201}
        assert (await alice.get_room(room_id))["state"] == {"frame": 201}

        left = await bob.leave_room(room_id)
        assert left["people"] == ["alice"]
        await wait_until(lambda: room.people == ["alice"], what="alice seeing bob leave")
        assert {"join", "push"} <= set(changes)


async def test_get_token_refreshes_before_expiry(
    live: Live, make_token: Callable[..., str]
) -> None:
    first_expiry: list[float] = []

    async def get_token() -> str:
        first_expiry.append(time.time() + 3)
        return make_token("alice", ttl=3)

    channel = unique("chat:refresh")
    async with Switchboard(live.ws_url, get_token=get_token, **FAST) as alice:
        refreshed: list[Any] = []
        states: list[str] = []
        alice.on("refreshed", refreshed.append)
        alice.on("state", lambda state, previous: states.append(state))
        sub = await alice.subscribe(channel)
        # Past the first token's expiry and the server's next sweep (every second).
        await asyncio.sleep(max(0.0, first_expiry[0] + 1.5 - time.time()))
        assert refreshed and all(1 <= r <= 3 for r in refreshed)
        assert states == []
        await live.publish(channel, {"still": "here"})
        assert (await sub.get(5)).data == {"still": "here"}


async def test_expired_token_without_getter_is_terminal(
    live: Live, make_token: Callable[..., str]
) -> None:
    disconnects: list[tuple[int, bool]] = []
    async with Switchboard(live.ws_url, token=make_token("alice", ttl=2), **FAST) as alice:
        alice.on("disconnected", lambda code, reason, again: disconnects.append((code, again)))
        sub = await alice.subscribe(unique("chat:x"))
        with pytest.raises(SwitchboardError) as caught:
            await sub.get(timeout_s=6)  # the iteration ends with the reason
        assert caught.value.code == ErrorCode.CLOSED
        assert caught.value.details["close_code"] == CloseCode.TOKEN_EXPIRED
        assert disconnects == [(CloseCode.TOKEN_EXPIRED, False)]
        assert alice.state == "closed"


async def test_operator_disconnect_stops_reconnecting(
    live: Live, make_token: Callable[..., str]
) -> None:
    async with Switchboard(live.ws_url, token=make_token("mallory"), **FAST) as mallory:
        states: list[str] = []
        mallory.on("state", lambda state, previous: states.append(state))
        status, _ = await live.gateway.api(
            "POST", "/api/disconnect", scope="admin", json={"user": "mallory"}
        )
        assert status == 200
        await wait_until(lambda: mallory.state == "closed", what="the terminal close")
        await asyncio.sleep(0.3)  # several reconnect delays: none may start
        assert states == ["closed"]
        with pytest.raises(SwitchboardError) as caught:
            await mallory.ping()
        assert caught.value.code == ErrorCode.CLOSED
        assert caught.value.details["close_code"] == CloseCode.DISCONNECTED


async def test_forged_token_is_refused_for_good(live: Live, make_token: Callable[..., str]) -> None:
    eve = Switchboard(live.ws_url, token=make_token("eve") + "x", **FAST)
    errors: list[Any] = []
    eve.on("error", errors.append)
    with pytest.raises(SwitchboardError) as caught:
        await eve.connect()
    await eve.close()
    assert caught.value.details["close_code"] == CloseCode.INVALID_TOKEN
    assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED]


async def test_recovery_after_the_gateway_is_killed(
    stack: Stack, make_token: Callable[..., str]
) -> None:
    channel, gappy, room_id = unique("chat:recover"), unique("tiny:gap"), unique("review")
    failed: list[Subscribed] = []
    subscribed: list[Subscribed] = []
    async with (
        Switchboard(stack.ws_url, token=make_token("alice"), **FAST) as alice,
        Switchboard(stack.ws_url, token=make_token("bob"), **FAST) as bob,
    ):
        sub = await alice.subscribe(channel, on_subscribed=subscribed.append)
        await alice.subscribe(gappy, on_recovery_failed=failed.append)
        room = await alice.join_room(room_id, state={"frame": 1})
        published = [await stack.publish(channel, {"i": i}) for i in range(2)]
        await stack.publish(gappy, {"g": 0})
        received = [await sub.get(5) for _ in range(2)]

        stack.kill_gateway()
        await wait_until(lambda: alice.state != "connected", what="alice noticing")
        published += [await stack.publish(channel, {"i": i}) for i in range(2, 5)]
        for g in range(1, 6):
            await stack.publish(gappy, {"g": g})
        await stack.start_gateway()

        received += [await sub.get(10) for _ in range(3)]
        published += [await stack.publish(channel, {"i": i}) for i in range(5, 7)]
        received += [await sub.get(5) for _ in range(2)]
        assert [p.offset for p in received] == [p["offset"] for p in published]
        assert [p.data["i"] for p in received] == list(range(7))
        with pytest.raises(TimeoutError):  # nothing twice
            await sub.get(timeout_s=0.3)
        assert subscribed[-1].resubscribed and subscribed[-1].recovered
        await wait_until(lambda: len(failed) == 1, what="the gap reported")
        assert failed[0].channel == gappy and not failed[0].recovered

        bob_room = await bob.join_room(room_id)  # alice joined it again
        assert (bob_room.people, bob_room.state) == (["alice", "bob"], {"frame": 1})
        await alice.update_room(room_id, {"frame": 2})
        await wait_until(lambda: bob_room.state == {"frame": 2}, what="bob seeing frame 2")
        assert room.version == bob_room.version


async def test_commands_before_connect_connect_and_wait(
    live: Live, make_token: Callable[..., str]
) -> None:
    alice = Switchboard(live.ws_url, token=make_token("alice"), **FAST)
    try:
        assert alice.state == "disconnected"
        result = await alice.publish(unique("chat:early"), {"early": True})
        assert result["offset"]
        assert alice.state == "connected"
    finally:
        await alice.close()
    with pytest.raises(SwitchboardError) as caught:
        await alice.ping()
    assert caught.value.code == ErrorCode.CLOSED


async def test_a_session_of_the_app_is_used_and_left_open(
    live: Live, make_token: Callable[..., str]
) -> None:
    async with aiohttp.ClientSession() as session:
        async with Switchboard(live.ws_url, token=make_token("alice"), session=session) as sb:
            await sb.ping()
        assert not session.closed


@pytest.mark.parametrize("stack", [{"handlers": True}], indirect=True, ids=["handlers"])
async def test_rpc_results_and_errors(stack: Stack, make_token: Callable[..., str]) -> None:
    async with (
        Switchboard(stack.ws_url, token=make_token("alice"), **FAST) as alice,
        Switchboard(stack.ws_url, token=make_token("root", scope="admin"), **FAST) as root,
    ):
        result = await alice.rpc("echo", {"shot": "sh010"}, room="review-1")
        assert result == {"data": {"shot": "sh010"}, "user": "alice", "room": "review-1"}
        assert await root.rpc("admin") == "done"

        async def code_of(method: str, **kw: Any) -> int:
            with pytest.raises(SwitchboardError) as caught:
                await alice.rpc(method, **kw)
            if caught.value.code == ErrorCode.TASK_FAILED:
                assert "no such shot" in caught.value.message
            return caught.value.code

        assert await code_of("no.such.method") == ErrorCode.METHOD_NOT_FOUND
        assert await code_of("admin") == ErrorCode.PERMISSION_DENIED
        assert await code_of("fail") == ErrorCode.TASK_FAILED
        assert await code_of("stuck") == ErrorCode.TIMEOUT  # the task's own timeout
        slow = asyncio.create_task(alice.rpc("slow", timeout_s=0.3))  # the client's timeout
        await alice.ping()  # not held up behind the rpc
        assert not slow.done()
        with pytest.raises(SwitchboardError) as caught:
            await slow
        assert caught.value.code == ErrorCode.TIMEOUT
        await alice.ping()


async def test_connect_refused_without_a_close_ends_the_client(
    live: Live, make_token: Callable[..., str]
) -> None:
    alice = Switchboard(live.ws_url, token=make_token("alice"), name="x" * 200, **FAST)
    errors: list[Any] = []
    alice.on("error", errors.append)
    try:
        with pytest.raises(SwitchboardError) as caught:
            await alice.connect()
        assert caught.value.code == ErrorCode.CLOSED
        assert alice.state == "closed"
        assert [e.code for e in errors] == [ErrorCode.BAD_REQUEST]
    finally:
        await alice.close()


async def test_a_deleted_room_is_left(live: Live, make_token: Callable[..., str]) -> None:
    room_id = unique("review")
    async with Switchboard(live.ws_url, token=make_token("alice"), **FAST) as alice:
        room = await alice.join_room(room_id, state={"a": 1})
        status, _ = await live.rooms.api("DELETE", f"/rooms/{room_id}")
        assert status == 200
        await wait_until(lambda: room.deleted, what="the deletion push")
        assert (room.state, room.joined, alice.room(room_id)) == (None, False, None)
        again = await alice.join_room(room_id, state={"b": 2})  # a new room, versions anew
        assert (again.version, again.state) == (1, {"b": 2})


async def test_a_channel_token_opens_a_channel(live: Live, make_token: Callable[..., str]) -> None:
    channel = "user:#bob"
    async with Switchboard(live.ws_url, token=make_token("alice"), **FAST) as alice:
        with pytest.raises(SwitchboardError) as caught:
            await alice.subscribe(channel)
        assert caught.value.code == ErrorCode.PERMISSION_DENIED
        sub = await alice.subscribe(channel, token=make_token("alice", channel=channel))
        await live.publish(channel, {"for": "bob and alice"})
        assert (await sub.get(5)).data == {"for": "bob and alice"}
        with pytest.raises(SwitchboardError) as caught:
            await alice.subscribe("user:#dave", token=make_token("alice", channel="user:#carol"))
        assert caught.value.code == ErrorCode.PERMISSION_DENIED
