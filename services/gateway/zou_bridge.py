"""Zou's own emits, read from Flask-SocketIO's Redis channel (`zou.py` decodes them), delivered
by the Socket.IO endpoint: broadcasts to every `/events` socket, encoded once."""

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.common.compact_json import dumps

from .zou import (
    EVENT_HEAD,
    NAMESPACE,
    RESERVED_EVENTS,
    ZOU_CHANNEL,
    BridgeError,
    ZouEmit,
    decode_emit,
)

if TYPE_CHECKING:
    from .socketio_server import SocketIOEndpoint

log = logging.getLogger(__name__)


class ZouBridge:
    def __init__(self, endpoint: "SocketIOEndpoint") -> None:
        self.endpoint = endpoint
        self.errors = 0  # messages ignored (pickled, malformed)
        self._last_warning: dict[str, float] = {}

    def on_message(self, raw: bytes, downstream: Callable[[bytes, bytes], None]) -> None:
        endpoint = self.endpoint
        try:
            emit = decode_emit(raw, endpoint.host_id)
        except BridgeError as exc:
            self.errors += 1
            self._warn_once_a_minute(str(exc), "zou bridge message ignored")
            return
        if emit is None or emit.event in RESERVED_EVENTS:
            return
        if emit.namespace == NAMESPACE:
            endpoint.events.append(emit.event, list(emit.args))
        if emit.namespace != NAMESPACE or emit.room is not None:
            # Not a broadcast to /events (a room, another namespace): python-socketio
            # delivers it to whom it concerns in this process.
            endpoint._spawn(self._emit_locally(emit))
            return
        body = dumps([emit.event, *emit.args])
        endpoint.fanout(EVENT_HEAD + body.encode()[1:], emit.project_id, emit.skip_sids)
        if endpoint.node.hub.subscribers(ZOU_CHANNEL):
            # Native subscribers of zou:events get it live too (no offset: not in history).
            data = emit.args[0] if len(emit.args) == 1 else list(emit.args)
            frame = json.dumps(
                {"push": "pub", "channel": ZOU_CHANNEL, "event": emit.event, "data": data},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            downstream(endpoint._zou_key, b"\n" + frame.encode())

    async def _emit_locally(self, emit: ZouEmit) -> None:
        data = emit.args[0] if len(emit.args) == 1 else tuple(emit.args)
        skip = list(emit.skip_sids) or None
        await self.endpoint.sio.emit(
            emit.event, data, room=emit.room, skip_sid=skip, namespace=emit.namespace
        )

    def _warn_once_a_minute(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(reason, -60.0) >= 60.0:
            self._last_warning[reason] = now
            log.warning(message, extra={"reason": reason, "ignored": self.errors})
