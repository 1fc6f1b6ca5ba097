"""Redis Streams consumer groups: the few calls every consuming service makes the same way."""

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create `group` on `stream` (and the stream) unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def group_backlog(redis: Redis, stream: str, group: str) -> tuple[int | None, int | None]:
    """(entries not yet delivered to the group, entries delivered and not acked); None where
    Redis does not say (lag needs Redis 7)."""
    groups: list[Any] = await redis.xinfo_groups(stream)
    for info in groups:
        if info.get("name", info.get(b"name")) in (group, group.encode()):
            lag = info.get("lag", info.get(b"lag"))
            pending = info.get("pending", info.get(b"pending"))
            return (
                int(lag) if lag is not None else None,
                int(pending) if pending is not None else None,
            )
    return None, None


def read_entries(reply: Any) -> list[tuple[Any, list[Any]]]:
    """XREADGROUP's reply as (stream, entries): RESP3 gives {stream: [entries]}, RESP2
    [[stream, entries]]."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(name, value[0] if value else []) for name, value in reply.items()]
    return [(name, entries) for name, entries in reply]
