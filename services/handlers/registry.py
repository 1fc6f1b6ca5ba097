"""What is loaded: event handlers (with the event names they match) and rpc tasks.

A `Registry` is immutable: a reload builds a new one and swaps it in, so an event in flight
finishes with the handlers it started with.
"""

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .api import Requirement

_PATTERN_CHARS = frozenset("*?[")
_CACHE_MAX = 4096


def normalize(event: str) -> str:
    """The file-per-event spelling of an event name: `task:new-x` -> `task_new_x`."""
    return event.lower().replace(":", "_").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Handler:
    """One `handle_event` bound to one event key (a name, an fnmatch pattern, or a file)."""

    id: str  # unique: `<key>/<name>` for the package form, `<file stem>` for a file
    key: str
    name: str
    kind: str  # "package" or "file"
    file: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    is_async: bool
    wants_event: bool  # `handle_event(data, event)`: also gets the event's name and ids
    timeout_s: float | None  # module attribute TIMEOUT, else the service's default

    def matches(self, event: str, normalized: str) -> bool:
        if self.kind == "file":
            return normalized == self.key
        if _PATTERN_CHARS & set(self.key):
            return fnmatch.fnmatchcase(event, self.key.lower())
        return event == self.key.lower()

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.key,
            "name": self.name,
            "kind": self.kind,
            "file": self.file,
            "async": self.is_async,
        }


@dataclass(frozen=True, slots=True)
class Task:
    """A client-callable `run(request)` from `task_<name>.py`."""

    name: str
    file: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    is_async: bool
    requirement: Requirement | None
    timeout_s: float | None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "async": self.is_async,
            "requires": self.requirement.describe() if self.requirement else None,
        }


@dataclass(frozen=True, slots=True)
class LoadError:
    """A file (or package) that could not be loaded; it is skipped, the rest runs."""

    file: str
    error: str
    traceback: str = field(repr=False)

    def describe(self) -> dict[str, str]:
        return {"file": self.file, "error": self.error}


class Registry:
    def __init__(
        self,
        generation: int,
        handlers: list[Handler],
        tasks: dict[str, Task],
        errors: list[LoadError],
    ) -> None:
        self.generation = generation
        self.handlers = tuple(handlers)
        self.tasks = dict(tasks)
        self.errors = tuple(errors)
        self.loaded_at = time.time()
        self._by_id = {h.id: h for h in handlers}
        self._cache: dict[str, tuple[Handler, ...]] = {}

    def for_event(self, event: str) -> tuple[Handler, ...]:
        """Handlers of `event`, in load order (memoised: events repeat)."""
        found = self._cache.get(event)
        if found is None:
            lower = event.lower()
            normalized = normalize(event)
            found = tuple(h for h in self.handlers if h.matches(lower, normalized))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[event] = found
        return found

    def handler(self, handler_id: str) -> Handler | None:
        return self._by_id.get(handler_id)


EMPTY = Registry(0, [], {}, [])
