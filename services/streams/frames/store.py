"""Frames in Redis: one stream per camera plus the label index, written in one MULTI."""

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from .codec import Frame, FrameUpload, frame_from_entry
from .layout import FrameKeys


@dataclass(frozen=True, slots=True)
class Retention:
    maxlen: int
    exact: bool
    ttl_s: float  # 0 = the stream never expires


@dataclass(frozen=True, slots=True)
class Stored:
    entry_id: str
    new_key: bool  # the camera was not in its label's index before this write


class FrameStore:
    """Stores frames, lists labels and keys from the index, reads a camera's latest frame."""

    def __init__(self, redis: Redis, keys: FrameKeys, retention: Retention) -> None:
        self._redis = redis
        self.keys = keys
        self._retention = retention

    async def add(self, upload: FrameUpload) -> Stored:
        now_ms = int(time.time() * 1000)
        stream = self.keys.stream(upload.label, upload.key)
        label_keys = self.keys.label_keys(upload.label)
        ttl_ms = int(self._retention.ttl_s * 1000)
        pipe = self._redis.pipeline(transaction=True)
        pipe.xadd(
            stream,
            upload.fields(),  # type: ignore[arg-type]  # redis-py's field type is too narrow
            maxlen=self._retention.maxlen,
            approximate=not self._retention.exact,
        )
        pipe.zadd(self.keys.labels, {upload.label: now_ms})
        pipe.zadd(label_keys, {upload.key: now_ms})
        if ttl_ms > 0:
            pipe.pexpire(stream, ttl_ms)
            pipe.pexpire(label_keys, ttl_ms)
        entry_id, _, added_keys, *_ = await pipe.execute()
        return Stored(entry_id=_text(entry_id), new_key=bool(added_keys))

    @property
    def _ttl(self) -> bool:
        return self._retention.ttl_s > 0

    async def labels(self) -> list[str]:
        """Every label with a camera written within the TTL, in name order."""
        return await self._live_members(self.keys.labels)

    async def label_keys(self, label: str) -> list[str]:
        return await self._live_members(self.keys.label_keys(label))

    async def _live_members(self, index: str) -> list[str]:
        pipe = self._redis.pipeline(transaction=False)
        if self._ttl:
            oldest = int((time.time() - self._retention.ttl_s) * 1000)
            pipe.zremrangebyscore(index, "-inf", f"({oldest}")
        pipe.zrange(index, 0, -1)
        replies = await pipe.execute()
        return sorted(_text(member) for member in replies[-1])

    async def latest(self, label: str, key: str) -> Frame | None:
        stream = self.keys.stream(label, key)
        entries = await self._redis.xrevrange(stream, "+", "-", count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return frame_from_entry(stream, label, key, _text(entry_id or b""), fields or {})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
