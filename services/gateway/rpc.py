"""The gateway's link to the handlers service for client rpc calls (native `rpc`, `/zeph` tasks).

A call goes out on the stream `sb:rpc` (services/common/rpc.py); its answer comes back on this
node's rpc reply channel (`sb:rpc:reply:<node id>`, subscribed for good by the node), matched by
request id. A caller waits at most `GATEWAY_RPC_TIMEOUT_S`; the call carries that deadline, so a
handlers service that picks it up later does not run it for nobody.
"""

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from services.common.auth import Claims
from services.common.errors import BadRequest, NotAvailable, RpcTimeout, error_from
from services.common.redis import Keys
from services.common.rpc import STREAM_MAXLEN, RpcCall

log = logging.getLogger(__name__)

MAX_METHOD_LENGTH = 128


class RpcLink:
    """Sends rpc calls and resolves each with the reply the handlers service publishes."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        node_id: str,
        *,
        timeout_s: float,
        replies_connected: Callable[[], bool],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.reply_channel = keys.rpc_reply(node_id)
        self.timeout_s = timeout_s
        self.replies_connected = replies_connected
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def call(
        self, method: object, data: Any, *, claims: Claims, client: str, room: str | None = None
    ) -> Any:
        """Run `method` in the handlers service; return its result or raise its typed error."""
        if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_LENGTH:
            raise BadRequest(f"method must be a string of 1-{MAX_METHOD_LENGTH} characters")
        if not self.replies_connected():
            raise NotAvailable("temporarily unavailable")
        req = str(next(self._ids))
        call = RpcCall(
            req=req,
            reply=self.reply_channel,
            method=method,
            data=data,
            user=claims.user,
            client=client,
            deadline=int((time.time() + self.timeout_s) * 1000),
            room=room,
            claims=claims.as_dict(),
        )
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            await self._redis.xadd(
                self._keys.rpc, {"c": call.encode()}, maxlen=STREAM_MAXLEN, approximate=True
            )
            async with asyncio.timeout(self.timeout_s):
                reply = await future
        except TimeoutError:
            raise RpcTimeout(f"{method} did not answer within {self.timeout_s:g} s") from None
        finally:
            self._pending.pop(req, None)
        if "error" in reply:
            raise error_from(reply["error"])
        return reply.get("result")

    def on_reply(self, data: bytes) -> None:
        """Subscriber callback for this node's rpc reply channel."""
        try:
            reply = json.loads(data)
            future = self._pending.get(reply["req"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed rpc reply ignored")
            return
        if future is not None and not future.done():
            future.set_result(reply)
