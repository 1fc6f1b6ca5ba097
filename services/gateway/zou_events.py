"""Zou's emits to the handlers' event stream, appended by exactly one gateway.

Every gateway reads Zou's Redis channel (each must deliver to its own sockets), but an event must
reach `sb:events` once, not once per gateway. The gateways elect one writer with a lease in Redis
(`sb:events:zou-writer`, renewed every third of its life); when the writer dies, another takes
the lease when it expires. Events emitted between the death and the takeover (at most the lease
time) do not reach the handlers: the bridge has no id to replay them by.
"""

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import RedisError

from services.common.bus import Bus
from services.common.compact_json import dumpb

if TYPE_CHECKING:
    from .node import GatewayNode

log = logging.getLogger(__name__)

LEASE_MS: Final = 6000

# KEYS: lease. ARGV: node id, lease ms. 1 when this node holds the lease afterwards.
_ACQUIRE_LUA = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class ZouEventWriter:
    """Appends Zou's emits to `sb:events` while this gateway holds the writer lease."""

    def __init__(self, node: "GatewayNode") -> None:
        self._node = node
        self._bus: Bus = node.bus
        self._key = f"{node.keys.events}:zou-writer"
        self._acquire = node.redis.register_script(_ACQUIRE_LUA)
        self.holder = False
        self.appended = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def hold_lease(self) -> None:
        """Background loop: take or renew the lease; lose it (and stop writing) on any doubt."""
        node = self._node
        while True:
            try:
                held = bool(await self._acquire(keys=[self._key], args=[node.id, LEASE_MS]))
            except (RedisError, OSError):
                held = False
            if held != self.holder:
                log.info("zou event writer", extra={"holder": held, "node": node.id})
            self.holder = held
            await asyncio.sleep(LEASE_MS / 3000)

    def append(self, event: str, args: list[Any]) -> None:
        if not self.holder:
            return
        data = args[0] if len(args) == 1 else args
        body = dumpb(data)
        task = asyncio.ensure_future(self._append(event, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append(self, event: str, body: bytes) -> None:
        try:
            await self._bus.append_event(self._node.redis, event, body, source="zou")
            self.appended += 1
        except (RedisError, OSError):
            log.warning("zou event not appended: redis unavailable", extra={"event": event})
