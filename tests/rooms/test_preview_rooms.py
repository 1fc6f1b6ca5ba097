"""Zou's preview rooms (`preview-room:*`, spec §3) on the Socket.IO endpoint, with the room
state in the rooms service: python-socketio clients on one or two gateways."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import socketio
from aiohttp import web

from services.common.errors import ErrorCode
from services.gateway.keys import node_key
from services.gateway.preview_rooms import EMPTY_ROOM, render, whitelist
from services.gateway.socketio_server import socketio_key
from tests.helpers import wait_until

NS = "/events"
PEOPLE = "preview-room:room-people-updated"
UPDATED = "preview-room:room-updated"

# Kitsu's join payload (spec §3.5): the full player state, no local_id.
JOIN = {
    "user_id": "alice",
    "playlist_id": "pl1",
    "is_playing": False,
    "current_entity_id": "e1",
    "current_entity_index": 0,
    "current_preview_file_id": "pf1",
    "current_preview_file_index": 0,
    "current_frame": 12,
    "is_repeating": False,
    "is_laser_mode": False,
    "is_annotations_displayed": True,
    "is_waveform_displayed": False,
    "is_zoom_enabled": False,
    "handle_in": None,
    "handle_out": None,
    "speed": 3,
    "comparing": {
        "enable": False,
        "task_type": None,
        "revision": None,
        "mode": "sidebyside",
        "comparison_preview_index": 0,
    },
}


class Kitsu:
    """A python-socketio client on /events that records every event it receives."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.client.on("*", self._any, namespace=NS)

    async def _any(self, event: str, *args: Any) -> None:
        self.events.put_nowait((event, args[0] if len(args) == 1 else args))

    async def emit(self, event: str, data: Any, *more: Any) -> None:
        args = (data, *more) if more else data
        await self.client.emit("preview-room:" + event, args, namespace=NS)

    async def next(self, timeout_s: float = 5.0) -> tuple[str, Any]:
        async with asyncio.timeout(timeout_s):
            return await self.events.get()

    async def expect(self, event: str, timeout_s: float = 5.0) -> Any:
        name, data = await self.next(timeout_s)
        assert name == event, (name, data)
        return data

    async def nothing(self, wait_s: float = 0.3) -> None:
        await asyncio.sleep(wait_s)
        assert self.events.empty(), self.events.get_nowait()


@pytest.fixture
async def kitsu(make_token) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Kitsu] = []

    async def connect(gw: Any, user: str = "alice", **claims: Any) -> Kitsu:
        client = Kitsu(user)
        clients.append(client)
        token = make_token(user, **claims)
        await client.client.connect(
            gw.url("/"),
            namespaces=[NS],
            transports=["websocket"],
            headers={"Authorization": f"Bearer {token}"},
            wait_timeout=5,
        )
        return client

    yield connect
    for client in clients:
        await client.client.disconnect()


def room(people: list[str], **fields: Any) -> dict[str, Any]:
    expected = render({}, people)
    expected.update(fields)
    return expected


async def test_whitelist_is_zous_update_room_playing_status():
    # Absent fields are reset; current_frame, comparing and speed only when sent (and valid).
    assert whitelist({}) == {
        "playlist_id": "",
        "user_id": None,
        "local_id": None,
        "is_playing": False,
        "is_repeating": None,
        "is_laser_mode": None,
        "is_annotations_displayed": False,
        "is_zoom_enabled": False,
        "is_waveform_displayed": False,
        "current_entity_id": None,
        "current_entity_index": None,
        "current_preview_file_id": None,
        "current_preview_file_index": None,
        "handle_in": None,
        "handle_out": None,
    }
    fields = whitelist(
        {"current_frame": None, "speed": "fast", "comparing": {"mode": "overlay", "x": 1}}
    )
    assert fields["current_frame"] is None
    assert "speed" not in fields
    assert fields["comparing"] == {"mode": "overlay"}
    assert "room_seq" not in whitelist({"room_seq": 3, "previous_preview_file_id": "p"})
    assert list(render({}, [])) == list(EMPTY_ROOM)


async def test_open_join_update_leave_close_with_zous_payloads(gateway, rooms, kitsu):
    alice = await kitsu(gateway, "alice")
    await alice.emit("open-playlist", {"playlist_id": "pl1", "user_id": "alice"})
    people = {"people": [], "playlist_id": "pl1", "id": "pl1"}
    assert await alice.expect(PEOPLE) == people

    await alice.emit("join", JOIN)
    assert await alice.expect(PEOPLE) == {**people, "people": ["alice"]}
    seeded = {k: v for k, v in JOIN.items() if k != "speed"}
    joined = await alice.expect(UPDATED)
    assert "only_newcomer" not in joined
    assert joined == room(["alice"], **seeded, speed=3)

    # A room-updated overwrites everything through the whitelist; local_id verbatim.
    update = {
        **JOIN,
        "is_playing": True,
        "current_frame": 40,
        "local_id": "tab-a#17",
        "room_seq": 17,
        "previous_preview_file_id": "pf0",
    }
    del update["current_entity_index"]
    await alice.emit("room-updated", update)
    updated = await alice.expect(UPDATED)
    assert updated["only_newcomer"] is False
    assert updated["local_id"] == "tab-a#17"
    assert updated["current_entity_index"] is None  # absent: reset to the default
    assert updated["current_frame"] == 40 and updated["is_playing"] is True
    assert "room_seq" not in updated and "previous_preview_file_id" not in updated
    assert updated["people"] == ["alice"]

    # Without current_frame/speed/comparing the old values stay; only_newcomer as 2nd arg.
    await alice.emit("room-updated", {"playlist_id": "pl1", "local_id": "tab-a#18"}, True)
    kept = await alice.expect(UPDATED)
    assert kept["only_newcomer"] is True
    assert kept["current_frame"] == 40 and kept["speed"] == 3
    assert kept["comparing"] == JOIN["comparing"]
    assert kept["is_annotations_displayed"] is False and kept["current_entity_id"] is None

    await alice.emit("leave", {"user_id": "alice", "playlist_id": "pl1"})
    assert await alice.expect(PEOPLE) == people
    await alice.emit("close-playlist", {"playlist_id": "pl1", "user_id": "alice"})
    await alice.emit("add-annotation", {"playlist_id": "pl1", "data": {}})
    await alice.nothing()


async def test_the_first_join_seeds_the_state_and_an_empty_room_starts_afresh(
    gateway, rooms, kitsu
):
    alice, bob = await kitsu(gateway, "alice"), await kitsu(gateway, "bob")
    for client in (alice, bob):
        await client.emit("open-playlist", {"playlist_id": "pl2"})
        await client.expect(PEOPLE)
        if client is bob:
            await alice.expect(PEOPLE)
    await alice.emit("join", {**JOIN, "playlist_id": "pl2", "current_frame": 5})
    for client in (alice, bob):
        await client.expect(PEOPLE)
        assert (await client.expect(UPDATED))["current_frame"] == 5
    # A second person does not reseed: the room's state comes back to them.
    await bob.emit("join", {**JOIN, "playlist_id": "pl2", "current_frame": 99})
    for client in (alice, bob):
        assert (await client.expect(PEOPLE))["people"] == ["alice", "bob"]
        assert (await client.expect(UPDATED))["current_frame"] == 5
    for client in (alice, bob):
        await client.emit("leave", {"playlist_id": "pl2"})
        await alice.expect(PEOPLE)
        await bob.expect(PEOPLE)
    await bob.emit("join", {**JOIN, "playlist_id": "pl2", "current_frame": 7})
    await bob.expect(PEOPLE)
    assert (await bob.expect(UPDATED))["current_frame"] == 7


async def test_relays_go_unchanged_to_every_socket_that_opened_the_room_across_gateways(
    start_gateway, rooms, kitsu
):
    a, b = await start_gateway(), await start_gateway()
    alice, bob, watcher = await kitsu(a, "alice"), await kitsu(b, "bob"), await kitsu(b, "carol")
    outsider = await kitsu(a, "dan")
    for client in (alice, bob, watcher):
        await client.emit("open-playlist", {"playlist_id": "pl3"})
        await wait_until(
            lambda c=client: not c.events.empty(), what="people-updated after open-playlist"
        )
    await asyncio.sleep(0.3)
    for client in (alice, bob, watcher):
        while not client.events.empty():
            assert (await client.expect(PEOPLE))["people"] == []
    for name in (
        "add-annotation",
        "remove-annotation",
        "update-annotation",
        "change-version",
        "panzoom-changed",
        "comparison-panzoom-changed",
    ):
        payload = {
            "playlist_id": "pl3",
            "data": {"local_id": "tab-a", "user_id": "alice", "x": 1.5, "obj": {"id": "o1"}},
            "extra": [1, None, "é"],
        }
        await alice.emit(name, payload)
        for client in (alice, bob, watcher):  # the sender too, as with Zou
            assert await client.expect("preview-room:" + name) == payload
    # Relays only from a socket that opened the room; nothing reaches the others.
    await outsider.emit("add-annotation", {"playlist_id": "pl3", "data": {}})
    await bob.nothing()
    await outsider.nothing(0)
    # The close of one socket: the others still receive.
    await watcher.emit("close-playlist", {"playlist_id": "pl3"})
    await bob.emit("panzoom-changed", {"playlist_id": "pl3", "data": {"zoom": 2}})
    assert await alice.expect("preview-room:panzoom-changed") == {
        "playlist_id": "pl3",
        "data": {"zoom": 2},
    }
    await watcher.nothing()


async def test_presence_is_per_connection_and_a_closed_socket_leaves(gateway, rooms, kitsu):
    tab1, tab2, bob = (
        await kitsu(gateway, "alice"),
        await kitsu(gateway, "alice"),
        await kitsu(gateway, "bob"),
    )
    await bob.emit("open-playlist", {"playlist_id": "pl4"})
    await bob.expect(PEOPLE)
    for client in (tab1, tab2, bob):
        await client.emit("join", {**JOIN, "playlist_id": "pl4"})
        await wait_until(lambda: bob.events.qsize() >= 2, what="people-updated and room-updated")
        await bob.expect(PEOPLE)
        await bob.expect(UPDATED)
    status, body = await rooms.api("GET", "/rooms/preview:pl4")
    assert status == 200, body
    assert body["people"] == ["alice", "bob"]
    assert [m["info"]["via"] for m in body["members"]] == ["socket.io"] * 3
    await tab1.client.disconnect()
    # Alice's other tab is still in: she stays.
    assert (await bob.expect(PEOPLE))["people"] == ["alice", "bob"]
    endpoint = gateway.app[socketio_key]
    assert sum(len(s.joined) for s in endpoint.sockets.values()) == 2
    await tab2.client.disconnect()
    assert (await bob.expect(PEOPLE))["people"] == ["bob"]


async def test_an_expired_token_leaves_no_ghost(gateway, rooms, kitsu):
    bob = await kitsu(gateway, "bob")
    await bob.emit("open-playlist", {"playlist_id": "pl5"})
    await bob.expect(PEOPLE)
    ghost = await kitsu(gateway, "ghost", ttl=2)
    await ghost.emit("join", {**JOIN, "playlist_id": "pl5"})
    assert (await bob.expect(PEOPLE))["people"] == ["ghost"]
    await bob.expect(UPDATED)
    assert (await bob.expect(PEOPLE, timeout_s=6))["people"] == []


async def test_room_updated_needs_a_join_and_is_not_stored_otherwise(gateway, rooms, kitsu):
    alice, bob = await kitsu(gateway, "alice"), await kitsu(gateway, "bob")
    await alice.emit("open-playlist", {"playlist_id": "pl6"})
    await alice.expect(PEOPLE)
    await bob.emit("room-updated", {**JOIN, "playlist_id": "pl6", "current_frame": 66})
    await alice.nothing()
    await alice.emit("join", {**JOIN, "playlist_id": "pl6"})
    await alice.expect(PEOPLE)
    assert (await alice.expect(UPDATED))["current_frame"] == 12


@pytest.fixture
async def zou_api() -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    """Zou's `GET /data/playlists/{id}`: 200 for the `ok*` ids, else 404; records who asked."""
    asked: list[tuple[str, str]] = []

    async def playlist(request: web.Request) -> web.Response:
        playlist_id = request.match_info["id"]
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        user = jwt.decode(token, options={"verify_signature": False})["sub"]
        asked.append((playlist_id, user))
        if playlist_id.startswith("ok"):
            return web.json_response({"id": playlist_id})
        return web.json_response({"message": "not found"}, status=404)

    async def edit(request: web.Request) -> web.Response:
        edit_id = request.match_info["id"]
        asked.append((f"edit {edit_id}", ""))
        if edit_id.startswith("edit"):
            return web.json_response({"id": edit_id})
        return web.json_response({"message": "not found"}, status=404)

    app = web.Application()
    app.router.add_get("/api/data/playlists/{id}", playlist)
    app.router.add_get("/api/data/edits/{id}", edit)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/api", asked
    await runner.cleanup()


async def test_room_access_asks_zou_with_the_users_token_and_refuses_silently(
    start_gateway, rooms, kitsu, zou_api
):
    url, asked = zou_api
    gw = await start_gateway(ROOM_ACCESS_URL=url)
    alice = await kitsu(gw, "alice")
    await alice.emit("open-playlist", {"playlist_id": "nope"})
    await alice.emit("join", {**JOIN, "playlist_id": "nope"})
    await alice.nothing()
    await alice.emit("open-playlist", {"playlist_id": "ok1"})
    assert (await alice.expect(PEOPLE))["id"] == "ok1"
    await alice.emit("join", {**JOIN, "playlist_id": "ok1"})
    await alice.expect(PEOPLE)
    await alice.expect(UPDATED)
    # Asked with the user's own token; answers are remembered: one question per room and user.
    assert asked == [("nope", "alice"), ("edit nope", ""), ("ok1", "alice")]
    bob = await kitsu(gw, "bob")
    await bob.emit("open-playlist", {"playlist_id": "ok1"})
    await bob.expect(PEOPLE)
    assert asked[-1] == ("ok1", "bob")
    # Kitsu's Edit page: the room is an edit id (a 404 as a playlist, then asked as an edit).
    await bob.emit("open-playlist", {"playlist_id": "edit-7"})
    assert (await bob.expect(PEOPLE))["id"] == "edit-7"
    assert asked[-2:] == [("edit-7", "bob"), ("edit edit-7", "")]
    # Ids that are no Zou id are not put in Zou's URLs.
    count = len(asked)
    await bob.emit("open-playlist", {"playlist_id": "ok/../../x"})
    await bob.emit("open-playlist", {"playlist_id": ".."})
    await bob.nothing()
    assert len(asked) == count


async def test_an_older_room_state_arriving_after_a_newer_one_is_not_sent(gateway, rooms, kitsu):
    alice = await kitsu(gateway, "alice")
    await alice.emit("open-playlist", {"playlist_id": "pl7"})
    await alice.expect(PEOPLE)
    await alice.emit("join", {**JOIN, "playlist_id": "pl7"})
    await alice.expect(PEOPLE)
    await alice.expect(UPDATED)
    previews = gateway.app[socketio_key].previews
    relay, version = previews._relay_key("pl7"), previews._versions["pl7"]
    stale = f'{version - 1}\n["{UPDATED}",{{"current_frame":1}}]'
    newer = f'{version + 1}\n["{UPDATED}",{{"current_frame":2}}]'
    await previews.node.redis.publish(relay, b"not a gateway's")
    await previews.node.redis.publish(relay, b"x\n[1]")
    await previews.node.redis.publish(relay, stale)
    await previews.node.redis.publish(relay, newer)
    assert await alice.expect(UPDATED) == {"current_frame": 2}
    await alice.nothing()


async def test_a_room_deleted_and_created_again_is_followed(gateway, rooms, kitsu):
    alice = await kitsu(gateway, "alice")
    await alice.emit("open-playlist", {"playlist_id": "pl8"})
    await alice.expect(PEOPLE)
    await alice.emit("join", {**JOIN, "playlist_id": "pl8"})
    await alice.expect(PEOPLE)
    await alice.expect(UPDATED)
    for frame in (1, 2, 3):
        await alice.emit("room-updated", {**JOIN, "playlist_id": "pl8", "current_frame": frame})
        await alice.expect(UPDATED)
    status, body = await rooms.api("DELETE", "/rooms/preview:pl8")
    assert status == 200, body
    assert await alice.expect(PEOPLE) == {"people": [], "playlist_id": "pl8", "id": "pl8"}
    await wait_until(
        lambda: not gateway.app[socketio_key].sockets[alice.client.get_sid(NS)].joined,
        what="out of the deleted room",
    )
    await alice.emit("join", {**JOIN, "playlist_id": "pl8", "current_frame": 50})
    await alice.expect(PEOPLE)
    assert (await alice.expect(UPDATED))["current_frame"] == 50  # version 1 again: still sent


async def test_the_events_of_one_socket_reach_the_others_in_order(start_gateway, rooms, kitsu):
    a, b = await start_gateway(), await start_gateway()
    alice, bob = await kitsu(a, "alice"), await kitsu(b, "bob")
    for client in (alice, bob):
        await client.emit("open-playlist", {"playlist_id": "pl9"})
        await client.expect(PEOPLE)
    await alice.expect(PEOPLE)  # bob's open-playlist
    kinds = ("add", "update", "remove")
    sent = [(f"preview-room:{kind}-annotation", i) for i in range(30) for kind in kinds]
    for event, i in sent:
        await alice.client.emit(event, {"playlist_id": "pl9", "data": {"n": i}}, namespace=NS)
    received = [await bob.next() for _ in sent]
    assert [(event, data["data"]["n"]) for event, data in received] == sent


async def test_native_clients_may_read_a_preview_room_but_not_join_or_update_it(
    gateway, rooms, kitsu
):
    alice = await kitsu(gateway, "alice")
    await alice.emit("join", {**JOIN, "playlist_id": "pl10"})
    await wait_until(
        lambda: gateway.app[socketio_key].sockets[alice.client.get_sid(NS)].joined,
        what="alice in the room",
    )
    native = await gateway.connect("bob")
    for op, fields in (("room.join", {}), ("room.update", {"patch": {"is_playing": "true"}})):
        reply = await native.call(op, room="preview:pl10", **fields)
        assert reply["error"]["code"] == ErrorCode.PERMISSION_DENIED, reply
    snapshot = await native.ok("room.get", room="preview:pl10")
    assert snapshot["people"] == ["alice"]
    assert render(snapshot["state"], snapshot["people"])["current_frame"] == 12
    await native.close()


async def test_a_second_join_of_one_socket_gets_both_events_as_with_zou(gateway, rooms, kitsu):
    alice = await kitsu(gateway, "alice")
    await alice.emit("open-playlist", {"playlist_id": "pl11"})
    await alice.expect(PEOPLE)
    for _ in range(2):
        await alice.emit("join", {**JOIN, "playlist_id": "pl11"})
        assert (await alice.expect(PEOPLE))["people"] == ["alice"]
        assert (await alice.expect(UPDATED))["people"] == ["alice"]
    await alice.nothing()


async def test_after_a_pubsub_outage_the_audience_gets_the_room_as_it_is(
    start_gateway, rooms, kitsu
):
    a, b = await start_gateway(), await start_gateway()
    alice, bob = await kitsu(a, "alice"), await kitsu(b, "bob")
    for client in (alice, bob):
        await client.emit("open-playlist", {"playlist_id": "pl11"})
        await client.emit("join", {**JOIN, "user_id": client.user, "playlist_id": "pl11"})
    await wait_until(
        lambda: all(
            gw.app[socketio_key].sockets[c.client.get_sid(NS)].joined
            for gw, c in ((a, alice), (b, bob))
        ),
        what="both in the room",
    )
    await asyncio.sleep(0.3)
    while not alice.events.empty():
        alice.events.get_nowait()
    # Alice's gateway loses its pub/sub link a while; bob's update meanwhile never reaches it.
    a.app[node_key].subscriber._protocol.transport.abort()
    await bob.emit("room-updated", {**JOIN, "playlist_id": "pl11", "current_frame": 99})
    people = await alice.expect(PEOPLE, timeout_s=5.0)
    # The two joins went through two gateways: either may have come first.
    assert (sorted(people.pop("people")), people) == (
        ["alice", "bob"],
        {"playlist_id": "pl11", "id": "pl11"},
    )
    updated = await alice.expect(UPDATED)
    assert "only_newcomer" not in updated
    assert updated["current_frame"] == 99 and sorted(updated["people"]) == ["alice", "bob"]
    assert a.app[node_key].redis_reconnects == 1
