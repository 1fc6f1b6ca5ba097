"""Publications that name an event reach the handlers' stream `sb:events`, exactly once."""

import json
from typing import Any

from services.gateway.socketio_server import socketio_key
from tests.helpers import wait_until


async def events(redis: Any) -> list[dict[str, Any]]:
    entries = await redis.xrange("sb:events")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_server_api_publish_and_broadcast_with_an_event_are_recorded(gateway, redis):
    status, _ = await gateway.api(
        "POST", "/api/publish", json={"channel": "news", "data": {"id": 1}, "event": "task:new"}
    )
    assert status == 200
    status, _ = await gateway.api(
        "POST",
        "/api/broadcast",
        json={"channels": ["a", "b"], "data": [1], "event": "comment:new"},
    )
    assert status == 200
    await gateway.api("POST", "/api/publish", json={"channel": "news", "data": {"no": "event"}})
    got = await events(redis)
    assert [(e["event"], e["channel"], json.loads(e["data"]), e["source"]) for e in got] == [
        ("task:new", "news", {"id": 1}, "api"),
        ("comment:new", "a", [1], "api"),
        ("comment:new", "b", [1], "api"),
    ]
    assert all(int(e["ts"]) > 0 for e in got)


async def test_client_publish_is_recorded_only_where_the_namespace_says_so(
    start_gateway, channels_file, redis
):
    path = channels_file(
        {
            "chat": {"allow_publish": True, "events": True},
            "quiet": {"allow_publish": True},
        }
    )
    gw = await start_gateway(SWITCHBOARD_CHANNELS=path)
    client = await gw.connect("alice")
    await client.ok("publish", channel="chat:1", data={"t": "hi"}, event="chat:message")
    await client.ok("publish", channel="quiet:1", data={"t": "hi"}, event="chat:message")
    await client.ok("publish", channel="chat:1", data={"t": "no event"})
    reply = await client.call("publish", channel="chat:1", data={}, event=7)
    assert reply["error"]["code"] == 107
    got = await events(redis)
    assert [(e["event"], e["channel"], e["source"]) for e in got] == [
        ("chat:message", "chat:1", "client")
    ]
    await client.close()


async def test_zou_emits_are_recorded_once_whatever_the_number_of_gateways(
    start_gateway, zou_publisher, redis
):
    gateways = [await start_gateway(), await start_gateway()]

    async def one_writer() -> bool:
        holders = [gw.app[socketio_key].events.holder for gw in gateways]
        return holders.count(True) == 1

    await wait_until(one_writer, what="one gateway holds the writer lease")
    await zou_publisher.emit("task:new", {"task_id": "t1", "project_id": "p1"}, namespace="/events")
    await zou_publisher.emit("task:update", {"task_id": "t1"}, namespace="/events")
    await zou_publisher.emit("chat", {"to": "room"}, namespace="/chat")  # not Zou's events

    async def both() -> bool:
        return len(await events(redis)) >= 2

    await wait_until(both, what="both events recorded")
    # Both gateways received both emits before the sentinel; the sentinel comes after them.
    await zou_publisher.emit("sentinel", {}, namespace="/events")
    await wait_until(lambda: _has(redis, "sentinel"), what="sentinel recorded")
    got = (await events(redis))[:-1]
    assert [(e["event"], json.loads(e["data"]), e["source"]) for e in got] == [
        ("task:new", {"task_id": "t1", "project_id": "p1"}, "zou"),
        ("task:update", {"task_id": "t1"}, "zou"),
    ]


async def _has(redis: Any, name: str) -> bool:
    return any(e["event"] == name for e in await events(redis))
