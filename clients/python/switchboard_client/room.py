"""A room joined by this client: `version`, `state` and `people`, kept current by the room's
pushes (a `patch` applies on top of the version before it; a `state` replaces)."""

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .callbacks import call_safely


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, None deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True, slots=True)
class RoomChange:
    """One change applied to a room: `cause` is join, rejoin, push, update, conflict, gap or
    deleted; `patch` for an incremental push, `state` when the whole state was replaced."""

    room: str
    version: int | None
    cause: str
    patch: Any = None
    state: Any = None
    deleted: bool = False


class Room:
    """`async for change in room` yields every change; `room.state` is always the latest."""

    def __init__(self, room: str, on_change: Callable[["Room", RoomChange], object] | None) -> None:
        self.room = room
        self.version: int | None = None
        self.state: Any = None
        self.people: list[str] = []
        self.deleted = False
        self.joined = False
        self._on_change = on_change
        self._changes: asyncio.Queue[RoomChange] = asyncio.Queue(maxsize=1000)

    def snapshot(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "version": self.version,
            "state": self.state,
            "people": self.people,
        }

    def __aiter__(self) -> "Room":
        return self

    async def __anext__(self) -> RoomChange:
        return await self._changes.get()

    async def next_change(self, timeout_s: float | None = None) -> RoomChange:
        async with asyncio.timeout(timeout_s):
            return await self._changes.get()

    def _replace(self, version: int | None, state: Any, people: list[str] | None) -> None:
        self.version = version
        self.state = state
        if people is not None:
            self.people = list(people)

    def _merge(self, version: int, patch: Any, people: list[str] | None) -> None:
        self.version = version
        self.state = merge_patch(self.state if self.state is not None else {}, patch)
        if people is not None:
            self.people = list(people)

    def _changed(self, change: RoomChange) -> None:
        if self._changes.full():  # nobody iterates: keep the newest
            self._changes.get_nowait()
        self._changes.put_nowait(change)
        if self._on_change is not None:
            call_safely(self._on_change, self, change)
