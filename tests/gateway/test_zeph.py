"""`/zeph`: Zephclient's framing, spoken by a real WebSocket client (the `websockets` package)."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import websockets

from tests.conftest import ServiceProcess, gateway_env, launch_service, stop_services
from tests.helpers import clean_env, free_port, wait_until


class Zeph:
    """What Zephclient sends and receives, over one socket."""

    def __init__(self, ws: Any, session: str) -> None:
        self.ws = ws
        self.session = session

    async def join(self, room: str) -> None:
        await self.ws.send(json.dumps({"session_id": self.session, "room": room}))

    async def send(self, task: str, data: Any) -> None:
        frame = {"task": task, "data": data, "room": "ignored", "session_id": self.session}
        await self.ws.send(json.dumps({**frame, "date": int(time.time() * 1000)}))

    async def recv(self, timeout_s: float = 5.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))  # type: ignore[no-any-return]

    async def until(self, **match: Any) -> dict[str, Any]:
        while True:
            frame = await self.recv()
            if all(frame.get(k) == v for k, v in match.items()):
                return frame


async def open_zeph(gw: Any, token: str) -> Zeph:
    ws = await websockets.connect(gw.url("/zeph").replace("http", "ws", 1))
    return Zeph(ws, token)


async def test_join_leave_and_user_lists_span_two_gateways(start_gateway, make_token):
    one, two = await start_gateway(), await start_gateway()
    alice = await open_zeph(one, make_token("alice", info={"name": "Alice"}))
    bob = await open_zeph(two, make_token("bob"))
    await alice.join("https://example.org/page")
    assert await alice.recv() == {
        "msgtype": "join",
        "username": "Alice",
        "data": " joined the chat room.",
    }
    assert await alice.recv() == {"msgtype": "user_list", "data": ["Alice"]}
    await bob.join("https://example.org/page")
    assert (await alice.until(msgtype="join"))["username"] == "bob"
    assert (await alice.until(msgtype="user_list"))["data"] == ["Alice", "bob"]
    assert (await bob.until(msgtype="user_list"))["data"] == ["Alice", "bob"]
    await bob.ws.close()
    assert await alice.until(msgtype="leave") == {
        "msgtype": "leave",
        "username": "bob",
        "data": " left the chat room.",
    }
    assert (await alice.until(msgtype="user_list"))["data"] == ["Alice"]
    await alice.ws.close()


async def test_tasks_get_answers_or_error_frames_never_silence(start_gateway, make_token, redis):
    gw = await start_gateway(GATEWAY_RPC_TIMEOUT_S="0.5")
    zeph = await open_zeph(gw, make_token("alice"))
    await zeph.send("TaskEcho", {"a": 1})  # before the join
    assert (await zeph.recv())["error"]["code"] == 107
    await zeph.join("room-1")
    await zeph.until(msgtype="user_list")
    await zeph.send("TaskPing", {})  # Zephclient's keep-alive: no answer, as in Zephserver
    await zeph.send("TaskEcho", {"a": 1})  # no handlers service runs: the caller hears so
    frame = await zeph.recv()
    assert frame["task"] == "TaskEcho" and frame["error"]["code"] == 114
    [(_, fields)] = await redis.xrange("sb:rpc")
    call = json.loads(fields[b"c"])
    assert (call["method"], call["data"], call["room"], call["user"]) == (
        "TaskEcho",
        {"a": 1},
        "room-1",  # the joined room, not the one the frame claims
        "alice",
    )
    await zeph.ws.close()


async def test_bad_sessions_and_frames_get_an_error_frame_and_a_close_code(
    start_gateway, make_token
):
    gw = await start_gateway()
    cases = [
        (json.dumps({"session_id": "forged", "room": "r"}), 101, 4500),
        (json.dumps({"session_id": make_token("alice", ttl=-60), "room": "r"}), 109, 4001),
        ("{not json", 107, 4501),
        ("[1, 2]", 107, 4501),
    ]
    for raw, code, close in cases:
        ws = await websockets.connect(gw.url("/zeph").replace("http", "ws", 1))
        await ws.send(raw)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["error"]["code"] == code, raw
        await wait_until(lambda: ws.close_code is not None, what="closed")  # noqa: B023
        assert ws.close_code == close, raw
    # A missing session is an error but not a reason to drop a socket that never joined.
    zeph = await open_zeph(gw, make_token("alice"))
    await zeph.ws.send(json.dumps({"room": "r"}))
    assert (await zeph.recv())["error"]["code"] == 101
    await zeph.join("r")
    assert (await zeph.until(msgtype="user_list"))["data"] == ["alice"]
    await zeph.ws.close()


TASKS = {
    "task_TaskEcho.py": """
def run(request):
    return {"said": request.data, "by": request.user, "room": request.room}
""",
    "task_TaskFail.py": """
def run(request):
    raise ValueError("the render farm is down")
""",
}


async def start_handlers(redis_url: str, tmp_path: Path, tasks: dict[str, str]) -> ServiceProcess:
    """A real handlers service running `tasks` (file name -> source)."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, source in tasks.items():
        (folder / name).write_text(source)
    port = free_port()
    env = clean_env()
    env.update(
        gateway_env(
            redis_url,
            HANDLERS_PORT=str(port),
            HANDLERS_HOST="127.0.0.1",
            HANDLERS_BLOCK_MS="100",
            TASKS_FOLDER=str(folder),
            EVENT_HANDLERS_FOLDER=str(tmp_path / "none"),
        )
    )
    return await launch_service("services.handlers", env, port)


async def test_a_zephclient_session_runs_tasks_in_the_handlers_service(
    start_gateway, make_token, redis_server, tmp_path
):
    handlers = await start_handlers(redis_server.url, tmp_path, TASKS)
    try:
        gw = await start_gateway()
        zeph = await open_zeph(gw, make_token("alice"))
        await zeph.join("review")
        assert (await zeph.until(msgtype="user_list"))["data"] == ["alice"]
        await zeph.send("TaskEcho", {"text": "hello"})
        assert await zeph.recv() == {
            "task": "TaskEcho",
            "data": {"said": {"text": "hello"}, "by": "alice", "room": "review"},
        }
        await zeph.send("TaskFail", {})
        failed = await zeph.recv()
        assert failed["task"] == "TaskFail" and failed["error"]["code"] == 115
        assert "render farm" in failed["error"]["message"]
        await zeph.send("TaskNobodyWrote", {})
        unknown = await zeph.recv()
        assert unknown["task"] == "TaskNobodyWrote" and unknown["error"]["code"] == 104
        await zeph.ws.close()
    finally:
        stop_services([handlers])


async def test_a_task_sends_to_everyone_in_the_room_on_every_gateway(
    start_gateway, make_token, redis_server, tmp_path
):
    chat = (
        "from services.handlers.api import send_to_room\n\n"
        "def run(request):\n"
        "    send_to_room(request.room, 'TaskChat', {'from': request.user, 'text': request.data})\n"
        "    return 'sent'\n"
    )
    handlers = await start_handlers(redis_server.url, tmp_path, {"task_TaskChat.py": chat})
    try:
        one, two = await start_gateway(), await start_gateway()
        alice = await open_zeph(one, make_token("alice"))
        bob = await open_zeph(two, make_token("bob"))
        carol = await open_zeph(two, make_token("carol"))
        for zeph, room in ((alice, "chat"), (bob, "chat"), (carol, "elsewhere")):
            await zeph.join(room)
            await zeph.until(msgtype="user_list")
        await alice.send("TaskChat", "hello")
        said = {"task": "TaskChat", "data": {"from": "alice", "text": "hello"}}
        assert await alice.until(task="TaskChat") in (said, {"task": "TaskChat", "data": "sent"})
        assert await bob.until(task="TaskChat") == said
        for zeph in (alice, bob, carol):
            await zeph.ws.close()
    finally:
        stop_services([handlers])
