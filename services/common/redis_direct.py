"""One connection of a redis-py pool, kept by one hot path and used without the client's layers.

Why: a command through `Redis.execute_command` costs 70-100 us of Python on top of the socket
work (retry wrapper, pool lock, observability hooks, event dispatch, a task for the write's
timeout): 105-140 us of CPU per XADD on the test machine, against 52-58 us through the pool
connection's own `send_packed_command` and `read_response`. Connecting, AUTH, TLS, timeouts, the
idle health check, reconnecting and the retry policy stay redis-py's. Worth it only
where a process sends a round trip per batch thousands of times a second: the gateway's room
commands and the rooms service's batch writes.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT


class DirectConnection:
    """Sends a pipeline of commands on a connection of its own; one call at a time.

    The connection is taken from the client's pool on the first call and kept for good: it
    closes with the client (`Redis.aclose` closes connections in use too)."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._conn: AbstractConnection | None = None
        self._timeout: float | None = None
        self._busy = False

    async def execute(self, *commands: Sequence[EncodableT]) -> list[Any]:
        """Send `commands` in one write; return their replies in order, an error reply as its
        `ResponseError` (as a pipeline with `raise_on_error=False`). The whole call has the
        client's socket timeout (redis-py's TimeoutError). A connection error is handled by
        the connection's retry policy, as the client's own commands are (the services'
        clients retry nothing: the next call opens the connection again)."""
        if self._busy:
            raise RuntimeError("DirectConnection.execute called again before the last returned")
        self._busy = True
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                # One deadline per call here, not a task per write and a context per reply.
                self._timeout, conn.socket_timeout = conn.socket_timeout, None
            return await conn.retry.call_with_retry(
                lambda: self._send(conn, commands), lambda _: conn.disconnect(nowait=True)
            )
        finally:
            self._busy = False

    async def _send(
        self, conn: AbstractConnection, commands: Sequence[Sequence[EncodableT]]
    ) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout):
                await conn.send_packed_command(conn.pack_commands(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"Redis did not answer within {self._timeout} s") from None
        except BaseException:
            # A reply may be left unread (cancelled mid-way): start again on a new socket.
            await conn.disconnect(nowait=True)
            raise
        return replies
