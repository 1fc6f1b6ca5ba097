"""The public API for handler and task code: `requires`, `say`, `subscribe`, `unsubscribe`,
`send_to_room`.

Task files import it (`from services.handlers.api import requires, say`). It imports nothing
from aiohttp or Redis: the running service installs the `Cluster` that `say` and `subscribe`
reach, and a worker process of `HANDLERS_ISOLATION=process` installs its own.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_REQUIRES_ATTR = "__switchboard_requires__"


@dataclass(frozen=True, slots=True)
class Request:
    """What a task's `run(request)` receives; `request["data"]` works too (Zephserver habit)."""

    method: str
    data: Any
    user: str
    client: str
    room: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        if name not in self.__slots__:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True, slots=True)
class Requirement:
    """Every scope listed must be in the token's `scope`; every claim must equal the value
    given (or, for a list claim, contain it)."""

    scopes: frozenset[str]
    claims: Mapping[str, Any]

    def allows(self, claims: Mapping[str, Any]) -> bool:
        scope = claims.get("scope", "")
        granted = set(scope.split()) if isinstance(scope, str) else set()
        if not self.scopes <= granted:
            return False
        for name, wanted in self.claims.items():
            have = claims.get(name)
            if have != wanted and not (isinstance(have, list) and wanted in have):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        return {"scopes": sorted(self.scopes), "claims": dict(self.claims)}


def requires(*scopes: str, **claims: Any) -> Callable[[F], F]:
    """Restrict a task: `@requires("admin")`, `@requires(role="supervisor")`, or both.

    The service checks it before the task runs and answers 103 (permission denied) otherwise.
    """
    requirement = Requirement(frozenset(scopes), dict(claims))

    def mark(fn: F) -> F:
        setattr(fn, _REQUIRES_ATTR, requirement)
        return fn

    return mark


def requirement_of(fn: Callable[..., Any]) -> Requirement | None:
    found = getattr(fn, _REQUIRES_ATTR, None)
    return found if isinstance(found, Requirement) else None


class Cluster(Protocol):
    """What the running service provides behind `say`, `subscribe` and `unsubscribe`."""

    def say(self, event: str, obj: Any) -> None: ...
    def send_to_room(self, room: str, frame: str) -> None: ...
    def subscribe(self, event: str, fn: Callable[[Any], Any]) -> None: ...
    def unsubscribe(self, event: str, fn: Callable[[Any], Any] | None = None) -> None: ...


_cluster: Cluster | None = None


def install(cluster: Cluster | None) -> None:
    """Called by the service (and by each isolation worker), never by handler code."""
    global _cluster
    _cluster = cluster


def _current() -> Cluster:
    if _cluster is None:
        raise RuntimeError("say/subscribe work only inside the running handlers service")
    return _cluster


def say(event: str, obj: Any) -> None:
    """Send `obj` (JSON-serialisable) to the `event` subscribers of every OTHER instance.

    Fire and forget, like Zephserver's `say`: it returns at once and never raises for a peer.
    """
    _current().say(event, obj)


def send_to_room(room: str, task: str, data: Any) -> None:
    """Send `{"task", "data"}` to every Zephclient socket joined to `room`, on every gateway
    (Zephserver's `say` with a `room`). Fire and forget; `data` must be JSON-serialisable."""
    frame = json.dumps({"task": task, "data": data}, separators=(",", ":"), ensure_ascii=False)
    _current().send_to_room(room, frame)


def subscribe(event: str, fn: Callable[[Any], Any]) -> None:
    """Call `fn(obj)` (plain or async) for every `say(event, obj)` of another instance.

    Subscriptions belong to the loaded code: a reload drops them, and the reloaded modules
    subscribe again when they are imported.
    """
    _current().subscribe(event, fn)


def unsubscribe(event: str, fn: Callable[[Any], Any] | None = None) -> None:
    """Remove `fn` from `event` (every function of `event` when `fn` is None)."""
    _current().unsubscribe(event, fn)
