"""The body of one isolation worker process (`HANDLERS_ISOLATION=process`).

It loads the handlers folder itself (the parent sends names, not code), runs one call at a
time and answers on its pipe. It imports neither aiohttp nor the service: a crash or a hang
here costs this process only, which the parent kills and replaces.
"""

import asyncio
import json
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import api
from .loader import forget, load_handlers
from .registry import Registry

ROOM_MARK = "\x00"  # no room id holds it (ids are printable)


@dataclass(frozen=True, slots=True)
class WorkerInit:
    redis_url: str
    say_channel: str
    room_channel: str  # a room's channel with ROOM_MARK where the room id goes
    instance: str


@dataclass(frozen=True, slots=True)
class WorkerCall:
    folder: str
    generation: int
    handler_id: str
    data_json: str
    event: dict[str, str]


# Per call the worker sends ("started", "", "") once the handler is loaded and about to run,
# then ("ok", "", "") or ("error", message, traceback).
Reply = tuple[str, str, str]


class _WorkerCluster:
    """`say` from a worker publishes with its own Redis connection; `subscribe` needs the
    service's event loop, so it is refused here."""

    def __init__(self, init: WorkerInit) -> None:
        self._init = init
        self._client: Any = None

    def say(self, event: str, obj: Any) -> None:
        body = json.dumps({"event": event, "source": self._init.instance, "data": obj})
        self._publish(self._init.say_channel, body)

    def send_to_room(self, room: str, frame: str) -> None:
        self._publish(self._init.room_channel.replace(ROOM_MARK, room), frame)

    def _publish(self, channel: str, body: str) -> None:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self._init.redis_url)
        self._client.publish(channel, body)

    def subscribe(self, event: str, fn: Callable[[Any], Any]) -> None:
        raise RuntimeError("subscribe is not available in an isolation worker; use a task")

    def unsubscribe(self, event: str, fn: Callable[[Any], Any] | None = None) -> None:
        raise RuntimeError("unsubscribe is not available in an isolation worker")


def worker_main(conn: Connection, init: WorkerInit) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.dont_write_bytecode = True  # as the service's loader: never a stale cached handler
    api.install(_WorkerCluster(init))
    loaded: tuple[str, int] | None = None
    registry = Registry(0, [], {}, [])
    while True:
        try:
            call: WorkerCall = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if loaded != (call.folder, call.generation):
            forget(Path(call.folder))
            handlers, errors = load_handlers(Path(call.folder))
            registry = Registry(call.generation, handlers, {}, errors)
            loaded = (call.folder, call.generation)
        conn.send(_run(registry, call, conn))


def _run(registry: Registry, call: WorkerCall, conn: Connection) -> Reply:
    handler = registry.handler(call.handler_id)
    if handler is None:
        return ("error", f"handler {call.handler_id!r} is not loaded in the worker", "")
    try:
        data = json.loads(call.data_json)
        args: tuple[Any, ...] = (data, call.event) if handler.wants_event else (data,)
        conn.send(("started", "", ""))
        if handler.is_async:
            asyncio.run(handler.fn(*args))
        else:
            handler.fn(*args)
    except Exception as exc:  # the per-call boundary: reported to the parent
        return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    return ("ok", "", "")
