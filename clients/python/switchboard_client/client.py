"""The Switchboard client: one WebSocket to the gateway's native protocol (docs/protocol.md),
kept open across network drops, token expiry and gateway restarts.

What survives a reconnect: subscriptions (re-subscribed with `since`, so the publications missed
meanwhile are delivered in order and once), rooms (joined again), the token (refreshed through
`get_token`). Commands in flight when the socket closed fail with CONNECTION_LOST; commands sent
while disconnected wait for the next connection, within their timeout.
"""

import asyncio
import contextlib
import copy
import inspect
import itertools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

from .callbacks import call_safely
from .errors import CloseCode, ErrorCode, SwitchboardError, is_terminal_close
from .room import Room, RoomChange
from .subscription import Subscribed, Subscription

log = logging.getLogger("switchboard_client")

TokenGetter = Callable[[], Awaitable[str] | str]
Patch = dict[str, Any] | Callable[[Any], dict[str, Any]]
Listener = Callable[..., object]


class Switchboard:
    """`async with Switchboard(url, token=...) as sb:` (or `get_token=`: a function, sync or
    async, called for the first token, before expiry and after a 4001).

    Events (`sb.on(name, callback)`): `state` (state, previous), `connected` (client, user),
    `disconnected` (code, reason, reconnect), `reconnecting` (attempt, delay), `refreshed`
    (expires_in), `recovery_failed` (Subscribed), `room` (Room, RoomChange), `error` (error).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: TokenGetter | None = None,
        name: str = "",
        timeout_s: float = 10.0,
        rpc_timeout_s: float = 30.0,
        min_reconnect_delay_s: float = 0.25,
        max_reconnect_delay_s: float = 20.0,
        heartbeat_s: float = 25.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if token is None and get_token is None:
            raise TypeError("Switchboard needs token= or get_token=")
        self.url = url
        self.name = name
        self.timeout_s = timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self.min_reconnect_delay_s = min_reconnect_delay_s
        self.max_reconnect_delay_s = max_reconnect_delay_s
        self.heartbeat_s = heartbeat_s
        self.state = "disconnected"  # connecting | connected | disconnected | closed
        self.client_id: str | None = None
        self.user: str | None = None
        self._token = token
        self._get_token = get_token
        self._token_expires_at: float | None = None  # time.time() seconds, when known
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._subs: dict[str, Subscription] = {}
        self._rooms: dict[str, Room] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # per-connection: refresh, restore
        self._close_info: dict[str, Any] | None = None
        self._terminal: SwitchboardError | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> "Switchboard":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout_s: float | None = None) -> None:
        """Start connecting (and reconnecting) and wait for the first connection."""
        if self._runner is None or self._runner.done():
            self._terminal = None
            self._start()
        await self.ready(timeout_s)

    def _start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._runner = asyncio.create_task(self._run())

    async def ready(self, timeout_s: float | None = None) -> None:
        """Wait until connected; raise SwitchboardError(CLOSED) if the server refused us."""
        await self._wait_connected(self.timeout_s if timeout_s is None else timeout_s)

    async def close(self) -> None:
        """Close for good: pending commands fail with CLOSED, subscriptions end."""
        self._terminal = self._terminal or SwitchboardError(ErrorCode.CLOSED, "client closed")
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._set_state("closed")
        for sub in list(self._subs.values()):
            sub._end(None)
        self._subs.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        """Call `callback(*args)` on `event`; returns a function that removes it."""
        listeners = self._listeners.setdefault(event, [])
        listeners.append(callback)

        def remove() -> None:
            if callback in listeners:
                listeners.remove(callback)

        return remove

    def _emit(self, event: str, *args: Any) -> None:
        for callback in list(self._listeners.get(event, [])):
            call_safely(callback, *args)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            previous, self.state = self.state, state
            if state == "connected":
                self._connected.set()
            else:
                self._connected.clear()
            self._emit("state", state, previous)

    # -- the connection loop --------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                self._set_state("connecting")
                try:
                    code, reason, reconnect, was_up = await self._connection()
                except Exception as exc:  # a bug here must not stop the reconnects
                    log.exception("switchboard_client: connection failed")
                    self._emit("error", exc)
                    code, reason, reconnect, was_up = (
                        int(CloseCode.ABNORMAL),
                        repr(exc),
                        True,
                        False,
                    )
                self.client_id = None
                if code == CloseCode.TOKEN_EXPIRED:
                    if self._get_token is None:
                        reconnect = False  # nobody can give a fresh token
                    else:
                        self._token = None
                self._emit("disconnected", code, reason, reconnect)
                if not reconnect:
                    self._stop(SwitchboardError(ErrorCode.CLOSED, reason, close_code=code))
                    return
                attempt = 0 if was_up else attempt
                ceiling = min(self.max_reconnect_delay_s, self.min_reconnect_delay_s * 2**attempt)
                delay = ceiling / 2 + random.random() * ceiling / 2  # "equal jitter"
                attempt += 1
                self._set_state("disconnected")
                self._emit("reconnecting", attempt, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            await self._drop_socket()
            raise

    def _stop(self, error: SwitchboardError) -> None:
        self._terminal = error
        self._set_state("closed")
        for sub in list(self._subs.values()):
            sub._end(error)
        self._subs.clear()

    async def _connection(self) -> tuple[int, str, bool, bool]:
        """One socket from open to close: (close code, reason, whether to reconnect, whether
        it got as far as restoring the subscriptions)."""
        try:
            token = await self._current_token()
        except SwitchboardError as exc:
            self._emit("error", exc)
            return int(CloseCode.ABNORMAL), exc.message, exc.code != ErrorCode.CLOSED, False
        except Exception as exc:
            self._emit("error", exc)
            return int(CloseCode.ABNORMAL), f"get_token failed: {exc!r}", True, False
        assert self._session is not None
        try:
            async with asyncio.timeout(self.timeout_s):  # a handshake that hangs is given up
                ws = await self._session.ws_connect(
                    self.url,
                    heartbeat=self.heartbeat_s,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._emit("error", exc)
            return int(CloseCode.ABNORMAL), f"cannot connect: {exc!r}", True, False
        self._ws = ws
        self._close_info = None
        reader = asyncio.create_task(self._read(ws))
        restored = False
        try:
            restored = await self._handshake(ws, token, reader)
            await reader
        finally:
            reader.cancel()
            for task in list(self._tasks):
                task.cancel()
            self._tasks.clear()
            self._ws = None
            self._connected.clear()
            self._fail_pending(SwitchboardError(ErrorCode.CONNECTION_LOST, "connection lost"))
            for sub in self._subs.values():
                sub.subscribed = False
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        info: dict[str, Any] = self._close_info or {}
        code = ws.close_code or info.get("code") or int(CloseCode.ABNORMAL)
        if code == CloseCode.ABNORMAL and info.get("code"):
            code = int(info["code"])
        reason = str(info.get("reason", ""))
        reconnect = not is_terminal_close(code) and info.get("reconnect") is not False
        return code, reason, reconnect, restored

    async def _handshake(
        self, ws: aiohttp.ClientWebSocketResponse, token: str, reader: asyncio.Task[None]
    ) -> bool:
        command: dict[str, Any] = {"op": "connect", "token": token}
        if self.name:
            command["name"] = self.name
        try:
            result = await self._send(ws, command)
        except SwitchboardError as exc:
            self._emit("error", exc)
            if exc.code == ErrorCode.TOKEN_EXPIRED and self._get_token is not None:
                self._token = None
            # The server closes the socket after the refusals that end it (its close code then
            # decides what next); after others (Redis unreachable: 108, a bad `name`: 107) it
            # keeps it open: close it, to retry later if the error is temporary.
            done, _ = await asyncio.wait({reader}, timeout=1.0)
            if done:
                return False
            self._close_info = {"code": 1000, "reason": exc.message, "reconnect": exc.temporary}
            await ws.close()
            return False
        self.client_id, self.user = result.get("client"), result.get("user")
        self._set_token_expiry(ws, result.get("expires_in"))
        self._set_state("connected")
        self._emit("connected", self.client_id, self.user)
        return await self._restore(ws)

    async def _drop_socket(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _current_token(self) -> str:
        stale = self._token_expires_at is not None and time.time() > self._token_expires_at - 1
        if (self._token is None or stale) and self._get_token is not None:
            token = await _call_getter(self._get_token)
            if not isinstance(token, str) or not token:
                raise SwitchboardError(ErrorCode.CLOSED, "get_token gave no token")
            self._token, self._token_expires_at = token, None
        assert self._token is not None
        return self._token

    # -- token refresh --------------------------------------------------------------------

    def _set_token_expiry(self, ws: aiohttp.ClientWebSocketResponse, expires_in: Any) -> None:
        if not isinstance(expires_in, int | float):
            self._token_expires_at = None
            return
        self._token_expires_at = time.time() + expires_in
        if self._get_token is not None:
            # Well before expiry: a quarter of the lifetime early, at most a minute.
            self._spawn(self._refresh(ws, max(0.0, expires_in - min(60.0, expires_in / 4))))

    async def _refresh(self, ws: aiohttp.ClientWebSocketResponse, delay: float) -> None:
        await asyncio.sleep(delay)
        assert self._get_token is not None
        while ws is self._ws:
            try:
                token = await _call_getter(self._get_token)
                result = await self._send(ws, {"op": "refresh", "token": token})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._emit("error", exc)
                left = (self._token_expires_at or 0) - time.time()
                if left <= 0:
                    return  # the server closes with 4001; the reconnect fetches a token
                await asyncio.sleep(min(5.0, max(0.25, left / 3)))
                continue
            self._token = token
            self._emit("refreshed", result.get("expires_in"))
            self._set_token_expiry(ws, result.get("expires_in"))
            return

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("switchboard_client: background command failed: %r", task.exception())

    # -- wire -----------------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            for line in msg.data.split("\n"):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    self._emit("error", SwitchboardError(ErrorCode.BAD_REQUEST, "bad JSON"))
                    continue
                if not isinstance(obj, dict):
                    continue
                if "push" in obj:
                    self._on_push(obj)
                else:
                    self._on_reply(obj)

    def _on_reply(self, msg: dict[str, Any]) -> None:
        future = self._pending.pop(msg["id"], None) if isinstance(msg.get("id"), int) else None
        if future is None or future.done():
            if "error" in msg:
                self._emit("error", SwitchboardError.from_reply(msg["error"]))
            return
        if "error" in msg:
            future.set_exception(SwitchboardError.from_reply(msg["error"]))
        else:
            future.set_result(msg.get("result"))

    def _on_push(self, msg: dict[str, Any]) -> None:
        kind = msg.get("push")
        if kind == "pub":
            sub = self._subs.get(msg.get("channel", ""))
            if sub is not None and sub.subscribed:
                sub._deliver(msg)
        elif kind in ("join", "leave"):
            sub = self._subs.get(msg.get("channel", ""))
            callback = None if sub is None else sub.on_join if kind == "join" else sub.on_leave
            if callback is not None:
                call_safely(callback, msg.get("info"))
        elif kind == "room":
            room = self._rooms.get(msg.get("room", ""))
            if room is not None:
                self._on_room_push(room, msg)
        elif kind == "disconnect":
            self._close_info = msg

    async def _send(
        self,
        ws: aiohttp.ClientWebSocketResponse | None,
        command: dict[str, Any],
        timeout_s: float | None = None,
    ) -> Any:
        """Send one command on `ws` and wait for its reply."""
        if ws is None or ws is not self._ws or ws.closed:
            raise SwitchboardError(ErrorCode.CONNECTION_LOST, "not connected")
        cmd_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cmd_id] = future
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            await ws.send_str(json.dumps({"id": cmd_id, **command}, separators=(",", ":")))
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise SwitchboardError(
                ErrorCode.TIMEOUT, f"no reply to {command['op']} in {timeout_s} s"
            ) from None
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise SwitchboardError(ErrorCode.CONNECTION_LOST, f"send failed: {exc!r}") from None
        finally:
            self._pending.pop(cmd_id, None)

    async def _call(self, op: str, fields: dict[str, Any], timeout_s: float | None = None) -> Any:
        """A command from the app: waits for a connection first, within the same timeout."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        await self._wait_connected(timeout_s)
        left = max(0.001, timeout_s - (time.monotonic() - started))
        return await self._send(self._ws, {"op": op, **fields}, left)

    async def _wait_connected(self, timeout_s: float) -> None:
        if self._connected.is_set():  # cleared as soon as the socket closes
            return
        if self._terminal is not None:
            raise self._terminal
        if self._runner is None:
            self._start()  # a command before connect(): connect now
        assert self._runner is not None
        waiter: asyncio.Future[Any] = asyncio.ensure_future(self._connected.wait())
        stopped: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(self._runner))
        try:
            done, _ = await asyncio.wait(
                {waiter, stopped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            stopped.cancel()
        if waiter in done and self._connected.is_set():
            return
        if self._terminal is not None:
            raise self._terminal
        raise SwitchboardError(ErrorCode.TIMEOUT, f"not connected within {timeout_s} s")

    def _fail_pending(self, error: SwitchboardError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    # -- channels -------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        *,
        since: dict[str, str] | None = None,
        token: str | None = None,
        on_join: Callable[[Any], object] | None = None,
        on_leave: Callable[[Any], object] | None = None,
        on_subscribed: Callable[[Subscribed], object] | None = None,
        on_recovery_failed: Callable[[Subscribed], object] | None = None,
    ) -> Subscription:
        """Subscribe to `channel` and return once the server accepted it; iterate the result
        for publications. `since={offset, epoch}` resumes from a position the app kept.
        `on_recovery_failed(info)`: a reconnect could not fill a gap (reload from the source)."""
        if channel in self._subs:
            raise SwitchboardError(ErrorCode.ALREADY_SUBSCRIBED, f"already subscribed to {channel}")
        sub = Subscription(
            self,
            channel,
            since=since,
            token=token,
            on_join=on_join,
            on_leave=on_leave,
            on_subscribed=on_subscribed,
            on_recovery_failed=on_recovery_failed,
        )
        self._subs[channel] = sub
        try:
            await self._wait_connected(self.timeout_s)
            if not sub._ready.done() and sub._in_flight is None:
                await self._subscribe_on(self._ws, sub)
            await sub._ready
        except BaseException as exc:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            if not sub._ready.done():
                sub._end(exc if isinstance(exc, SwitchboardError) else None)
            raise
        return sub

    async def _subscribe_on(
        self, ws: aiohttp.ClientWebSocketResponse | None, sub: Subscription
    ) -> None:
        if sub._in_flight is ws:
            return
        sub._in_flight = ws
        fields: dict[str, Any] = {"channel": sub.channel}
        if sub.token:
            fields["token"] = sub.token
        since = sub.position()
        if since:
            fields["since"] = since
        try:
            result = await self._send(ws, {"op": "subscribe", **fields})
        except SwitchboardError as exc:
            if sub._in_flight is ws:
                sub._in_flight = None
            if self._subs.get(sub.channel) is not sub or ws is not self._ws:
                if exc.code == ErrorCode.CONNECTION_LOST:
                    return  # the next connection subscribes it
                raise
            if exc.temporary or exc.code == ErrorCode.TIMEOUT:
                await asyncio.sleep(0.5)  # Redis was unreachable a moment: again
                await self._subscribe_on(ws, sub)
                return
            del self._subs[sub.channel]
            sub._end(exc)
            if sub.subscribed or sub._ready.done():
                self._emit("error", exc)
            raise
        sub._in_flight = None
        if ws is not self._ws:
            return
        if self._subs.get(sub.channel) is not sub:
            # Unsubscribed while the subscribe was in flight: the server has it now, undo it.
            self._spawn(self._send(ws, {"op": "unsubscribe", "channel": sub.channel}))
            return
        sub._on_subscribed(result, since is not None)

    async def _restore(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Subscribe every channel again (with `since`) and join every room again."""
        jobs = [self._subscribe_on(ws, sub) for sub in list(self._subs.values())]
        jobs += [self._rejoin(ws, room) for room in list(self._rooms.values()) if room.joined]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        return not any(isinstance(r, BaseException) for r in results)

    async def unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub is None:
            return
        live = sub.subscribed
        sub._end(None)
        if self.state != "connected" or not live:
            return
        try:
            await self._send(self._ws, {"op": "unsubscribe", "channel": channel})
        except SwitchboardError as exc:
            if exc.code not in (ErrorCode.NOT_SUBSCRIBED, ErrorCode.CONNECTION_LOST):
                raise

    def subscription(self, channel: str) -> Subscription | None:
        return self._subs.get(channel)

    async def publish(self, channel: str, data: Any, *, event: str | None = None) -> dict[str, Any]:
        """Publish (namespaces with `allow_publish`); returns `{offset, epoch}`."""
        fields: dict[str, Any] = {"channel": channel, "data": data}
        if event is not None:
            fields["event"] = event
        result: dict[str, Any] = await self._call("publish", fields)
        return result

    async def history(
        self, channel: str, *, since: dict[str, str] | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """`{publications, offset, epoch}`; 112 when `since` is older than history holds."""
        fields: dict[str, Any] = {"channel": channel}
        if since is not None:
            fields["since"] = since
        if limit is not None:
            fields["limit"] = limit
        result: dict[str, Any] = await self._call("history", fields)
        return result

    async def presence(self, channel: str) -> dict[str, Any]:
        """`{client id: {user, client, name?, info?}}` of the channel's subscribers."""
        result = await self._call("presence", {"channel": channel})
        clients: dict[str, Any] = result["clients"]
        return clients

    async def rpc(
        self,
        method: str,
        data: Any = None,
        *,
        room: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Call a task of the handlers service; returns what it returned."""
        fields: dict[str, Any] = {"method": method, "data": data}
        if room is not None:
            fields["room"] = room
        return await self._call(
            "rpc", fields, self.rpc_timeout_s if timeout_s is None else timeout_s
        )

    async def ping(self) -> None:
        await self._call("ping", {})

    # -- rooms ----------------------------------------------------------------------------

    async def join_room(
        self,
        room_id: str,
        *,
        state: dict[str, Any] | None = None,
        on_change: Callable[[Room, RoomChange], object] | None = None,
    ) -> Room:
        """Join a room (`state`: its initial state if the join creates it). The Room is kept up
        to date by the room's pushes and joined again after a reconnect."""
        if room_id in self._rooms:
            raise SwitchboardError(ErrorCode.ALREADY_SUBSCRIBED, f"already in room {room_id}")
        room = Room(room_id, on_change)
        self._rooms[room_id] = room
        fields: dict[str, Any] = {"room": room_id}
        if state is not None:
            fields["state"] = state
        try:
            snapshot = await self._call("room.join", fields)
        except BaseException:
            if self._rooms.get(room_id) is room:
                del self._rooms[room_id]
            raise
        room.joined = True
        self._apply_snapshot(room, snapshot, "join")
        return room

    async def _rejoin(self, ws: aiohttp.ClientWebSocketResponse, room: Room) -> None:
        room.version = None  # the room may have been created again: its versions start over
        fields: dict[str, Any] = {"room": room.room}
        if isinstance(room.state, dict):
            fields["state"] = room.state
        try:
            snapshot = await self._send(ws, {"op": "room.join", **fields})
        except SwitchboardError as exc:
            if ws is not self._ws or self._rooms.get(room.room) is not room:
                return
            if exc.code == ErrorCode.ALREADY_SUBSCRIBED:
                snapshot = await self._send(ws, {"op": "room.get", "room": room.room})
            else:
                del self._rooms[room.room]
                room.joined = False
                self._emit("error", exc)
                raise
        self._apply_snapshot(room, snapshot, "rejoin")

    async def leave_room(self, room_id: str) -> dict[str, Any]:
        """Leave a room; returns its snapshot after leaving."""
        room = self._rooms.pop(room_id, None)
        if room is not None:
            room.joined = False
        try:
            result: dict[str, Any] = await self._call("room.leave", {"room": room_id})
        except SwitchboardError as exc:
            if exc.code == ErrorCode.NOT_SUBSCRIBED and room is not None:
                return room.snapshot()
            raise
        return result

    async def get_room(self, room_id: str) -> dict[str, Any]:
        """A room's snapshot, joined or not (version 0 and `{}` when it does not exist)."""
        result: dict[str, Any] = await self._call("room.get", {"room": room_id})
        return result

    def room(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    async def update_room(
        self,
        room_id: str,
        patch: Patch,
        *,
        version: int | bool | None = None,
        retries: int = 0,
    ) -> dict[str, Any]:
        """Merge `patch` into the room's state (JSON merge patch: None deletes a key) and
        return the room's snapshot after it.

        `patch` may be a function of the current state, called again after a conflict.
        `version`: a number, or True for the version this client has: the update applies only
        if the room is still there (else 113, carrying the current version and state).
        `retries`: how many conflicts to retry against the newer version before raising.
        """
        room = self._rooms.get(room_id)
        expected = (room.version if room else None) if version is True else version
        attempt = 0
        while True:
            room = self._rooms.get(room_id)
            if callable(patch):
                current = copy.deepcopy(room.state) if room and room.state is not None else {}
                body = patch(current)
            else:
                body = patch
            fields: dict[str, Any] = {"room": room_id, "patch": body}
            if expected is not None and expected is not False:
                fields["version"] = expected
            try:
                snapshot: dict[str, Any] = await self._call("room.update", fields)
            except SwitchboardError as exc:
                if exc.code != ErrorCode.CONFLICT or attempt >= retries:
                    raise
                attempt += 1
                expected = exc.version
                if room is not None:
                    conflict = {**room.snapshot(), "version": exc.version, "state": exc.state}
                    self._apply_snapshot(room, conflict, "conflict")
                continue
            if room is not None:
                self._apply_snapshot(room, snapshot, "update")
            return snapshot

    def on_room(self, callback: Callable[[Room, RoomChange], object]) -> Callable[[], None]:
        """`callback(room, change)` for every change of every joined room."""
        return self.on("room", callback)

    def _apply_snapshot(self, room: Room, snapshot: dict[str, Any], cause: str) -> None:
        version = snapshot.get("version")
        if not isinstance(version, int):
            return
        if room.version is not None and version < room.version:
            return
        changed = room.version != version
        room._replace(version, snapshot.get("state"), snapshot.get("people"))
        if changed or cause in ("join", "rejoin"):
            self._room_changed(room, RoomChange(room.room, version, cause, state=room.state))

    def _on_room_push(self, room: Room, push: dict[str, Any]) -> None:
        version = push.get("version")
        if not isinstance(version, int):
            return
        people = push.get("people")
        if push.get("deleted"):
            self._rooms.pop(room.room, None)
            room.joined = False
            room.deleted = True
            room._replace(version, None, people)
            self._room_changed(room, RoomChange(room.room, version, "deleted", deleted=True))
        elif "state" in push:
            if room.version is None or version > room.version:
                room._replace(version, push["state"], people)
                self._room_changed(room, RoomChange(room.room, version, "push", state=room.state))
        elif room.version is None or version <= room.version:
            return  # older, or before the join's reply (which carries a newer snapshot)
        elif version == room.version + 1:
            room._merge(version, push.get("patch"), people)
            self._room_changed(
                room, RoomChange(room.room, version, "push", patch=push.get("patch"))
            )
        else:
            self._spawn(self._read_room(room))  # a gap: read the whole room

    async def _read_room(self, room: Room) -> None:
        try:
            snapshot = await self._send(self._ws, {"op": "room.get", "room": room.room})
        except SwitchboardError as exc:
            self._emit("error", exc)
            return
        self._apply_snapshot(room, snapshot, "gap")

    def _room_changed(self, room: Room, change: RoomChange) -> None:
        room._changed(change)
        self._emit("room", room, change)


async def _call_getter(get_token: TokenGetter) -> str:
    token = get_token()
    if inspect.isawaitable(token):
        token = await token
    return token
