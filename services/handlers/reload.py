"""Keeps the loaded folders current: polls their files' mtimes (no new dependency) and reloads
on a change or on SIGHUP. Loading runs in a thread (imports may be slow); the new registry is
swapped in whole, so events in flight finish with the code they started with."""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from .loader import load, snapshot
from .registry import EMPTY, Registry

log = logging.getLogger(__name__)


class Reloader:
    def __init__(
        self,
        handlers_folder: Path,
        tasks_folder: Path,
        *,
        before_load: Callable[[], None] = lambda: None,
        after_load: Callable[[Registry], None] = lambda registry: None,
    ) -> None:
        self._folders = (handlers_folder, tasks_folder)
        self._before = before_load
        self._after = after_load
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = asyncio.Lock()
        self.registry: Registry = EMPTY

    def current(self) -> Registry:
        return self.registry

    async def reload(self, reason: str) -> Registry:
        async with self._lock:
            self._seen = await asyncio.to_thread(snapshot, *self._folders)
            self._before()
            registry = await asyncio.to_thread(load, *self._folders, self.registry.generation + 1)
            self.registry = registry
            self._after(registry)
        for error in registry.errors:
            log.error("handler file not loaded", extra={"file": error.file, "error": error.error})
        log.info(
            "handlers loaded",
            extra={
                "reason": reason,
                "generation": registry.generation,
                "handlers": [h.id for h in registry.handlers],
                "tasks": sorted(registry.tasks),
                "errors": len(registry.errors),
            },
        )
        return registry

    async def changed(self) -> bool:
        return await asyncio.to_thread(snapshot, *self._folders) != self._seen

    async def watch(self, interval_s: float) -> None:
        """Reload whenever a file under the folders appears, changes or goes away."""
        while True:
            await asyncio.sleep(interval_s)
            if await self.changed():
                await self.reload("changed")
