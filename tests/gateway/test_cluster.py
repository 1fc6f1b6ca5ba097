"""Gateways as real processes: fan-out and operator commands across a cluster, cluster-wide
statistics, graceful shutdown, a Redis restart under live subscriptions, Prometheus metrics."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.gateway.wsclients import RawWebSocket
from tests.helpers import Client, wait_until

REPORT = {"GATEWAY_NODE_REPORT_S": "0.2"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Cluster:
    """Ways to reach gateway processes from one client session."""

    def __init__(self, session: aiohttp.ClientSession, make_token: Any) -> None:
        self.session = session
        self.make_token = make_token
        self.clients: list[Client] = []

    async def connect(self, gp: Any, user: str) -> Client:
        headers = {"Authorization": f"Bearer {self.make_token(user)}"}
        client = Client(await self.session.ws_connect(gp.url("/ws"), headers=headers))
        self.clients.append(client)
        return client

    async def api(self, gp: Any, method: str, path: str, *, scope: str = "publish", **kw: Any):
        headers = {"Authorization": f"Bearer {self.make_token('backend', scope=scope)}"}
        async with self.session.request(method, gp.url(path), headers=headers, **kw) as resp:
            return resp.status, await resp.json()

    async def get(self, gp: Any, path: str) -> tuple[int, str]:
        async with self.session.get(gp.url(path)) as resp:
            return resp.status, await resp.text()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest.fixture
async def cluster(session, make_token) -> AsyncIterator[Cluster]:
    c = Cluster(session, make_token)
    yield c
    await c.close()


async def test_a_publication_on_one_gateway_reaches_subscribers_on_both(gateway_process, cluster):
    a, b = await gateway_process(), await gateway_process()
    subscribers = [
        await cluster.connect(a, "alice"),
        await cluster.connect(b, "bob"),
        await cluster.connect(b, "carol"),
    ]
    for client in subscribers:
        await client.ok("subscribe", channel="news")

    for origin, text in ((a, "from a"), (b, "from b")):
        status, body = await cluster.api(
            origin, "POST", "/api/publish", json={"channel": "news", "data": {"text": text}}
        )
        assert status == 200, body
        for client in subscribers:
            push = await client.push()
            assert push == {
                "push": "pub",
                "channel": "news",
                "offset": body["offset"],
                "data": {"text": text},
            }


async def test_disconnecting_a_user_closes_their_sockets_on_every_gateway(gateway_process, cluster):
    a, b = await gateway_process(), await gateway_process()
    alice = [
        await cluster.connect(a, "alice"),
        await cluster.connect(a, "alice"),
        await cluster.connect(b, "alice"),
    ]
    others = [await cluster.connect(a, "bob"), await cluster.connect(b, "bob")]
    for client in alice + others:
        await client.ok("subscribe", channel="news")

    status, body = await cluster.api(
        a, "POST", "/api/disconnect", scope="admin", json={"user": "alice"}
    )
    assert status == 200, body
    for client in alice:
        push = await client.push(kind="disconnect")
        assert push["code"] == 4504 and push["reconnect"] is False, push
        assert await client.closed() == 4504

    # Everyone else stays connected and subscribed.
    status, body = await cluster.api(
        b, "POST", "/api/publish", json={"channel": "news", "data": "still here"}
    )
    assert status == 200, body
    for client in others:
        assert (await client.push())["data"] == "still here"
        assert await client.ok("ping") == {}
        assert not client.ws.closed

    # A publish-scoped token may not disconnect anyone.
    status, body = await cluster.api(a, "POST", "/api/disconnect", json={"user": "bob"})
    assert status == 403, body


async def test_stats_count_the_whole_cluster_and_the_local_gateway(gateway_process, cluster):
    a, b = await gateway_process(**REPORT), await gateway_process(**REPORT)
    for _ in range(2):
        await cluster.connect(a, "alice")
    on_b = [await cluster.connect(b, "bob") for _ in range(3)]

    async def stats_are(gp: Any, total: int, local: int) -> bool:
        status, text = await cluster.get(gp, "/stats")
        assert status == 200, text
        body = json.loads(text)
        return (body["nb_connections"], body["local_connections"], body["nodes"]) == (
            total,
            local,
            2,
        )

    await wait_until(lambda: stats_are(a, 5, 2), what="stats of a: 5 in all, 2 local")
    await wait_until(lambda: stats_are(b, 5, 3), what="stats of b: 5 in all, 3 local")

    await on_b[0].close()
    await wait_until(lambda: stats_are(a, 4, 2), what="stats of a after a close on b")
    await wait_until(lambda: stats_are(b, 4, 2), what="stats of b after a close on b")


async def test_sigterm_closes_sockets_with_1012_and_exits_within_the_grace_period(
    gateway_process, cluster
):
    grace_s = 5.0
    gp = await gateway_process(GATEWAY_SHUTDOWN_TIMEOUT_S=str(grace_s))
    clients = [await cluster.connect(gp, f"user{i}") for i in range(5)]
    for client in clients:
        await client.ok("subscribe", channel="news")
    # A socket that never answers the close handshake must not hold the exit back.
    mute = await RawWebSocket.open(gp.port, token=cluster.make_token("mute"))
    try:
        assert "result" in await mute.call("subscribe", channel="news")

        started = time.monotonic()
        gp.terminate()
        for client in clients:
            push = await client.push(kind="disconnect", timeout_s=grace_s)
            assert push["code"] == 1012 and push["reconnect"] is True, push
            assert await client.closed(timeout_s=grace_s) == 1012
        try:
            code = await asyncio.to_thread(gp.proc.wait, grace_s)
        except Exception as exc:
            raise AssertionError(f"still running {grace_s}s after SIGTERM") from exc
        assert code == 0, gp.output()
        assert time.monotonic() - started < grace_s

        # The mute socket was told too, before the connection went.
        objects = []
        with contextlib.suppress(EOFError, ConnectionError):
            while True:
                objects += await mute.recv_json(timeout_s=grace_s)
        assert {"push": "disconnect", "code": 1012} in [
            {k: o.get(k) for k in ("push", "code")} for o in objects
        ], objects
    finally:
        mute.close()


async def _ready_status(cluster: Cluster, gp: Any) -> int:
    try:
        status, _ = await cluster.get(gp, "/readyz")
    except aiohttp.ClientError:
        return 0
    return status


async def test_redis_restart_under_live_subscriptions(
    gateway_process, cluster, spare_redis, channels_file
):
    channels = channels_file(
        {
            "live": {"history_size": 0, "presence": False},
            "feed": {"history_size": 100, "history_ttl_s": 600},
        }
    )
    gp = await gateway_process(REDIS_URL=spare_redis.url, SWITCHBOARD_CHANNELS=channels)
    live = [await cluster.connect(gp, "alice"), await cluster.connect(gp, "bob")]
    for client in live:
        await client.ok("subscribe", channel="live:x")
    with_history = await cluster.connect(gp, "carol")
    before = await with_history.ok("subscribe", channel="feed:x")
    news = await cluster.connect(gp, "dave")
    await news.ok("subscribe", channel="news")

    async def publish(channel: str, data: Any) -> dict[str, Any]:
        status, body = await cluster.api(
            gp, "POST", "/api/publish", json={"channel": channel, "data": data}
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    await publish("live:x", "before")
    for client in live:
        assert (await client.push())["data"] == "before"

    spare_redis.stop()
    await wait_until(lambda: _ready_503(cluster, gp), what="/readyz 503 while redis is down")
    # A subscribe while Redis is down is refused with 108: on a channel this gateway already
    # has (the history read fails) and on a new one (the Redis subscription cannot be made).
    newcomer = await cluster.connect(gp, "erin")
    fresh = asyncio.create_task(newcomer.call("subscribe", channel="live:new", timeout_s=15))
    other = await cluster.connect(gp, "frank")
    reply = await other.call("subscribe", channel="news")
    assert reply.get("error", {}).get("code") == 108, reply
    reply = await fresh
    assert reply.get("error", {}).get("code") == 108, reply
    status, body = await cluster.api(
        gp, "POST", "/api/publish", json={"channel": "live:x", "data": "lost"}
    )
    assert status == 503 and body["error"]["code"] == 108, body

    port = spare_redis.port
    spare_redis.start()
    assert spare_redis.port == port, "redis came back on another port"

    async def ready() -> bool:
        return await _ready_status(cluster, gp) == 200

    await wait_until(ready, timeout_s=20, what="/readyz 200 after redis came back")

    # Same sockets, no resubscribe: delivery resumes.
    body = await publish("live:x", "after")
    for client in live:
        push = await client.push(timeout_s=5)
        assert (push["data"], push["offset"]) == ("after", body["offset"])
        assert not client.ws.closed

    # The restarted Redis has none of the old history: subscribers of channels with history
    # are told to recover themselves (4007) rather than left with a silent gap.
    for client in (with_history, news):
        push = await client.push(kind="disconnect", timeout_s=10)
        assert push["code"] == 4007 and push["reconnect"] is True, push
        assert await client.closed() == 4007
    again = await cluster.connect(gp, "carol")
    result = await again.ok(
        "subscribe", channel="feed:x", since={"offset": before["offset"], "epoch": before["epoch"]}
    )
    assert result["recovered"] is False and result["epoch"] != before["epoch"]
    body = await publish("feed:x", "new history")
    assert (await again.push())["offset"] == body["offset"]

    # The subscribe refused while Redis was down left nothing behind: it can be made now.
    await newcomer.ok("subscribe", channel="live:new")
    body = await publish("live:new", "first")
    assert (await newcomer.push())["offset"] == body["offset"]


async def _ready_503(cluster: Cluster, gp: Any) -> bool:
    return await _ready_status(cluster, gp) == 503


async def test_metrics_endpoint_serves_prometheus_text(gateway_process, cluster):
    gp = await gateway_process()
    for user in ("alice", "bob"):
        await cluster.connect(gp, user)

    async def connections_are_two() -> bool:
        async with cluster.session.get(gp.url("/metrics")) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        assert "# TYPE switchboard_gateway_connections gauge" in text, text
        return "\nswitchboard_gateway_connections 2.0\n" in text

    await wait_until(connections_are_two, what="switchboard_gateway_connections 2.0")
