"""Clients for gateway tests beyond `tests.helpers.Client`.

`RawWebSocket`: a WebSocket client on a plain non-blocking socket that reads only when the test
says so. aiohttp's client reads its socket in the background; a test of slow consumers needs a
peer whose kernel buffers really fill up, so this one does the handshake by hand and never
touches the socket between explicit `recv_frame` calls. It can also shrink its receive buffer so
that the server's backlog builds up sooner.

`WireClient`: a native-protocol client that keeps replies and pushes in one queue, in the order
they came over the wire, for tests about ordering between a reply and the pushes around it.
"""

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from typing import Any

import aiohttp

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class RawWebSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._next_id = 0

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/ws",
        *,
        token: str | None = None,
        rcvbuf: int | None = None,
        timeout_s: float = 5.0,
    ) -> "RawWebSocket":
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:
            # Set before connect so that the advertised window starts (and stays) small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        ws = cls(sock)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(sock, ("127.0.0.1", port))
                key = base64.b64encode(os.urandom(16)).decode()
                lines = [
                    f"GET {path} HTTP/1.1",
                    f"Host: 127.0.0.1:{port}",
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    f"Sec-WebSocket-Key: {key}",
                    "Sec-WebSocket-Version: 13",
                ]
                if token is not None:
                    lines.append(f"Authorization: Bearer {token}")
                await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
                while b"\r\n\r\n" not in ws._buf:
                    await ws._fill()
            head, _, rest = bytes(ws._buf).partition(b"\r\n\r\n")
            ws._buf = bytearray(rest)
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise AssertionError(f"handshake refused: {head!r}")
        except BaseException:
            sock.close()
            raise
        return ws

    async def _fill(self) -> None:
        chunk = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 20)
        if not chunk:
            raise EOFError("connection closed by the server")
        self._buf += chunk

    async def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def recv_frame(self, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """The next frame as (opcode, payload); EOFError or ConnectionError when it ends."""
        async with asyncio.timeout(timeout_s):
            b0, b1 = await self._take(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self._take(8))
            mask = await self._take(4) if b1 & 0x80 else None
            payload = await self._take(length)
            if mask is not None:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            return b0 & 0x0F, payload

    async def recv_json(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The JSON objects of the next text frame (skipping pings)."""
        while True:
            opcode, payload = await self.recv_frame(timeout_s)
            if opcode == OP_TEXT:
                return [json.loads(line) for line in payload.split(b"\n") if line]
            if opcode == OP_CLOSE:
                raise EOFError(f"close frame {payload!r}")

    async def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """One masked frame; `fin=False` starts or continues a fragmented message."""
        mask = os.urandom(4)
        head = bytes(((0x80 if fin else 0) | opcode,))
        n = len(payload)
        if n < 126:
            head += bytes((0x80 | n,))
        elif n < 65536:
            head += struct.pack("!BH", 0x80 | 126, n)
        else:
            head += struct.pack("!BQ", 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    async def call(self, op: str, timeout_s: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send a command and read frames until its reply (pushes before it are dropped)."""
        self._next_id += 1
        cmd_id = self._next_id
        await self.send_frame(OP_TEXT, json.dumps({"id": cmd_id, "op": op, **fields}).encode())
        async with asyncio.timeout(timeout_s):
            while True:
                for obj in await self.recv_json(timeout_s):
                    if obj.get("id") == cmd_id:
                        return obj

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class WireClient:
    """Every object the server sends, replies and pushes alike, in wire order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.wire: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._next_id = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    for line in msg.data.split("\n"):
                        if line:
                            self.wire.put_nowait(json.loads(line))
        finally:
            self.wire.put_nowait(None)  # end of the stream

    async def send(self, op: str, **fields: Any) -> int:
        self._next_id += 1
        await self.ws.send_str(json.dumps({"id": self._next_id, "op": op, **fields}))
        return self._next_id

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            obj = await self.wire.get()
        if obj is None:
            self.wire.put_nowait(None)
            raise EOFError(f"socket closed with code {self.ws.close_code}")
        return obj

    async def until_reply(
        self, cmd_id: int, timeout_s: float = 5.0
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read up to the reply to `cmd_id`; return it and what came before it."""
        before: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout_s):
            while True:
                obj = await self.next(timeout_s)
                if obj.get("id") == cmd_id:
                    return obj, before
                before.append(obj)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
