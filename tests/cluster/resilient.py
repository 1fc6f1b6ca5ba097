"""Clients that behave as a client library should behind a load balancer.

`ResilientSubscriber` keeps one channel subscription alive over the native protocol: when its
socket closes with a code that allows it (1012 shutdown, 1006 a dead server, 4000-4499), it
reconnects with capped exponential backoff and subscribes again with `since` set to the last
publication it saw, so history fills the gap. Each subscriber has its own cookie jar, as a browser
tab has, so haproxy's stickiness cookie sends it back to its gateway until that one is gone.

`Publisher` publishes numbered events through `POST /api/publish` at a steady pace, retrying a
publish that failed (502/503 or a broken connection while a gateway goes away).
"""

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

STICKY_COOKIE = "SBSERVER"


def sticky_server(session: aiohttp.ClientSession) -> str | None:
    """The gateway haproxy pinned this session to (the value of its stickiness cookie)."""
    for cookie in session.cookie_jar:
        if cookie.key == STICKY_COOKIE:
            return cookie.value
    return None


def may_reconnect(code: int | None) -> bool:
    # None and 1006: the connection broke without a close frame (the server died).
    return code is None or code in (1006, 1011, 1012) or 4000 <= code <= 4499


@dataclass
class Session:
    """One connection of a subscriber, from subscribe to close."""

    gateway: str | None
    recovered: int = 0  # publications the subscribe reply carried
    close_code: int | None = None
    reconnect_s: float | None = None  # from the previous close to this subscribe's reply
    backoff_s: float = 0.0  # of which waited on purpose

    @property
    def handshake_s(self) -> float | None:
        """Connect and subscribe through haproxy: the reconnect minus the backoff."""
        return None if self.reconnect_s is None else self.reconnect_s - self.backoff_s


@dataclass
class ResilientSubscriber:
    url: str  # haproxy's base URL
    token: str
    channel: str
    # Waited (with jitter) before every attempt, the first included, as client libraries do so
    # that the clients of a dead gateway do not all come back at once; publications go on
    # meanwhile, and history must fill the gap.
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 1.0
    give_up_after_s: float = 20.0  # a reconnect that takes longer fails the test

    received: list[tuple[str, Any]] = field(default_factory=list)  # (offset, data), in order
    sessions: list[Session] = field(default_factory=list)
    unrecovered: list[dict[str, Any]] = field(default_factory=list)  # recovered: false replies
    epoch: str = ""
    offset: str = ""
    failed_attempts: int = 0

    def __post_init__(self) -> None:
        # unsafe: accept cookies from an IP address (127.0.0.1), as a browser does
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._stopping = False

    @property
    def gateway(self) -> str | None:
        return self.sessions[-1].gateway if self.sessions else None

    @property
    def reconnects(self) -> int:
        return len(self.sessions) - 1

    async def start(self) -> None:
        """Connect and subscribe once (raises if that fails), then keep it up in a task."""
        ws = await self._subscribe(since=None)
        self._task = asyncio.create_task(self._run(ws), name=f"subscriber:{self.channel}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.http.close()

    def check(self) -> None:
        """Raise what the background task raised (it gave up reconnecting, or a bad reply)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._read(ws)
            code = ws.close_code
            self.sessions[-1].close_code = code
            if self._stopping or not may_reconnect(code):
                return
            ws = await self._reconnect(time.monotonic())

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            for line in msg.data.split("\n"):
                self._on_message(json.loads(line))

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("push") == "pub" and message["channel"] == self.channel:
            self.received.append((message["offset"], message["data"]))
            self.offset = message["offset"]

    async def _reconnect(self, closed_at: float) -> aiohttp.ClientWebSocketResponse:
        delay, waited = self.backoff_initial_s, 0.0
        while True:
            pause = random.uniform(delay, 2 * delay)  # the backoff, with jitter
            await asyncio.sleep(pause)
            delay, waited = min(delay * 2, self.backoff_max_s), waited + pause
            try:
                ws = await self._subscribe(since={"offset": self.offset, "epoch": self.epoch})
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                self.failed_attempts += 1
                if time.monotonic() - closed_at > self.give_up_after_s:
                    raise
                continue
            self.sessions[-1].reconnect_s = time.monotonic() - closed_at
            self.sessions[-1].backoff_s = waited
            return ws

    async def _subscribe(self, since: dict[str, str] | None) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(
            f"{self.url}/ws",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )
        try:
            reply = await self._call(ws, "subscribe", channel=self.channel, since=since)
            if "result" not in reply:
                raise AssertionError(f"subscribe refused: {reply}")
        except BaseException:
            await ws.close()
            raise
        result = reply["result"]
        session = Session(gateway=sticky_server(self.http))
        for publication in result["publications"]:
            self.received.append((publication["offset"], publication["data"]))
            session.recovered += 1
        self.epoch = result["epoch"]
        if result["publications"]:
            self.offset = result["publications"][-1]["offset"]
        elif since is None or not result["recovered"]:
            # First subscribe, or history lost the gap (a real client reloads its state here):
            # carry on from the current position.
            self.offset = result["offset"]
            if since is not None:
                self.unrecovered.append(result)
        self.sessions.append(session)
        return ws

    async def _call(
        self, ws: aiohttp.ClientWebSocketResponse, op: str, **fields: Any
    ) -> dict[str, Any]:
        """Send a command; pushes read before its reply are handled in order."""
        self._next_id += 1
        command_id = self._next_id
        body = {"id": command_id, "op": op, **{k: v for k, v in fields.items() if v is not None}}
        await ws.send_str(json.dumps(body))
        async with asyncio.timeout(5.0):
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket closed before the {op} reply: {msg.type}")
                for line in msg.data.split("\n"):
                    message = json.loads(line)
                    if message.get("id") == command_id:
                        return message  # type: ignore[no-any-return]
                    self._on_message(message)


@dataclass
class Publisher:
    url: str
    token: str
    channel: str
    interval_s: float = 0.02
    event: str | None = None  # the event name of every publication (for the handlers)
    acked: list[tuple[int, str]] = field(default_factory=list)  # (n, offset)
    failures: list[str] = field(default_factory=list)  # each failed attempt, retried
    served_by: dict[str, int] = field(default_factory=dict)  # gateway -> publications

    def __post_init__(self) -> None:
        # No cookie jar: publications spread over the gateways (round robin).
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"publisher:{self.channel}")

    async def stop(self) -> None:
        """Let the publish in flight finish (a cancelled request may still be applied later,
        after the test read the history), then stop."""
        self._stop.set()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.http.close()

    def check(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            await self.publish(n)
            with contextlib.suppress(TimeoutError):  # the publishing pace
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def publish(self, n: int, give_up_after_s: float = 20.0) -> str:
        started = time.monotonic()
        while True:
            try:
                return await self._publish_once(n)
            except (aiohttp.ClientError, TimeoutError, AssertionError) as exc:
                self.failures.append(f"#{n}: {exc!r}")
                if time.monotonic() - started > give_up_after_s:
                    raise
                await asyncio.sleep(0.05)  # retry pace

    async def _publish_once(self, n: int) -> str:
        async with self.http.post(
            f"{self.url}/api/publish",
            headers={"Authorization": f"Bearer {self.token}"},
            json={"channel": self.channel, "data": {"n": n}}
            | ({"event": self.event} if self.event else {}),
            timeout=aiohttp.ClientTimeout(total=5.0),
        ) as response:
            text = await response.text()
            if response.status != 200:  # haproxy's 502/503 pages are HTML
                raise AssertionError(f"HTTP {response.status}: {text[:200]}")
            body = json.loads(text)
            gateway = response.headers.get("X-Served-By", "?")
        self.served_by[gateway] = self.served_by.get(gateway, 0) + 1
        self.acked.append((n, body["offset"]))
        return str(body["offset"])
