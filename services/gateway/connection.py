"""One client WebSocket: identity, subscriptions, outbox, rate limit and token expiry.

`ClientConnection` is what commands, the hub and the node see; how bytes reach the socket and
how it closes is its subclasses' part: `NativeConnection` (services/gateway/native_ws.py, a
plain asyncio Protocol, the usual case) and `AiohttpConnection` below (a keep-alive HTTP
connection that upgrades later, served by aiohttp's WebSocketResponse).
"""

import asyncio
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from services.common.auth import Claims
from services.common.channels import Namespace
from services.common.compact_json import dumpb as _dumps
from services.common.errors import CloseCode
from services.common.tasks import spawn

from .hub import Outbox
from .settings import Limits
from .wire import text_frame

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0  # how long a closing socket waits for the peer's close frame


class TokenBucket:
    """Command rate limit: `rate` per second on average, `burst` at once."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ClientConnection:
    """State of one socket. The outbox fields are read by `Outbox` on the hot path."""

    __slots__ = (
        "__weakref__",
        "claims",
        "close_code",
        "closing",
        "id",
        "last_seen",
        "limiter",
        "max_bytes",
        "max_frames",
        "name",
        "opened_at",
        "out",
        "outbox",
        "rejected",
        "room_calls",
        "room_slot",
        "rooms",
        "rpcs",
        "subscriptions",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, outbox: Outbox, limits: Limits) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.transport = transport
        self.outbox = outbox
        self.out: list[bytes] = []
        self.closing = False
        self.close_code: int | None = None  # the code the server closed with, for /metrics
        self.max_bytes = limits.outbox_max_bytes
        self.max_frames = limits.outbox_max_frames
        self.limiter = TokenBucket(limits.commands_per_s, limits.command_burst)
        self.rejected = 0
        self.claims: Claims | None = None
        self.name = ""
        self.subscriptions: dict[str, Namespace] = {}
        self.rooms: set[str] = set()  # room ids joined (their channels are not subscriptions)
        self.rpcs = 0  # rpc calls awaiting their answer
        self.room_calls = 0  # room.get/room.update awaiting their answer
        self.room_slot: asyncio.Future[None] | None = None  # resolved when one is answered
        # Read by the node's sweep: no timer per connection (each costs memory and a heap entry).
        self.opened_at = self.last_seen = asyncio.get_running_loop().time()

    @property
    def user(self) -> str:
        return self.claims.user if self.claims else ""

    @property
    def peer_close_code(self) -> int | None:
        """The code of the client's close frame, if it sent one."""
        raise NotImplementedError

    def send(self, payload: bytes) -> None:
        """Queue one encoded JSON object as its own text frame."""
        if not self.closing:
            self.outbox.push(self, text_frame(payload))

    def reply(self, cmd_id: Any, result: Any) -> None:
        self.send(_dumps({"id": cmd_id, "result": result}))

    def reply_raw(self, cmd_id: Any, result_json: bytes) -> None:
        """Reply with an already-encoded result (history read without re-encoding)."""
        self.send(b'{"id":' + _dumps(cmd_id) + b',"result":' + result_json + b"}")

    def error(self, cmd_id: Any, code: int, message: str, **details: Any) -> None:
        body: dict[str, Any] = {"error": {"code": code, "message": message, **details}}
        if cmd_id is not None:
            body = {"id": cmd_id, **body}
        self.send(_dumps(body))

    def close(self, code: CloseCode, reason: str) -> None:
        """Tell the client why, then close; safe to call more than once."""
        if self.closing:
            return
        self.send(
            _dumps(
                {
                    "push": "disconnect",
                    "code": int(code),
                    "reason": reason,
                    "reconnect": code.reconnect,
                }
            )
        )
        self.closing = True
        self.close_code = int(code)
        self.outbox.flush_peer(self)
        self._send_close(code, reason)

    def _send_close(self, code: CloseCode, reason: str) -> None:
        """Send the close frame; drop the TCP connection if the peer does not answer it."""
        raise NotImplementedError


class AiohttpConnection(ClientConnection):
    """A socket served by aiohttp's WebSocketResponse (see the module docstring)."""

    __slots__ = ("ws",)

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        outbox: Outbox,
        limits: Limits,
    ) -> None:
        super().__init__(transport, outbox, limits)
        self.ws = ws

    @property
    def peer_close_code(self) -> int | None:
        return self.ws.close_code

    def _send_close(self, code: CloseCode, reason: str) -> None:
        spawn(self._close(code, reason))

    async def _close(self, code: CloseCode, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code=int(code), message=reason.encode())
        except (TimeoutError, ConnectionError):
            # A stalled reader never reads our close frame: drop the TCP connection.
            self.transport.abort()
