"""Zou's publications on Redis (Flask-SocketIO's message queue), decoded without unpickling.

Zou's API processes emit through python-socketio's `RedisManager` on the pub/sub channel
`flask-socketio` (`ZOU_BRIDGE_CHANNEL`). Since python-socketio 5.14 a message is JSON:

    {"method": "emit", "event": "task:new", "data": [{"task_id": "…"}], "binary": false,
     "namespace": "/events", "room": null, "skip_sid": null, "callback": null,
     "host_id": "<hex id of the publishing manager>"}

`data` is the list of the event's arguments since 5.16 and the bare argument before. Publishers
up to 5.13 pickled the message: such a message is refused with a log line and never unpickled
(unpickling what anyone with access to Redis publishes would run their code). Other methods on
the channel (`disconnect`, `enter_room`, `leave_room`, `close_room`, `callback`) address
another server's sockets by sid and are ignored.
"""

import json
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from services.common.auth import bearer_token

NAMESPACE = "/events"
ZOU_CHANNEL = "zou:events"
# Names a Socket.IO client reserves for itself: an event so named would confuse it.
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
EVENT_HEAD = b"2" + NAMESPACE.encode() + b",["  # Socket.IO EVENT packet for /events
PICKLE_MARK = b"\x80"  # first byte of every pickle of protocol 2 or later


class BridgeError(ValueError):
    """A message on the bridge channel that is not a JSON emit we can deliver."""


@dataclass(frozen=True, slots=True)
class ZouEmit:
    """One `emit` from Zou: the event, its Socket.IO arguments and who should get it."""

    event: str
    args: tuple[Any, ...]
    namespace: str
    room: str | None
    skip_sids: frozenset[str]

    @property
    def project_id(self) -> str | None:
        """`project_id` of the payload, which Zou adds to every event of a project."""
        if len(self.args) == 1 and isinstance(self.args[0], dict):
            project = self.args[0].get("project_id")
            return project if isinstance(project, str) else None
        return None


def decode_emit(raw: bytes, own_host_id: str) -> ZouEmit | None:
    """The emit a bridge message carries; None when it is not for us (our own, not an emit).

    Raises:
        BridgeError: the message is pickled, not JSON, or not a well-formed emit.
    """
    if raw[:1] == PICKLE_MARK:
        raise BridgeError("pickled message (python-socketio <= 5.13 publisher); not unpickled")
    try:
        message = json.loads(raw)
    except ValueError:
        raise BridgeError("not JSON") from None
    if not isinstance(message, dict):
        raise BridgeError("not a JSON object")
    if message.get("method") != "emit" or message.get("host_id") == own_host_id:
        return None
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise BridgeError("emit without an event name")
    if message.get("binary"):
        raise BridgeError("binary attachments are not supported")
    data = message.get("data")
    args: tuple[Any, ...]
    if isinstance(data, list):
        args = tuple(data)
    elif data is None:
        args = ()
    else:
        args = (data,)
    namespace = message.get("namespace") or "/"
    room = message.get("room")
    if not isinstance(namespace, str) or not (room is None or isinstance(room, str)):
        raise BridgeError("namespace and room must be strings")
    return ZouEmit(event, args, namespace, room, _sids(message.get("skip_sid")))


def _sids(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset((value,))
    if isinstance(value, list) and all(isinstance(sid, str) for sid in value):
        return frozenset(value)
    raise BridgeError("skip_sid must be a sid or a list of sids")


def handshake_token(request: web.Request, auth: Any) -> str | None:
    """Zou reads the cookie first, then the header; the `auth` payload is ours."""
    token = request.cookies.get("access_token_cookie")
    if token:
        return token
    token = bearer_token(request)
    if token:
        return token
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return cast(str, auth["token"])
    return None


def project_of(data: Any) -> str | None:
    project = data.get("project_id") if isinstance(data, dict) else None
    return project if isinstance(project, str) else None
