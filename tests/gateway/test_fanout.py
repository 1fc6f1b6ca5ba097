"""Fan-out guarantees: a stalled reader is cut off without slowing the others; exactly-once
in-order delivery per subscriber across channels; presence and join/leave pushes."""

import asyncio
import json
from typing import Any

import aiohttp

from services.common.bus import encode_data
from services.gateway.keys import node_key
from tests.gateway.wsclients import OP_CLOSE, OP_TEXT, RawWebSocket, close_code
from tests.helpers import Client, wait_until

PAD = "x" * 65536  # 64 KB per message: a stalled socket's kernel buffers fill after a few dozen


async def _metric(gw: Any, name: str) -> float | None:
    # A session of its own: the gateway fixture's session is limited to 100 connections.
    async with aiohttp.ClientSession() as session, session.get(gw.url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_stalled_reader_is_cut_off_while_100_others_keep_full_speed(
    start_gateway, channels_file, make_token
):
    gw = await start_gateway(
        SWITCHBOARD_CHANNELS=channels_file({"fan": {"history_size": 0, "presence": False}}),
        GATEWAY_OUTBOX_MAX_BYTES=str(256 * 1024),
    )
    node = gw.app[node_key]
    channel = "fan:big"
    namespace = node.settings.namespaces.of(channel)

    stalled = await RawWebSocket.open(gw.http.port, token=make_token("stalled"), rcvbuf=4096)
    try:
        stalled_id = (await stalled.call("connect"))["result"]["client"]
        reply = await stalled.call("subscribe", channel=channel)
        assert "result" in reply, reply

        healthy = [await gw.connect(f"user{i}") for i in range(100)]
        for client in healthy:
            await client.ok("subscribe", channel=channel)
        assert node.hub.subscribers(channel) == 101

        received: list[list[int]] = [[] for _ in healthy]
        counts: dict[int, int] = {}
        everyone: dict[int, asyncio.Event] = {}

        async def consume(index: int, client: Client) -> None:
            while True:
                push = await client.pushes.get()
                if push["push"] != "pub":
                    continue
                seq = push["data"]["seq"]
                received[index].append(seq)
                counts[seq] = counts.get(seq, 0) + 1
                if counts[seq] == len(healthy):
                    everyone.setdefault(seq, asyncio.Event()).set()

        consumers = [asyncio.create_task(consume(i, c)) for i, c in enumerate(healthy)]

        drained: list[tuple[int, bytes]] = []

        async def drain_stalled() -> None:
            # Once the server gave up on it, read everything it had sent, up to its close frame.
            while True:
                opcode, payload = await stalled.recv_frame(timeout_s=10)
                drained.append((opcode, payload))
                if opcode == OP_CLOSE:
                    await stalled.send_frame(OP_CLOSE, payload[:2])
                    return

        seq = 0
        cut_at: int | None = None
        drainer: asyncio.Task[None] | None = None
        try:
            while cut_at is None or seq < cut_at + 30:
                assert seq < 600, "the stalled reader was never cut off"
                data = encode_data({"seq": seq, "pad": PAD})
                await node.bus.publish(channel, data, namespace)
                event = everyone.setdefault(seq, asyncio.Event())
                try:
                    async with asyncio.timeout(10):
                        await event.wait()
                except TimeoutError:
                    late = [i for i, r in enumerate(received) if not r or r[-1] != seq]
                    codes = {i: healthy[i].ws.close_code for i in late[:5]}
                    raise AssertionError(
                        f"publication {seq} did not reach {len(late)} healthy clients "
                        f"(close codes {codes}); slow consumers: {node.slow_consumers}"
                    ) from None
                seq += 1
                if cut_at is None and node.slow_consumers:
                    cut_at = seq
                    drainer = asyncio.create_task(drain_stalled())
        finally:
            for task in consumers:
                task.cancel()

        # Every healthy subscriber got every publication, once, in order.
        for index, seqs in enumerate(received):
            assert seqs == list(range(seq)), f"client {index} got {len(seqs)} of {seq}"
        assert node.slow_consumers == 1, "only the stalled reader may be cut off"
        assert all(not c.ws.closed for c in healthy)

        # The stalled reader, once it reads again, finds a prefix of the publications, then the
        # slow-consumer disconnect push and a close frame with code 4002.
        assert drainer is not None
        await drainer
        texts = [p for op, p in drained if op == OP_TEXT]
        closes = [p for op, p in drained if op == OP_CLOSE]
        assert closes and close_code(closes[0]) == 4002, closes
        objects = [json.loads(line) for p in texts for line in p.split(b"\n") if line]
        assert objects[-1]["push"] == "disconnect", objects[-1]
        assert objects[-1]["code"] == 4002 and objects[-1]["reconnect"] is True
        pubs = [o["data"]["seq"] for o in objects if o.get("push") == "pub"]
        assert pubs == sorted(set(pubs)), "the stalled reader's frames were reordered"

        await wait_until(lambda: stalled_id not in node.connections, what="stalled conn gone")
        assert len(node.connections) == len(healthy)
        assert await _metric(gw, "switchboard_gateway_slow_consumers_total") == 1.0
        for client in healthy:
            await client.close()
    finally:
        stalled.close()


# -- exactly once, in order, several channels ------------------------------------------------


async def test_each_publication_reaches_each_subscriber_once_in_order_on_many_channels(
    start_gateway, channels_file
):
    path = channels_file({"multi": {"history_size": 1000, "presence": False}})
    gateways = [await start_gateway(SWITCHBOARD_CHANNELS=path) for _ in range(2)]
    node = gateways[0].app[node_key]
    channels = [f"multi:{name}" for name in "abcd"]
    per_channel = 150

    # Twelve sockets over two gateways, each on its own mix of channels (two on all four).
    clients: list[tuple[Client, list[str]]] = []
    for i in range(12):
        mine = (
            channels if i < 2 else [c for j, c in enumerate(channels) if (i >> j) & 1 or j == i % 4]
        )
        client = await gateways[i % 2].connect(f"user{i}")
        for channel in mine:
            await client.ok("subscribe", channel=channel)
        clients.append((client, mine))

    async def publish_all(channel: str) -> list[str]:
        namespace = node.settings.namespaces.of(channel)
        offsets = []
        for seq in range(per_channel + 1):  # the last one marks the end
            data = encode_data({"channel": channel, "seq": seq})
            offsets.append((await node.bus.publish(channel, data, namespace)).offset)
        return offsets

    published = dict(
        zip(channels, await asyncio.gather(*(publish_all(c) for c in channels)), strict=True)
    )

    for client, mine in clients:
        got: dict[str, list[dict[str, Any]]] = {c: [] for c in mine}
        ended: set[str] = set()
        async with asyncio.timeout(10):
            while ended != set(mine):
                push = await client.push(kind=None)
                assert push["push"] == "pub", push
                assert push["channel"] in got, f"push for a channel not subscribed: {push}"
                assert push["data"]["channel"] == push["channel"]
                got[push["channel"]].append(push)
                if push["data"]["seq"] == per_channel:
                    ended.add(push["channel"])
        for channel in mine:
            seqs = [p["data"]["seq"] for p in got[channel]]
            assert seqs == list(range(per_channel + 1)), (channel, seqs)
            assert [p["offset"] for p in got[channel]] == published[channel]
        assert client.pushes.empty(), client.pushes.get_nowait()
        await client.close()


# -- presence ----------------------------------------------------------------------------------


ROOMS = {"chat": {"presence": True, "join_leave": True, "history_size": 0}}


async def test_join_and_leave_pushes(start_gateway, channels_file):
    gw = await start_gateway(SWITCHBOARD_CHANNELS=channels_file(ROOMS))
    alice = await gw.connect("alice")
    await alice.ok("subscribe", channel="chat:1")
    assert (await alice.push(kind="join"))["info"]["user"] == "alice"  # her own

    bob = await gw.connect("bob")
    bob_id = (await bob.ok("connect", name="Bob"))["client"]
    bob_info = {"user": "bob", "client": bob_id, "name": "Bob"}
    await bob.ok("subscribe", channel="chat:1")
    assert await alice.push(kind=None) == {"push": "join", "channel": "chat:1", "info": bob_info}

    await bob.ok("unsubscribe", channel="chat:1")
    assert await alice.push(kind=None) == {"push": "leave", "channel": "chat:1", "info": bob_info}

    await bob.ok("subscribe", channel="chat:1")
    assert (await alice.push(kind=None))["push"] == "join"
    await bob.close()  # a socket that goes away leaves too
    assert await alice.push(kind=None) == {"push": "leave", "channel": "chat:1", "info": bob_info}
    await alice.close()


async def test_no_join_leave_pushes_where_the_namespace_has_them_off(gateway):
    alice = await gateway.connect("alice")
    await alice.ok("subscribe", channel="lobby")  # default namespace: presence on, join_leave off
    bob = await gateway.connect("bob")
    await bob.ok("subscribe", channel="lobby")
    await bob.ok("ping")  # the subscribe, and any join it sends, is done
    for data in ("marker", "marker2"):
        status, body = await gateway.api(
            "POST", "/api/publish", json={"channel": "lobby", "data": data}
        )
        assert status == 200, body
        # The next push is the marker: no join (nor, after bob left, leave) came before it.
        assert (await alice.push(kind=None))["data"] == data
        await bob.close()
    await alice.close()


async def test_presence_lists_clients_of_every_gateway_and_forgets_closed_ones(
    start_gateway, channels_file
):
    path = channels_file(ROOMS)
    one, two = (
        await start_gateway(SWITCHBOARD_CHANNELS=path),
        await start_gateway(SWITCHBOARD_CHANNELS=path),
    )
    alice = await one.connect("alice")
    alice_id = (await alice.ok("connect"))["client"]
    bob = await two.connect("bob")
    bob_id = (await bob.ok("connect"))["client"]
    carol = await two.connect("carol")
    carol_id = (await carol.ok("connect"))["client"]
    for client in (alice, bob, carol):
        await client.ok("subscribe", channel="chat:2")

    expected = {
        alice_id: {"user": "alice", "client": alice_id},
        bob_id: {"user": "bob", "client": bob_id},
        carol_id: {"user": "carol", "client": carol_id},
    }
    assert (await alice.ok("presence", channel="chat:2"))["clients"] == expected
    assert (await bob.ok("presence", channel="chat:2"))["clients"] == expected
    status, body = await one.api("GET", "/api/presence", params={"channel": "chat:2"})
    assert status == 200 and body["clients"] == expected

    # Bob's socket on the second gateway goes away: his entry goes, and the first gateway's
    # subscriber is told.
    await bob.close()
    leave = await alice.push(kind="leave")
    assert leave["info"] == expected[bob_id]
    del expected[bob_id]

    async def presence_is_expected() -> bool:
        return (await alice.ok("presence", channel="chat:2"))["clients"] == expected

    await wait_until(presence_is_expected, what="bob's presence entry removed")
    await carol.ok("unsubscribe", channel="chat:2")
    del expected[carol_id]
    assert (await alice.ok("presence", channel="chat:2"))["clients"] == expected
    await carol.close()
    await alice.close()
