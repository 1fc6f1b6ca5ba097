"""Zephserver's cluster say/subscribe over Redis pub/sub (`sb:say`).

`say(event, obj)` publishes `{"event", "source", "data"}`; every instance receives it and calls
the functions subscribed to `event`, except the sender (as in Zephserver, a say is for the
others). `say` may be called from the event loop or from a sync task's thread: messages are
queued and published in order by one pump. Subscribed functions run like tasks: async ones on
the loop, plain ones in the thread pool; an exception is logged.
"""

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.asyncio import Redis

from services.common.pubsub import Subscriber
from services.common.redis import Keys

log = logging.getLogger(__name__)

Listener = Callable[[Any], Any]


class Cluster:
    def __init__(
        self,
        redis: Redis,
        redis_url: str,
        keys: Keys,
        instance: str,
        threads: ThreadPoolExecutor,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._channel = channel = keys.say
        self.instance = instance
        self._threads = threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()  # (channel, body)
        self._listeners: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._running: set[asyncio.Future[Any]] = set()
        self.subscriber = Subscriber(redis_url, self._on_message)
        self.subscriber.add([channel.encode()])
        self.received = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- the api.Cluster protocol ------------------------------------------------------------

    def say(self, event: str, obj: Any) -> None:
        body = json.dumps(
            {"event": event, "source": self.instance, "data": obj},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        self._queue(self._channel, body)

    def send_to_room(self, room: str, frame: str) -> None:
        self._queue(self._keys.zeph_room(room), frame)

    def _queue(self, channel: str, body: str) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the handlers service is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._outbox.put_nowait((channel, body))
        else:
            loop.call_soon_threadsafe(self._outbox.put_nowait, (channel, body))

    def subscribe(self, event: str, fn: Listener) -> None:
        with self._lock:
            listeners = self._listeners.setdefault(event, [])
            if fn not in listeners:
                listeners.append(fn)

    def unsubscribe(self, event: str, fn: Listener | None = None) -> None:
        with self._lock:
            if fn is None:
                self._listeners.pop(event, None)
                return
            listeners = self._listeners.get(event, [])
            if fn in listeners:
                listeners.remove(fn)
            if not listeners:
                self._listeners.pop(event, None)

    # -- the service's side ------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every subscription (a reload re-imports the code that made them)."""
        with self._lock:
            self._listeners.clear()

    def subscriptions(self) -> dict[str, int]:
        with self._lock:
            return {event: len(fns) for event, fns in self._listeners.items()}

    async def pump(self) -> None:
        """Publish what `say` and `send_to_room` queued, in order (runs under `supervised`)."""
        while True:
            channel, body = await self._outbox.get()
            await self._redis.publish(channel, body)

    def _on_message(self, channel: bytes, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            event, source, data = message["event"], message.get("source"), message.get("data")
        except (ValueError, KeyError, TypeError):
            log.warning("malformed say message ignored")
            return
        if source == self.instance:
            return
        self.received += 1
        with self._lock:
            listeners = list(self._listeners.get(event, ()))
        loop = asyncio.get_running_loop()
        for fn in listeners:
            future: asyncio.Future[Any]
            if inspect.iscoroutinefunction(fn):
                future = loop.create_task(fn(data), name=f"say:{event}")
            else:
                future = loop.run_in_executor(self._threads, fn, data)
            self._running.add(future)
            future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._running.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("say listener failed", extra={"error": repr(future.exception())})
