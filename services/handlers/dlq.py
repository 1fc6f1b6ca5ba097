"""The dead-letter stream `sb:events:dlq`: events (and malformed rpc calls) whose handler failed
every attempt, with the handler, the error, the traceback and the attempts beside the original
event's fields."""

import re
import time
from typing import Any

from redis.asyncio import Redis

from services.common.errors import BadRequest

_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def check_id(entry_id: str) -> str:
    if not _ID.match(entry_id):
        raise BadRequest("a dead-letter id looks like 1732222000000-0")
    return entry_id


class DeadLetters:
    def __init__(self, redis: Redis, stream: str, maxlen: int) -> None:
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen

    async def add(
        self,
        original: dict[str, str],
        *,
        kind: str,
        entry: str,
        handler: str,
        error: str,
        trace: str,
        attempts: int,
    ) -> str:
        fields = {
            **original,
            "kind": kind,
            "entry": entry,
            "handler": handler,
            "error": error,
            "traceback": trace,
            "attempts": str(attempts),
            "failed_at": str(int(time.time() * 1000)),
        }
        entry_id = await self._redis.xadd(
            self._stream,
            fields,  # type: ignore[arg-type]  # str values are what redis-py sends
            maxlen=self._maxlen,
            approximate=True,
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def list(self, limit: int, after: str | None) -> list[dict[str, Any]]:
        """Oldest first; `after` pages on from the last id of the previous page."""
        start = f"({after}" if after else "-"
        entries: Any = await self._redis.xrange(self._stream, start, "+", count=limit)
        return [_entry(eid, fields) for eid, fields in entries or []]

    async def get(self, entry_id: str) -> dict[str, Any] | None:
        entries: Any = await self._redis.xrange(self._stream, entry_id, entry_id, count=1)
        return _entry(*entries[0]) if entries else None

    async def delete(self, entry_id: str) -> bool:
        return bool(await self._redis.xdel(self._stream, entry_id))

    async def size(self) -> int:
        return int(await self._redis.xlen(self._stream))


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    body: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
    body["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if "attempts" in body:
        body["attempts"] = int(body["attempts"])
    return body
