"""Channel presence in Redis: who is subscribed, across every gateway, expiring on its own.

Each entry is refreshed by the gateway holding the connection; a gateway that dies stops
refreshing, and its entries drop out after the namespace's presence TTL.
"""

import json
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from services.common.redis import Keys

# KEYS: hash, expiry zset. ARGV: now ms. Drops expired entries, returns the rest.
_GET_LUA = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


class Presence:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._get = redis.register_script(_GET_LUA)

    async def add(self, channel: str, client: str, info: dict[str, Any], ttl_s: float) -> None:
        await self.refresh([(channel, client, ttl_s)], infos={(channel, client): info})

    async def refresh(
        self,
        entries: Iterable[tuple[str, str, float]],
        *,
        infos: dict[tuple[str, str], dict[str, Any]] | None = None,
    ) -> None:
        """Push the expiry of many (channel, client, ttl) entries forward in one round trip."""
        now_ms = int(time.time() * 1000)
        keys = self._keys
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for channel, client, ttl_s in entries:
            ttl_ms = int(ttl_s * 1000)
            if infos is not None:
                info = infos[(channel, client)]
                pipe.hset(keys.presence(channel), client, json.dumps(info, separators=(",", ":")))
            pipe.zadd(keys.presence_expiry(channel), {client: now_ms + ttl_ms})
            pipe.pexpire(keys.presence(channel), 2 * ttl_ms)
            pipe.pexpire(keys.presence_expiry(channel), 2 * ttl_ms)
            count += 1
        if count:
            await pipe.execute()

    async def remove(self, channel: str, client: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(self._keys.presence(channel), client)
        pipe.zrem(self._keys.presence_expiry(channel), client)
        await pipe.execute()

    async def get(self, channel: str) -> dict[str, Any]:
        raw = await self._get(
            keys=[self._keys.presence(channel), self._keys.presence_expiry(channel)],
            args=[int(time.time() * 1000)],
        )
        # HGETALL inside a script comes back as a flat list whatever the protocol.
        pairs = zip(raw[::2], raw[1::2], strict=True)
        return {client.decode(): json.loads(info) for client, info in pairs}
