"""A pipelined Redis connection for the publisher: pre-encoded commands in, reply count out.

The load client shares the machine's cores with the server under test, so the publisher must be
cheap: redis-py spends tens of microseconds of Python per pipelined command, while writing
commands encoded once and counting their replies with hiredis costs almost nothing.
"""

import asyncio
from collections import deque
from urllib.parse import urlparse

import hiredis


def encode_command(*parts: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RespConnection(asyncio.Protocol):
    """Sends batches of commands and resolves each batch once all its replies arrived."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[list[int], asyncio.Future[None]]] = deque()
        self.transport: asyncio.Transport | None = None
        self.errors: list[str] = []

    @classmethod
    async def open(cls, url: str) -> "RespConnection":
        parsed = urlparse(url)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            cls, parsed.hostname or "127.0.0.1", parsed.port or 6379
        )
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"redis connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while (reply := reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                self.errors.append(str(reply))
            left, future = waiting[0]
            left[0] -= 1
            if not left[0]:
                waiting.popleft()
                if not future.done():
                    future.set_result(None)

    async def execute(self, payload: bytes, replies: int) -> None:
        """Write `payload` (`replies` commands) and wait for all their replies."""
        assert self.transport is not None, "not connected"
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(([replies], future))
        self.transport.write(payload)
        await future
        if self.errors:
            raise RuntimeError(f"redis refused a command: {self.errors[0]}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
