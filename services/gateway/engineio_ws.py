"""Engine.IO's WebSocket transport writing through the gateway's outbox.

python-engineio drives a WebSocket through a small wrapper (`async_drivers/aiohttp.py`:
`__call__`, `send`, `wait`, `close`) that it builds for each upgrade. `OutboxWebSocket` takes
its place: every frame engineio sends (OPEN, CONNECT replies, pings, closes) is queued in the
socket's outbox instead of awaited on aiohttp's writer. A broadcast queued in the same outbox
then keeps its order against engineio's own frames, and every frame of one event-loop turn
leaves in one write.
"""

import asyncio
from typing import Any

from aiohttp import web

from .hub import Outbox
from .settings import Limits
from .wire import text_frame


class Link:
    """One Engine.IO WebSocket, as the outbox sees it (a `hub.Peer`)."""

    __slots__ = ("closing", "eio_sid", "max_bytes", "max_frames", "out", "transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, eio_sid: str, limits: Limits
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.eio_sid = eio_sid
        self.out: list[bytes] = []
        self.closing = False
        self.max_bytes = limits.outbox_max_bytes
        self.max_frames = limits.outbox_max_frames


class OutboxWebSocket:
    """Stands in for engineio's aiohttp `WebSocket`; registers its `Link` in `links` while open.

    Build it with `functools.partial(OutboxWebSocket, links, outbox, limits)`: engineio adds
    its own two arguments, the socket's handler and the server.
    """

    def __init__(
        self, links: dict[str, Link], outbox: Outbox, limits: Limits, handler: Any, server: Any
    ) -> None:
        self._links = links
        self._outbox = outbox
        self._limits = limits
        self.handler = handler
        self.server = server
        self._sock: web.WebSocketResponse | None = None
        self._link: Link | None = None
        self.environ: dict[str, Any] = {}

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        # No permessage-deflate: a compressor per socket costs more memory than it saves.
        ws = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        self._sock, self.environ = ws, environ
        eio_sid: str = self.handler.__self__.sid  # the handler is a method of engineio's socket
        link = self._link = Link(ws, request.transport, eio_sid, self._limits)
        self._links[eio_sid] = link
        try:
            await self.handler(self)
        finally:
            link.closing = True
            if self._links.get(eio_sid) is link:
                del self._links[eio_sid]
        return ws

    async def send(self, message: str | bytes) -> None:
        link, ws = self._link, self._sock
        assert link is not None and ws is not None
        if isinstance(message, str):
            self._outbox.push(link, text_frame(message.encode()))
        else:  # binary attachments: rare, written after what is queued
            self._outbox.flush_peer(link)
            await ws.send_bytes(message)

    async def close(self) -> None:
        if self._link is not None:
            self._outbox.flush_peer(self._link)
            self._link.closing = True
        if self._sock is not None:
            await self._sock.close()

    async def wait(self) -> str | bytes:
        assert self._sock is not None
        msg = await self._sock.receive()
        if not isinstance(msg.data, str | bytes):
            raise OSError()  # engineio's signal for "closed"
        return msg.data
