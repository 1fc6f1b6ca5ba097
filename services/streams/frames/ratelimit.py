"""Per-user fixed-window rate limit in Redis, shared by every process of the service."""

import math
import time

from redis.asyncio import Redis

from .layout import FrameKeys


class RateLimiter:
    """At most `limit` calls per user per `window_s`-second window (the backend: 60 per 60 s,
    counted per client IP in process memory; here per token user, across processes)."""

    def __init__(self, redis: Redis, keys: FrameKeys, *, limit: int, window_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._limit = limit
        self._window_s = window_s

    async def hit(self, user: str) -> int | None:
        """Count one call; None when allowed, else the seconds until the window ends."""
        now = time.time()
        window = int(now // self._window_s)
        key = self._keys.rate(user, window)
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self._window_s + 1)
        count, _ = await pipe.execute()
        if int(count) <= self._limit:
            return None
        return max(1, math.ceil((window + 1) * self._window_s - now))
