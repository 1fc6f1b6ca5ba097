"""Test helpers (no fixtures): waiting for conditions, free ports, a native-protocol client."""

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 5.0, what: str = ""
) -> None:
    """Poll `predicate` until it is true; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment minus settings from the developer's shell."""
    prefixes = (
        "SWITCHBOARD_",
        "SUPERVISOR_",
        "REDIS_",
        "KV_",
        "JWT_",
        "GATEWAY_",
        "EVENT_STREAM_",
        "LOG_",
        "ROOMS_",
        "STREAMS_",
        "FRAMES_",
        "HANDLERS_",
        "CLUSTER_",
    )
    names = {"SECRET_KEY", "EVENT_HANDLERS_FOLDER", "TASKS_FOLDER"}
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`switchboard <args>` as a user runs it (`python -m services`), from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


class Client:
    """A native-protocol client over a real aiohttp WebSocket; keeps pushes apart from replies."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.orphans: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # errors without an id
        self._next = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            for line in msg.data.split("\n"):
                obj = json.loads(line)
                if "push" in obj:
                    self.pushes.put_nowait(obj)
                elif obj.get("id") in self._replies:
                    self._replies.pop(obj["id"]).set_result(obj)
                else:
                    self.orphans.put_nowait(obj)

    async def call(self, op: str, timeout_s: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send a command and return its whole reply (`result` or `error`)."""
        self._next += 1
        cmd_id = self._next
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cmd_id] = future
        await self.ws.send_str(json.dumps({"id": cmd_id, "op": op, **fields}))
        async with asyncio.timeout(timeout_s):
            return await future

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.call(op, **fields)
        assert "result" in reply, reply
        return reply["result"]  # type: ignore[no-any-return]

    async def push(self, timeout_s: float = 5.0, kind: str | None = "pub") -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                obj = await self.pushes.get()
                if kind is None or obj["push"] == kind:
                    return obj

    async def closed(self, timeout_s: float = 5.0) -> int | None:
        """Wait for the server to close the socket; return the close code."""
        async with asyncio.timeout(timeout_s):
            await self._reader
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


# -- gateway conveniences (`gw` is a tests.conftest.Gateway) -----------------------------------


def upgrade_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers of a WebSocket upgrade request, for a plain HTTP client to read the refusal."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **headers,
    }


async def open_client(gw: Any, token: str | None = None, **headers: str) -> Client:
    """A `/ws` client authenticated by `token` in a header, or not at all."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return Client(await gw.http.session.ws_connect(gw.url("/ws"), headers=headers))


async def still_delivers(gw: Any, *clients: Client, channel: str = "news") -> None:
    """Each of `clients` is open, answers a ping, and receives one new publication on `channel`."""
    data = {"n": os.urandom(8).hex()}
    status, body = await gw.api("POST", "/api/publish", json={"channel": channel, "data": data})
    assert status == 200, body
    for client in clients:
        push = await client.push(timeout_s=2.0)
        assert (push["channel"], push["offset"], push["data"]) == (channel, body["offset"], data)
        assert await client.ok("ping") == {}


# RFC 7386 (JSON merge patch), appendix A: (target, patch, result). The rooms service and both
# clients apply merge patches; all are held to these.
RFC_7386: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]
