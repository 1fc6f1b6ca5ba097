"""The Socket.IO endpoint (Zou's event stream) with python-socketio's own client."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio

from services.gateway.socketio_server import socketio_key
from tests.helpers import wait_until

NS = "/events"


class Listener:
    """A python-socketio client on /events that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.disconnects: list[Any] = []
        self.client.on("*", self._any, namespace=NS)
        self.client.on("disconnect", self._disconnect, namespace=NS)

    async def _any(self, event: str, *args: Any) -> None:
        self.events.put_nowait((event, args[0] if len(args) == 1 else args))

    async def _disconnect(self, reason: Any = None) -> None:
        self.disconnects.append(reason)

    async def next(self, timeout_s: float = 5.0) -> tuple[str, Any]:
        async with asyncio.timeout(timeout_s):
            return await self.events.get()


@pytest.fixture
async def listen(make_token) -> AsyncIterator[Callable[..., Any]]:
    """`await listen(gw, sub="alice")`: a connected Listener (closed after the test)."""
    listeners: list[Listener] = []

    async def connect(gw: Any, sub: str = "alice", *, how: str = "header", **kw: Any) -> Listener:
        listener = Listener()
        listeners.append(listener)
        token = kw.pop("token", None) or make_token(sub)
        options: dict[str, Any] = {
            "namespaces": [NS],
            "transports": kw.pop("transports", ["websocket"]),
        }
        if how == "header":
            options["headers"] = {"Authorization": f"Bearer {token}"}
        elif how == "cookie":
            options["headers"] = {"Cookie": f"access_token_cookie={token}"}
        elif how == "auth":
            options["auth"] = {"token": token}
        await listener.client.connect(gw.url("/"), wait_timeout=5, **options, **kw)
        return listener

    yield connect
    for listener in listeners:
        await listener.client.disconnect()


async def publish(gw: Any, event: str | None, data: Any) -> None:
    body: dict[str, Any] = {"channel": "zou:events", "data": data}
    if event is not None:
        body["event"] = event
    status, reply = await gw.api("POST", "/api/publish", json=body)
    assert status == 200, reply


async def test_api_publication_reaches_a_websocket_client(start_gateway, listen):
    gw = await start_gateway()
    listener = await listen(gw)
    await publish(gw, "task:new", {"task_id": "t1", "project_id": "p1"})
    assert await listener.next() == ("task:new", {"task_id": "t1", "project_id": "p1"})


async def test_the_app_has_no_middleware_and_serves_socketio(start_gateway):
    gw = await start_gateway()
    assert len(gw.app.middlewares) == 0
    paths = {getattr(r.resource, "canonical", None) for r in gw.app.router.routes()}
    assert "/socket.io/" in paths


async def test_root_answers_as_zou_and_stats_count_socketio_sockets(start_gateway, listen):
    gw = await start_gateway()
    async with gw.http.session.get(gw.url("/")) as resp:
        assert (await resp.json())["name"] == "Zou Event stream"
    await listen(gw, "alice")
    await listen(gw, "bob")
    native = await gw.connect("carol")

    async def counted() -> bool:
        async with gw.http.session.get(gw.url("/stats")) as resp:
            body = await resp.json()
        return (
            body["nb_connections"],
            body["local_connections"],
            body["socketio_connections"],
        ) == (3, 3, 2)

    await wait_until(counted, what="3 connections, 2 of them Socket.IO")
    await native.close()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_count_socketio_sockets_events_and_preview_rooms(start_gateway, listen):
    gw = await start_gateway()
    alice, bob = await listen(gw, "alice"), await listen(gw, "bob")

    async def metrics() -> str:
        async with gw.http.session.get(gw.url("/metrics")) as resp:
            return await resp.text()

    for n in range(3):
        await publish(gw, "task:new", {"n": n})
    for listener in (alice, bob):
        assert [(await listener.next())[1] for _ in range(3)] == [{"n": n} for n in range(3)]
    text = await metrics()
    assert metric(text, "switchboard_gateway_socketio_connections") == 2
    assert metric(text, "switchboard_gateway_socketio_events_sent_total") == 6
    assert metric(text, "switchboard_gateway_preview_rooms") == 0
    # The audience of a preview room counts once its channels are subscribed (no rooms service
    # runs here: the room's people are never sent, the room is counted all the same).
    await alice.client.emit("preview-room:open-playlist", {"playlist_id": "pl1"}, namespace=NS)
    await wait_until(
        lambda: metrics_has(gw, "switchboard_gateway_preview_rooms 1.0"), what="one preview room"
    )


async def metrics_has(gw: Any, line: str) -> bool:
    async with gw.http.session.get(gw.url("/metrics")) as resp:
        return line in (await resp.text()).splitlines()


@pytest.mark.parametrize("how", ["header", "cookie", "auth"])
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_every_way_to_authenticate_on_every_transport(start_gateway, listen, how, transport):
    gw = await start_gateway()
    listener = await listen(gw, how=how, transports=[transport])
    await publish(gw, "comment:new", {"comment_id": "c1"})
    assert await listener.next() == ("comment:new", {"comment_id": "c1"})
    assert listener.client.transport() == transport


async def test_a_polling_client_that_upgrades_gets_everything_in_order(start_gateway, listen):
    gw = await start_gateway()
    listener = await listen(gw, transports=["polling", "websocket"])
    for n in range(200):
        await publish(gw, "task:update", {"n": n})
    assert [(await listener.next())[1]["n"] for _ in range(200)] == list(range(200))
    await wait_until(lambda: listener.client.transport() == "websocket", what="upgrade")


async def test_a_refused_token_gets_zous_connect_error(start_gateway, make_token):
    gw = await start_gateway()
    for token in [
        "",
        "not-a-jwt",
        make_token("alice", key="another-key-0123456789-0123456789-x"),
        make_token("alice", ttl=-60),
        make_token("alice", type="refresh"),
    ]:
        client = socketio.AsyncClient(reconnection=False)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with pytest.raises(socketio.exceptions.ConnectionError, match="namespaces failed"):
            await client.connect(gw.url("/"), headers=headers, namespaces=[NS], wait_timeout=5)
        await client.disconnect()
    # What goes over the wire, read with plain long-polling requests.
    session = gw.http.session
    async with session.get(gw.url("/socket.io/?EIO=4&transport=polling")) as resp:
        opened = await resp.text()
    assert opened[0] == "0"
    sid = json.loads(opened[1:])["sid"]
    assert json.loads(opened[1:])["pingInterval"] == 25000
    assert json.loads(opened[1:])["pingTimeout"] == 20000
    assert json.loads(opened[1:])["maxPayload"] == 1000000
    url = gw.url(f"/socket.io/?EIO=4&transport=polling&sid={sid}")
    async with session.post(url, data="40/events,") as resp:
        assert resp.status == 200
    async with session.get(url) as resp:
        assert await resp.text() == '44/events,{"message":"Connection rejected by server"}'
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_revocation_closes_the_connection_and_tells_the_client_not_to_reconnect(
    start_gateway, listen, make_token
):
    gw = await start_gateway()
    token = make_token("alice", jti="j1")
    revoked = await listen(gw, token=token)
    other = await listen(gw, "bob")
    status, body = await gw.api("POST", "/api/revoke", scope="admin", json={"jti": "j1"})
    assert status == 200, body
    await wait_until(lambda: revoked.disconnects, what="revoked socket closed")
    assert revoked.disconnects == [socketio.AsyncClient.reason.SERVER_DISCONNECT]
    await publish(gw, "task:new", {"task_id": "t2"})
    assert await other.next() == ("task:new", {"task_id": "t2"})
    assert revoked.events.empty()
    # Zou's own revocation (`<jti>` = "true" in DB 0) refuses the token from now on too.
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            gw.url("/"),
            headers={"Authorization": f"Bearer {token}"},
            namespaces=[NS],
            wait_timeout=5,
        )


async def test_zou_revoked_jti_is_refused(start_gateway, redis_server, listen, make_token):
    gw = await start_gateway()
    from redis.asyncio import Redis

    zou = Redis.from_url(redis_server.url, db=0)
    await zou.set("zj", "true")
    await zou.aclose()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await listen(gw, token=make_token("alice", jti="zj"))


async def test_disconnecting_a_user_closes_their_socketio_connections(start_gateway, listen):
    gw = await start_gateway()
    alice = await listen(gw, "alice")
    status, body = await gw.api("POST", "/api/disconnect", scope="admin", json={"user": "alice"})
    assert status == 200, body
    await wait_until(lambda: alice.disconnects, what="alice disconnected")


async def test_expiry_closes_the_connection(start_gateway, listen, make_token):
    gw = await start_gateway()
    listener = await listen(gw, token=make_token("alice", ttl=1))
    await wait_until(lambda: listener.disconnects, timeout_s=5, what="expired socket closed")
    assert gw.app[socketio_key].sockets == {}


async def test_project_scoping(start_gateway, listen, make_token):
    gw = await start_gateway(ZOU_PROJECT_SCOPING="1")
    scoped = await listen(gw, token=make_token("vendor", projects=["p1"]))
    everyone = await listen(gw, "admin")
    await publish(gw, "task:new", {"task_id": "a", "project_id": "p2"})
    await publish(gw, "task:new", {"task_id": "b", "project_id": "p1"})
    await publish(gw, "person:new", {"person_id": "c"})
    assert [(await scoped.next())[1] for _ in range(2)] == [
        {"task_id": "b", "project_id": "p1"},
        {"person_id": "c"},
    ]
    assert [(await everyone.next())[1].get("task_id", "c") for _ in range(3)] == ["a", "b", "c"]


async def test_nameless_and_reserved_publications_are_not_sent(start_gateway, listen):
    gw = await start_gateway()
    listener = await listen(gw)
    await publish(gw, None, {"x": 1})
    await publish(gw, "disconnect", {"x": 2})
    await publish(gw, "task:new", {"x": 3})
    assert await listener.next() == ("task:new", {"x": 3})


async def test_native_unsubscribe_from_zou_events_keeps_socketio_delivery(start_gateway, listen):
    gw = await start_gateway()
    listener = await listen(gw)
    native = await gw.connect("bob")
    await native.ok("subscribe", channel="zou:events")
    await native.ok("unsubscribe", channel="zou:events")
    await publish(gw, "task:new", {"x": 1})
    assert await listener.next() == ("task:new", {"x": 1})
    await native.close()


# -- the bridge from Zou's publisher -------------------------------------------------------


async def test_zou_emits_reach_socketio_and_native_subscribers(
    start_gateway, listen, zou_publisher
):
    gw = await start_gateway()
    listener = await listen(gw)
    native = await gw.connect("bob")
    await native.ok("subscribe", channel="zou:events")
    await zou_publisher.emit("task:new", {"task_id": "t1", "project_id": "p1"}, namespace=NS)
    assert await listener.next() == ("task:new", {"task_id": "t1", "project_id": "p1"})
    push = await native.push()
    assert push == {
        "push": "pub",
        "channel": "zou:events",
        "event": "task:new",
        "data": {"task_id": "t1", "project_id": "p1"},
    }
    await native.close()


async def test_bridge_delivers_everything_in_order(start_gateway, listen, zou_publisher):
    gw = await start_gateway()
    listeners = [
        await listen(gw, f"u{i}", transports=[t])
        for i, t in enumerate(["websocket", "polling", "websocket"])
    ]
    for n in range(300):
        await zou_publisher.emit("task:update", {"n": n}, namespace=NS)
    for listener in listeners:
        assert [(await listener.next())[1]["n"] for _ in range(300)] == list(range(300))


async def test_bridge_formats_and_refusals(start_gateway, listen, redis, caplog):
    gw = await start_gateway()
    listener = await listen(gw)
    endpoint = gw.app[socketio_key]

    def emit(**fields: Any) -> bytes:
        message = {
            "method": "emit",
            "event": "task:new",
            "data": [{"a": 1}],
            "namespace": NS,
            "room": None,
            "skip_sid": None,
            "callback": None,
            "host_id": "zou",
        }
        message.update(fields)
        return json.dumps(message).encode()

    import pickle

    caplog.set_level(logging.WARNING, logger="services.gateway.socketio_server")
    await redis.publish("flask-socketio", pickle.dumps({"method": "emit", "event": "x"}))
    await redis.publish("flask-socketio", b"not json")
    await redis.publish("flask-socketio", emit(host_id=endpoint.host_id, data=[{"own": 1}]))
    await redis.publish("flask-socketio", emit(method="enter_room", data=[{"room": 1}]))
    await redis.publish("flask-socketio", emit(room="playlist-1", data=[{"room": 1}]))
    await redis.publish(
        "flask-socketio", emit(skip_sid=listener.client.get_sid(NS), data=[{"s": 1}])
    )
    await redis.publish("flask-socketio", emit(data={"bare": 1}))  # python-socketio < 5.16
    await redis.publish("flask-socketio", emit(data=[{"one": 1}, {"two": 2}]))
    assert await listener.next() == ("task:new", {"bare": 1})
    assert await listener.next() == ("task:new", ({"one": 1}, {"two": 2}))
    assert endpoint.bridge_errors == 2
    assert any("zou bridge message ignored" in r.getMessage() for r in caplog.records)


async def test_bridge_can_be_turned_off_or_moved(start_gateway, listen, redis):
    message = json.dumps(
        {
            "method": "emit",
            "event": "e",
            "data": [1],
            "namespace": NS,
            "room": None,
            "host_id": "zou",
        }
    )
    off = await start_gateway(ZOU_BRIDGE="0")
    moved = await start_gateway(ZOU_BRIDGE_CHANNEL="zou-events-2")
    a, b = await listen(off), await listen(moved)
    await redis.publish("flask-socketio", message)
    await redis.publish("zou-events-2", message.replace('"e"', '"moved"'))
    await publish(off, "done", 0)
    assert await b.next() == ("moved", 1)
    assert await a.next() == ("done", 0)
    assert await b.next() == ("done", 0)


async def test_a_stalled_socketio_reader_is_dropped_while_the_others_get_everything(
    start_gateway, listen, make_token
):
    from tests.gateway.wsclients import OP_TEXT, RawWebSocket

    gw = await start_gateway(GATEWAY_OUTBOX_MAX_BYTES=str(256 * 1024))
    endpoint = gw.app[socketio_key]
    stalled = await RawWebSocket.open(
        gw.http.port,
        "/socket.io/?EIO=4&transport=websocket",
        token=make_token("stalled"),
        rcvbuf=4096,
    )
    try:
        assert (await stalled.recv_frame())[1][:1] == b"0"  # Engine.IO OPEN
        await stalled.send_frame(OP_TEXT, b"40/events,")
        assert (await stalled.recv_frame())[1].startswith(b"40/events,")
        healthy = [await listen(gw, f"user{i}") for i in range(20)]
        pad = "x" * 65536
        for n in range(60):
            await publish(gw, "task:update", {"n": n, "pad": pad})
        for listener in healthy:
            assert [(await listener.next())[1]["n"] for _ in range(60)] == list(range(60))
        await wait_until(lambda: endpoint.slow_consumers == 1, what="stalled reader dropped")
        await wait_until(lambda: len(endpoint.sockets) == 20, what="its socket forgotten")
    finally:
        stalled.close()


async def test_connections_per_user_are_limited(start_gateway, listen):
    gw = await start_gateway(GATEWAY_MAX_CONNECTIONS_PER_USER="2")
    await listen(gw, "alice")
    await listen(gw, "alice")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await listen(gw, "alice")
    await listen(gw, "bob")
