"""Bad input gets its precise reply or close code, and never disturbs other connections.

After each bad input a witness (another connection, or the same one where it stays open) still
receives a publication.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from services.common.errors import CloseCode, ErrorCode
from tests.conftest import Gateway
from tests.helpers import Client, open_client, still_delivers, upgrade_headers

StartGateway = Callable[..., Awaitable[Gateway]]

NAMESPACES = {
    "secret": {"subscribe": ["claim"]},
    "tok": {"subscribe": ["token"]},
    "chat": {"allow_publish": True},
    "nohist": {"history_size": 0},
    "nopres": {"presence": False},
}


@pytest.fixture
async def gw(
    start_gateway: StartGateway, channels_file: Callable[[dict[str, Any]], str]
) -> Gateway:
    return await start_gateway(SWITCHBOARD_CHANNELS=channels_file(NAMESPACES))


async def witness(gw: Gateway, user: str = "carol", channel: str = "news") -> Client:
    client = await gw.connect(user)
    await client.ok("subscribe", channel=channel)
    return client


async def orphan(client: Client) -> dict[str, Any]:
    """The next reply that carries no id (an error about a frame the server could not read)."""
    async with asyncio.timeout(2.0):
        return await client.orphans.get()


def error_code(reply: dict[str, Any]) -> int:
    assert "error" in reply, reply
    return int(reply["error"]["code"])


# -- frames the server cannot read ------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    ["{not json", '[{"id": 1, "op": "ping"}]', '"ping"', "42", "null"],
    ids=["malformed", "array", "string", "number", "null"],
)
async def test_frame_that_is_not_a_json_object_gets_107_then_4501(gw: Gateway, frame: str) -> None:
    bystander = await witness(gw)
    client = await witness(gw, "alice")
    await client.ws.send_str(frame)
    assert error_code(await orphan(client)) == ErrorCode.BAD_REQUEST
    assert await client.closed() == CloseCode.BAD_FRAME
    push = await client.push(kind="disconnect")
    assert (push["code"], push["reconnect"]) == (CloseCode.BAD_FRAME, False)
    await still_delivers(gw, bystander)


async def test_bad_line_in_a_multi_line_frame_stops_the_rest(gw: Gateway) -> None:
    bystander = await witness(gw)
    client = await gw.connect("alice")
    frame = '{"id": 1, "op": "ping"}\n{oops\n{"id": 2, "op": "subscribe", "channel": "news"}'
    await client.ws.send_str(frame)
    assert await client.closed() == CloseCode.BAD_FRAME
    replies = [client.orphans.get_nowait() for _ in range(client.orphans.qsize())]
    assert replies[0] == {"id": 1, "result": {}}
    assert error_code(replies[1]) == ErrorCode.BAD_REQUEST
    assert len(replies) == 2  # the subscribe after the bad line was not run
    await still_delivers(gw, bystander)


async def test_binary_frame_gets_4501(gw: Gateway) -> None:
    bystander = await witness(gw)
    client = await gw.connect("alice")
    await client.ws.send_bytes(json.dumps({"id": 1, "op": "ping"}).encode())
    assert error_code(await orphan(client)) == ErrorCode.BAD_REQUEST
    assert await client.closed() == CloseCode.BAD_FRAME
    await still_delivers(gw, bystander)


async def test_oversized_frame_is_closed_with_1009(start_gateway: StartGateway) -> None:
    gw = await start_gateway(GATEWAY_MAX_MESSAGE_BYTES="1024")
    bystander = await witness(gw)
    client = await gw.connect("alice")
    # Just under the limit is fine.
    fits = json.dumps({"id": 1, "op": "ping", "pad": ""})
    fits = json.dumps({"id": 1, "op": "ping", "pad": "x" * (1024 - len(fits))})
    assert len(fits) == 1024
    await client.ws.send_str(fits)
    assert await orphan(client) == {"id": 1, "result": {}}
    await client.ws.send_str(fits.replace('"pad": "', '"pad": "x'))  # one byte more
    assert await client.closed() == CloseCode.MESSAGE_TOO_BIG
    await still_delivers(gw, bystander)


# -- wrong fields: the connection stays usable ----------------------------------------------


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"op": "subscribe", "channel": 5}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe"}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe", "channel": "a b"}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe", "channel": "nope:x"}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe", "channel": "other", "since": "x"}, ErrorCode.BAD_REQUEST),
        ({"op": "subscribe", "channel": "other", "since": {"offset": 1}}, ErrorCode.BAD_REQUEST),
        ({"op": "subscribe", "channel": "other", "token": 5}, ErrorCode.BAD_REQUEST),
        ({"op": "history", "channel": "news", "limit": "5"}, ErrorCode.BAD_REQUEST),
        ({"op": "history", "channel": "news", "limit": -1}, ErrorCode.BAD_REQUEST),
        ({"op": "publish", "channel": "chat:a"}, ErrorCode.BAD_REQUEST),
        ({"op": "connect", "name": 5}, ErrorCode.BAD_REQUEST),
        ({"op": "refresh", "token": 5}, ErrorCode.BAD_REQUEST),
        ({"op": "nope"}, ErrorCode.METHOD_NOT_FOUND),
        ({"op": ["ping"]}, ErrorCode.METHOD_NOT_FOUND),
        ({}, ErrorCode.METHOD_NOT_FOUND),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(int(v)),
)
async def test_wrong_field_gets_its_code_and_the_connection_stays_usable(
    gw: Gateway, command: dict[str, Any], code: ErrorCode
) -> None:
    bystander = await witness(gw)
    client = await witness(gw, "alice")
    op = command.pop("op", None)
    if op is None:
        await client.ws.send_str(json.dumps({"id": 99, **command}))
        reply = await orphan(client)
        assert reply["id"] == 99
    else:
        reply = await client.call(op, **command)
    assert error_code(reply) == code
    await still_delivers(gw, client, bystander)
    await client.ok("subscribe", channel="other")  # a refused subscribe left nothing behind


@pytest.mark.parametrize("bad_id", [[1], {"a": 1}, True, 1.5])
async def test_id_of_the_wrong_type_gets_107_without_an_id(gw: Gateway, bad_id: Any) -> None:
    client = await witness(gw, "alice")
    await client.ws.send_str(json.dumps({"id": bad_id, "op": "ping"}))
    reply = await orphan(client)
    assert "id" not in reply
    assert error_code(reply) == ErrorCode.BAD_REQUEST
    await still_delivers(gw, client)


# -- channels: who may subscribe --------------------------------------------------------------


async def test_user_channels_belong_to_their_owner(gw: Gateway) -> None:
    bob = await witness(gw, "bob", channel="user:#bob")
    alice = await gw.connect("alice")
    assert error_code(await alice.call("subscribe", channel="user:#bob")) == 103
    assert error_code(await alice.call("history", channel="user:#bob")) == 103
    await alice.ok("subscribe", channel="user:#alice")
    await still_delivers(gw, alice, channel="user:#alice")
    await still_delivers(gw, bob, channel="user:#bob")


async def test_channels_claim_grants_a_claim_namespace(gw: Gateway, make_token: Any) -> None:
    bystander = await witness(gw)
    plain = await gw.connect("alice")
    assert error_code(await plain.call("subscribe", channel="secret:plans")) == 103
    claimed = await open_client(gw, make_token("alice", channels=["secret:*"]))
    await claimed.ok("subscribe", channel="secret:plans")
    await still_delivers(gw, claimed, channel="secret:plans")
    narrow = await open_client(gw, make_token("alice", channels=["secret:a"]))
    assert error_code(await narrow.call("subscribe", channel="secret:b")) == 103
    await still_delivers(gw, bystander)


async def test_channel_token_grants_its_channel_only(gw: Gateway, make_token: Any) -> None:
    bystander = await witness(gw)
    alice = await gw.connect("alice")
    assert error_code(await alice.call("subscribe", channel="tok:a")) == 103
    for token in (
        make_token("alice", channel="tok:b"),  # another channel
        make_token("bob", channel="tok:a"),  # another user
        make_token("alice", channel="tok:a", key="x" * 48),  # forged
        make_token("alice", channel="tok:a", ttl=-60),  # expired
        make_token("alice", channel="tok:a", ttl=None),  # never expires
    ):
        reply = await alice.call("subscribe", channel="tok:a", token=token)
        assert error_code(reply) == ErrorCode.PERMISSION_DENIED
    await alice.ok("subscribe", channel="tok:a", token=make_token("alice", channel="tok:a"))
    await still_delivers(gw, alice, channel="tok:a")
    await still_delivers(gw, bystander)


# -- client publish ---------------------------------------------------------------------------


async def test_client_publish_follows_the_namespace(gw: Gateway) -> None:
    bystander = await witness(gw)
    listener = await witness(gw, "bob", channel="chat:room")
    alice = await gw.connect("alice")
    reply = await alice.call("publish", channel="news", data={"t": 1})
    assert error_code(reply) == ErrorCode.PERMISSION_DENIED
    assert error_code(await alice.call("publish", channel="nope:x", data={})) == 102
    result = await alice.ok("publish", channel="chat:room", data={"t": 2})
    assert result["offset"]
    push = await listener.push()
    assert (push["offset"], push["data"]) == (result["offset"], {"t": 2})
    assert bystander.pushes.empty()  # the refused publication went nowhere
    await still_delivers(gw, bystander)


# -- limits -----------------------------------------------------------------------------------


async def test_subscription_limit(start_gateway: StartGateway) -> None:
    gw = await start_gateway(GATEWAY_MAX_SUBSCRIPTIONS="2")
    client = await gw.connect("alice")
    await client.ok("subscribe", channel="news")
    await client.ok("subscribe", channel="other")
    reply = await client.call("subscribe", channel="third")
    assert error_code(reply) == ErrorCode.LIMIT_EXCEEDED
    await still_delivers(gw, client)
    await still_delivers(gw, client, channel="other")
    # Room is made by leaving a channel.
    await client.ok("unsubscribe", channel="other")
    await client.ok("subscribe", channel="third")


async def test_connections_per_user_limit(start_gateway: StartGateway, make_token: Any) -> None:
    gw = await start_gateway(GATEWAY_MAX_CONNECTIONS_PER_USER="1")
    first = await witness(gw, "alice")
    bob = await witness(gw, "bob")

    # By header: refused before the upgrade.
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.http.session.ws_connect(gw.url("/ws"), headers=headers)
    assert info.value.status == 413
    async with gw.http.session.get(gw.url("/ws"), headers=upgrade_headers(headers)) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == ErrorCode.LIMIT_EXCEEDED

    # By `connect`: an error, then 4004.
    second = await open_client(gw)
    reply = await second.call("connect", token=make_token("alice"))
    assert error_code(reply) == ErrorCode.LIMIT_EXCEEDED
    assert await second.closed() == CloseCode.CONNECTION_LIMIT
    assert (await second.push(kind="disconnect"))["reconnect"] is True

    await still_delivers(gw, first, bob)
    # Once the first one is gone, alice may connect again.
    await first.close()
    third = await witness(gw, "alice")
    await still_delivers(gw, third, bob)


async def test_command_rate_limit(start_gateway: StartGateway) -> None:
    gw = await start_gateway(GATEWAY_COMMANDS_PER_S="1", GATEWAY_COMMAND_BURST="3")
    bystander = await witness(gw)  # one command spent
    client = await gw.connect("alice")
    for _ in range(3):
        assert await client.ok("ping") == {}
    reply = await client.call("ping")
    assert error_code(reply) == ErrorCode.TOO_MANY_REQUESTS
    assert reply["error"]["message"]

    # Far more than the burst in a row: closed, with a reconnect code.
    for n in range(20):
        await client.ws.send_str(json.dumps({"id": 100 + n, "op": "ping"}))
    assert await client.closed() == CloseCode.RATE_LIMITED
    assert (await client.push(kind="disconnect"))["reconnect"] is True
    await still_delivers(gw, bystander)  # a bucket of its own: 2 of its 3 commands spent


# -- subscription state -----------------------------------------------------------------------


async def test_subscribe_twice_and_unsubscribe_unknown(gw: Gateway) -> None:
    bystander = await witness(gw)
    client = await witness(gw, "alice")
    assert error_code(await client.call("subscribe", channel="news")) == 105
    assert error_code(await client.call("unsubscribe", channel="other")) == 110
    await still_delivers(gw, client, bystander)  # still subscribed once: exactly one push
    await client.ok("unsubscribe", channel="news")
    assert error_code(await client.call("unsubscribe", channel="news")) == 110
    await still_delivers(gw, bystander)
    assert client.pushes.empty()


async def test_history_and_presence_off_give_108(gw: Gateway) -> None:
    bystander = await witness(gw)
    client = await gw.connect("alice")
    assert error_code(await client.call("history", channel="nohist:a")) == 108
    assert error_code(await client.call("presence", channel="nopres:a")) == 108
    assert error_code(await client.call("presence", channel="user:#alice")) == 108
    # Without history, subscribing still works and live messages flow.
    await client.ok("subscribe", channel="nohist:a")
    await still_delivers(gw, client, channel="nohist:a")
    await still_delivers(gw, bystander)


# -- server API -------------------------------------------------------------------------------


async def test_server_api_errors(gw: Gateway, make_token: Any) -> None:
    bystander = await witness(gw)
    publish = {"channel": "news", "data": {"t": 1}}

    async def post(path: str, token: str | None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with gw.http.session.post(gw.url(path), headers=headers, **kw) as resp:
            return resp.status, await resp.json()

    cases: list[tuple[tuple[int, Any], int, int]] = [
        (await post("/api/publish", None, json=publish), 401, 101),
        (
            await post(
                "/api/publish", make_token("b", key="y" * 48, scope="publish"), json=publish
            ),
            401,
            101,
        ),
        (
            await post("/api/publish", make_token("b", ttl=-60, scope="publish"), json=publish),
            401,
            109,
        ),
        (await gw.api("POST", "/api/publish", scope="", json=publish), 403, 103),
        (await gw.api("POST", "/api/publish", scope="subscribe", json=publish), 403, 103),
        (await gw.api("POST", "/api/disconnect", json={"user": "carol"}), 403, 103),
        (await gw.api("POST", "/api/revoke", json={"jti": "x"}), 403, 103),
        (await gw.api("POST", "/api/publish", data=b"{nope"), 400, 107),
        (await gw.api("POST", "/api/publish", json=[publish]), 400, 107),
        (await gw.api("POST", "/api/publish", json={"channel": "nope:x", "data": {}}), 404, 102),
        (await gw.api("POST", "/api/publish", json={"data": {}}), 404, 102),
        (await gw.api("POST", "/api/publish", json={"channel": "news"}), 400, 107),
        (await gw.api("POST", "/api/publish", json={**publish, "event": 5}), 400, 107),
        (await gw.api("POST", "/api/disconnect", scope="admin", json={}), 400, 107),
        (await gw.api("POST", "/api/revoke", scope="admin", json={"jti": ""}), 400, 107),
    ]
    for n, ((status, body), want_status, want_code) in enumerate(cases):
        assert (status, body["error"]["code"]) == (want_status, want_code), (n, body)
    assert bystander.pushes.empty()  # nothing refused was published, nobody disconnected
    await still_delivers(gw, bystander)
