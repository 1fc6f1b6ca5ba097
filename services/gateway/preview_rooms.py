"""Zou's preview rooms (`preview-room:*`, spec §3) on the Socket.IO endpoint, across gateways.

The room state lives in the rooms service (services/rooms), under the room id
`preview:<playlist id>`, so that two Kitsu clients on different gateways share one room. Each of
Zou's fields is stored as its own JSON text (`{"is_playing": "false", ...}`): a merge patch of
such strings overwrites a field with any value, `null` included, and leaves the others alone.
`people` is the rooms service's own list (user ids in order of arrival), by connection: a user
with two tabs stays until both left, and a gateway that died has its sockets reaped.

Who receives a room's broadcasts (Zou's Socket.IO room) = the sockets that sent open-playlist,
on every gateway. A gateway with such a socket subscribes to two Redis channels of the room:
the rooms service's pushes (`room:preview:<id>`: a membership change becomes
`room-people-updated`) and the room's relay channel (`<prefix>:sio:room:{<id>}`), on which a
gateway publishes the Socket.IO events its sockets caused (relays, `room-updated`) already
encoded: each gateway decodes nothing and sends one packet to its local sockets.

Kept from Zou: event names, payloads, defaults and the whitelist, `room-people-updated`
`{people, playlist_id, id}`, `room-updated` `{"only_newcomer": bool, **room}` (without
`only_newcomer` after a join), the sender receives its own broadcasts, refusals are silent
(no ack, no error). Fixed: presence by connection, no ghost users (a closed socket always
leaves), a room nobody is in starts afresh, relays and room-updated only from sockets that
opened (relays) or joined (room-updated) the room, optional access check through Zou's REST
API (`ROOM_ACCESS_URL`) that also accepts edit ids (Kitsu's Edit page).
"""

import asyncio
import copy
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from engineio import packet as eio_packet  # type: ignore[import-untyped]  # no type hints
from redis.exceptions import RedisError

from services.common.compact_json import dumps
from services.common.errors import NotSubscribed, ServiceError
from services.common.rooms import RoomCommand, check_room, room_channel

from .rooms import PREVIEW_ROOMS
from .wire import text_frame

if TYPE_CHECKING:
    from .node import GatewayNode
    from .socketio_server import SioSocket, SocketIOEndpoint

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[None]]  # (socket, *event arguments)
_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")  # what the access check asks Zou about
PREFIX = PREVIEW_ROOMS  # rooms service id of a preview room: preview:<playlist id>
EVENT = "preview-room:"
RELAYS = (
    "add-annotation",
    "remove-annotation",
    "update-annotation",
    "change-version",
    "panzoom-changed",
    "comparison-panzoom-changed",
)
COMPARING_KEYS = ("enable", "task_type", "revision", "mode", "comparison_preview_index")
# Zou's `_get_empty_room()`, in its order; `people` comes from the rooms service.
EMPTY_ROOM: dict[str, Any] = {
    "playlist_id": None,
    "user_id": None,
    "local_id": None,
    "people": [],
    "is_playing": False,
    "current_entity_id": None,
    "current_entity_index": None,
    "current_preview_file_id": None,
    "current_preview_file_index": None,
    "current_frame": 0,
    "is_repeating": None,
    "is_annotations_displayed": False,
    "is_zoom_enabled": False,
    "is_waveform_displayed": False,
    "is_laser_mode": None,
    "handle_in": None,
    "handle_out": None,
    "speed": None,
    "comparing": {
        "enable": False,
        "task_type": None,
        "revision": None,
        "mode": "sidebyside",
        "comparison_preview_index": 0,
    },
}
# `_update_room_playing_status`: the fields always overwritten, and their defaults.
_OVERWRITTEN: dict[str, Any] = {
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


def whitelist(data: dict[str, Any]) -> dict[str, Any]:
    """Zou's `_update_room_playing_status`: what a join (first person) or a room-updated
    writes. Every field is overwritten except three, written only when sent (and valid)."""
    fields = {name: data.get(name, default) for name, default in _OVERWRITTEN.items()}
    if "current_frame" in data:
        fields["current_frame"] = data["current_frame"]
    comparing = data.get("comparing")
    if isinstance(comparing, dict):
        fields["comparing"] = {k: comparing[k] for k in COMPARING_KEYS if k in comparing}
    if isinstance(data.get("speed"), int | float):
        fields["speed"] = data["speed"]
    return fields


def encode_state(fields: dict[str, Any]) -> dict[str, str]:
    return {name: _dumps(value) for name, value in fields.items()}


def render(state: dict[str, Any], people: list[str]) -> dict[str, Any]:
    """The room dict Zou emits, from the stored state."""
    room = copy.deepcopy(EMPTY_ROOM)
    for name, raw in state.items():
        if name in room and name != "people" and isinstance(raw, str):
            room[name] = json.loads(raw)
    room["people"] = people
    return room


def _dumps(value: Any) -> str:
    return dumps(value)


def _room_of(data: Any, default: str) -> str | None:
    """The playlist id of an event (Zou's default when absent), None when unusable."""
    if not isinstance(data, dict):
        return None
    room = data.get("playlist_id", default)
    if not isinstance(room, str):
        return None
    try:
        check_room(PREFIX + room)
    except ServiceError:
        return None
    return room


class RoomAccess:
    """Who may open or join a room: everybody authenticated, or Zou's answer when
    `ROOM_ACCESS_URL` is set: `GET {url}/data/playlists/{id}` with the user's token, 2xx =
    allowed, else `GET {url}/data/edits/{id}` (Kitsu's Edit page uses the edit id: Zou since
    1.0.16 refuses it), remembered for `ttl_s` per user and room. Only ids of letters, digits,
    `-` and `_` (Zou's are UUIDs) are asked about: nothing else reaches Zou's URL paths."""

    def __init__(self, url: str, ttl_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, str], tuple[bool, float]] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def allowed(self, user: str, token: str, room: str) -> bool:
        if not self.url:
            return True
        if not _ID.fullmatch(room):
            return False
        key = (user, room)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        asking = self._asking.get(key)
        if asking is None:  # one question at a time per user and room
            asking = self._asking[key] = asyncio.ensure_future(self._ask(key, token))
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(asking)

    async def _ask(self, key: tuple[str, str], token: str) -> bool:
        room = key[1]
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        try:
            allowed = False
            for kind in ("playlists", "edits"):
                async with self._session.get(
                    f"{self.url}/data/{kind}/{room}",
                    headers={"Authorization": f"Bearer {token}"},
                    allow_redirects=False,
                ) as resp:
                    allowed = 200 <= resp.status < 300
                if allowed:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("room access check failed", extra={"room": room, "error": repr(exc)})
            return False  # not remembered: asked again next time
        now = time.monotonic()
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        self._cache[key] = (allowed, now + self.ttl_s)
        return allowed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class PreviewRooms:
    """The `preview-room:*` handlers of one gateway, and its local room audiences."""

    def __init__(self, endpoint: "SocketIOEndpoint") -> None:
        self.endpoint = endpoint
        self.access = RoomAccess(endpoint.settings.zou.room_access_url)
        self.audience: dict[str, dict[SioSocket, None]] = {}  # room -> sockets that opened it
        self._channels: dict[bytes, tuple[str, bool]] = {}  # redis channel -> (room, is relay)
        self._subscribed: dict[str, asyncio.Future[None]] = {}  # room -> both subscriptions
        self._versions: dict[str, int] = {}  # room -> version of the last room-updated sent
        self._tasks: set[asyncio.Task[None]] = set()
        sio, ns = endpoint.sio, "/events"
        handlers: dict[str, Handler] = {
            "open-playlist": self.open_playlist,
            "close-playlist": self.close_playlist,
            "join": self.join,
            "leave": self.leave,
            "room-updated": self.room_updated,
        }
        handlers.update((name, self._relay_handler(EVENT + name)) for name in RELAYS)
        for name, handler in handlers.items():
            sio.on(EVENT + name, self._in_order(handler), namespace=ns)

    @property
    def node(self) -> "GatewayNode":
        return self.endpoint.node

    def _push_key(self, room: str) -> bytes:
        return self.node.keys.channel(room_channel(PREFIX + room)).encode()

    def _relay_key(self, room: str) -> bytes:
        return f"{self.node.keys.prefix}:sio:room:{{{room}}}".encode()

    def _in_order(self, handler: Handler) -> Callable[..., Awaitable[None]]:
        """One event of a socket after the other: python-socketio runs each in its own task,
        and Kitsu's annotations (add, update, remove) must reach the others in order."""

        async def run(sid: str, *args: Any) -> None:
            sock = self.endpoint.sockets.get(sid)
            if sock is None:
                return
            async with sock.lock:  # fair: the tasks queue in the order they started
                if not sock.closing:
                    await handler(sock, *args)

        return run

    def _command(self, op: str, room: str, sock: "SioSocket", **fields: Any) -> RoomCommand:
        link = self.node.rooms
        return RoomCommand(
            op=op,
            room=PREFIX + room,
            conn=sock.sid,
            user=sock.claims.user,
            gw=link.node_id,
            ttl_ms=int(link.settings.member_ttl_s * 1000),
            **fields,
        )

    # -- client events ---------------------------------------------------------------------

    async def open_playlist(self, sock: "SioSocket", data: Any = None, *_: Any) -> None:
        room = _room_of(data, "0")
        if room is None or not await self._allowed(sock, room):
            return
        if room not in sock.opened:
            sock.opened.add(room)
            try:
                await self._listen(room, sock)
            except (OSError, TimeoutError):
                self._subscribed.pop(room, None)  # the next open-playlist tries again
                sock.opened.discard(room)
                self._forget_audience(room, sock)
                return
        await self._publish_people(room, sock)

    async def close_playlist(self, sock: "SioSocket", data: Any = None, *_: Any) -> None:
        room = _room_of(data, "0")
        if room is not None and room in sock.opened:
            sock.opened.discard(room)
            self._forget_audience(room, sock)

    async def join(self, sock: "SioSocket", data: Any = None, *_: Any) -> None:
        room = _room_of(data, "0")
        if room is None or not await self._allowed(sock, room):
            return
        assert isinstance(data, dict)
        link = self.node.rooms
        if room not in sock.joined and len(sock.joined) >= link.settings.max_rooms:
            return
        seed = {**whitelist(data), "playlist_id": room}
        again = room in sock.joined
        sock.joined.add(room)  # renewed from now on
        try:
            result = await link.call(
                self._command(
                    "join",
                    room,
                    sock,
                    state=encode_state(seed),
                    reset=True,
                    info={"user": sock.claims.user, "client": sock.sid, "via": "socket.io"},
                )
            )
        except (ServiceError, RedisError) as exc:
            if not again:
                sock.joined.discard(room)
            log.info("preview room join failed", extra={"room": room, "error": repr(exc)})
            return
        if sock.closing:  # closed meanwhile: its leaves went out without this room
            await self._send_leaves(sock, {room})
            return
        if again:  # no membership change, no push: Zou still says who is in
            await self._publish(room, "", _people_body(room, result.get("people", [])))
        await self._publish_room(room, result, None)

    async def leave(self, sock: "SioSocket", data: Any = None, *_: Any) -> None:
        room = _room_of(data, "")
        if room is not None and room in sock.joined:
            sock.joined.discard(room)
            await self._send_leaves(sock, {room})

    async def room_updated(
        self, sock: "SioSocket", data: Any = None, only_newcomer: Any = False, *_: Any
    ) -> None:
        room = _room_of(data, "0")
        if room is None or room not in sock.joined:
            return
        assert isinstance(data, dict)
        command = self._command("update", room, sock, patch=encode_state(whitelist(data)))
        try:
            result = await self.node.rooms.call(command)
        except NotSubscribed:
            sock.joined.discard(room)  # reaped or deleted meanwhile: join again
            return
        except (ServiceError, RedisError) as exc:
            log.info("preview room update failed", extra={"room": room, "error": repr(exc)})
            return
        await self._publish_room(room, result, bool(only_newcomer))

    def _relay_handler(self, event: str) -> Handler:
        async def relay(sock: "SioSocket", data: Any = None, *_: Any) -> None:
            room = _room_of(data, "")
            if room is None or room not in sock.opened:
                return
            await self._publish(room, "", _dumps([event, data]))

        return relay

    # -- publishing and delivering ---------------------------------------------------------

    async def _allowed(self, sock: "SioSocket", room: str) -> bool:
        return await self.access.allowed(sock.claims.user, sock.token, room)

    async def _publish(self, room: str, version: str, body: str) -> None:
        try:
            await self.node.redis.publish(self._relay_key(room), f"{version}\n{body}")
        except RedisError as exc:
            log.warning("preview room event not published", extra={"error": repr(exc)})

    async def _publish_people(self, room: str, sock: "SioSocket") -> None:
        try:
            snapshot = await self.node.rooms.call(self._command("get", room, sock))
        except (ServiceError, RedisError):
            return
        people = snapshot.get("people", [])
        await self._publish(room, "", _people_body(room, people))

    async def _publish_room(self, room: str, result: dict[str, Any], newcomer: bool | None) -> None:
        payload = render(result.get("state") or {}, result.get("people", []))
        if newcomer is not None:
            payload = {"only_newcomer": newcomer, **payload}
        body = _dumps([EVENT + "room-updated", payload])
        await self._publish(room, str(result.get("version", "")), body)

    def on_message(self, channel: bytes, data: bytes) -> bool:
        """Subscriber hook: True when `channel` is a preview room's (handled here)."""
        found = self._channels.get(channel)
        if found is None:
            return False
        room, relay = found
        newline = data.find(b"\n")
        if relay:
            version, body = data[:newline], data[newline + 1 :]
            if newline < 0 or not body.startswith(b"[") or (version and not version.isdigit()):
                return True  # not a gateway's
            if version:
                if int(version) < self._versions.get(room, 0):
                    return True  # an older state than one already sent
                self._versions[room] = int(version)
            self._deliver(room, body)
            return True
        try:
            push = json.loads(data[newline + 1 :])
        except ValueError:
            return True
        if push.get("deleted") or "state" in push:
            # Deleted, created again or reseeded: versions may start over.
            self._versions.pop(room, None)
        if push.get("deleted"):  # by an operator: nobody is in it any more
            for sock in self.endpoint.sockets.values():
                sock.joined.discard(room)
        if push.get("deleted") or push.get("patch") == {} or "state" in push:
            self._deliver(room, _people_body(room, push.get("people") or []).encode())
        return True

    def resync(self) -> None:
        """After a pub/sub outage the room events of that time never reached this gateway: send
        each local audience the room as it is now, `room-people-updated` then `room-updated`
        (as after a join). Relays of that time (annotations, panzoom) are not state: lost."""
        rooms = [(room, next(iter(socks))) for room, socks in self.audience.items() if socks]
        task = asyncio.ensure_future(self._resync_all(rooms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync_all(self, rooms: list[tuple[str, "SioSocket"]]) -> None:
        await asyncio.gather(*(self._resync(room, sock) for room, sock in rooms))

    async def _resync(self, room: str, sock: "SioSocket") -> None:
        try:
            snapshot = await self.node.rooms.call(self._command("get", room, sock))
        except (ServiceError, RedisError) as exc:
            log.warning("preview room not resynced", extra={"room": room, "error": repr(exc)})
            return
        people = snapshot.get("people", [])
        version = snapshot.get("version")
        if isinstance(version, int):
            self._versions[room] = max(self._versions.get(room, 0), version)
        self._deliver(room, _people_body(room, people).encode())
        body = _dumps([EVENT + "room-updated", render(snapshot.get("state") or {}, people)])
        self._deliver(room, body.encode())

    def _deliver(self, room: str, body: bytes) -> None:
        """One Socket.IO packet, encoded once, to every local socket that opened `room`."""
        socks = self.audience.get(room)
        if not socks:
            return
        packet_body = b"2/events," + body
        frame = text_frame(b"4" + packet_body)
        packet = eio_packet.Packet(eio_packet.MESSAGE, data=packet_body.decode())
        sent = 0
        for sock in list(socks):
            if not sock.closing and self.endpoint.send_one(sock, frame, packet):
                sent += 1
        self.endpoint.events_sent += sent

    async def _listen(self, room: str, sock: "SioSocket") -> None:
        """Add `sock` to the room's audience; return once Redis confirmed the subscriptions."""
        socks = self.audience.setdefault(room, {})
        socks[sock] = None
        subscribed = self._subscribed.get(room)
        if subscribed is None:
            push, relay = self._push_key(room), self._relay_key(room)
            self._channels[push] = (room, False)
            self._channels[relay] = (room, True)
            subscriber = self.node.subscriber
            subscribed = asyncio.ensure_future(
                _both(subscriber.subscribe(push), subscriber.subscribe(relay))
            )
            self._subscribed[room] = subscribed
        await asyncio.shield(subscribed)

    def _forget_audience(self, room: str, sock: "SioSocket") -> None:
        socks = self.audience.get(room)
        if socks is None:
            return
        socks.pop(sock, None)
        if socks:
            return
        del self.audience[room]
        self._versions.pop(room, None)
        self._subscribed.pop(room, None)
        push, relay = self._push_key(room), self._relay_key(room)
        self._channels.pop(push, None)
        self._channels.pop(relay, None)
        subscriber = self.node.subscriber
        subscriber.unsubscribe(relay)
        if not self.node.hub.subscribers(room_channel(PREFIX + room)):
            subscriber.unsubscribe(push)

    # -- sockets that go -------------------------------------------------------------------

    def forget(self, sock: "SioSocket") -> None:
        """A socket closed (whatever the reason, expired token included): it leaves all."""
        for room in list(sock.opened):
            self._forget_audience(room, sock)
        sock.opened.clear()
        joined, sock.joined = sock.joined, set()
        if joined and self.endpoint._node is not None:
            task = asyncio.ensure_future(self._send_leaves(sock, joined))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the leaves of closed sockets to be sent (on shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send_leaves(self, sock: "SioSocket", rooms: set[str]) -> None:
        try:
            await self.node.rooms.send([self._command("leave", room, sock) for room in rooms])
        except RedisError:
            log.warning("preview room leaves not sent; the rooms service reaps them")

    async def renew(self) -> None:
        """Keep this gateway's room members alive; runs until cancelled (supervised)."""
        link = self.node.rooms
        while True:
            members: dict[str, list[str]] = {}
            for sock in list(self.endpoint.sockets.values()):
                for room in sock.joined:
                    members.setdefault(PREFIX + room, []).append(sock.sid)
            await link.renew(members)
            await asyncio.sleep(link.settings.heartbeat_s)


async def _both(first: Any, second: Any) -> None:
    await asyncio.gather(first, second)


def _people_body(room: str, people: list[str]) -> str:
    payload = {"people": people, "playlist_id": room, "id": room}
    return _dumps([EVENT + "room-people-updated", payload])
