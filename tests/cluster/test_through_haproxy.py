"""The local cluster end to end through a real haproxy: routing and stickiness, a publication
reaching subscribers on both gateways, a gateway killed with SIGKILL and a rolling restart under
steady publishing (every subscriber ends with exactly the channel's history: nothing lost,
nothing twice), the rooms, streams and handlers replicas restarted one by one under load (no
room update lost, every acked stream entry stored, every event handled), and Socket.IO
long-polling held on one gateway by the stickiness cookie."""

import asyncio
import contextlib
import logging
import statistics
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from redis.asyncio import Redis

from deploy.local import LocalCluster
from tests.cluster.conftest import HANDLED
from tests.cluster.resilient import Publisher, ResilientSubscriber, Session, sticky_server
from tests.helpers import Client, wait_until

log = logging.getLogger(__name__)

CHANNEL = "feed:scores"  # history of 10000 (tests/cluster/conftest.py)
GATEWAYS = {"gateway-1", "gateway-2"}
NS = "/events"


class Crowd:
    """The test's subscribers and publisher, all stopped after the test (before the cluster)."""

    def __init__(self, cluster: LocalCluster, make_token: Callable[..., str]) -> None:
        self.cluster = cluster
        self.make_token = make_token
        self.subscribers: list[ResilientSubscriber] = []
        self.publisher = Publisher(cluster.url, make_token("backend", scope="publish"), CHANNEL)

    async def subscribe(self, count: int) -> list[ResilientSubscriber]:
        """`count` subscribers on CHANNEL, which haproxy spreads over both gateways."""
        for i in range(count):
            token = self.make_token(f"user{i}")
            # Back in 0.3-0.6 s: the publications of that time must come from history.
            sub = ResilientSubscriber(self.cluster.url, token, CHANNEL, backoff_initial_s=0.3)
            self.subscribers.append(sub)
            await sub.start()
        assert {sub.gateway for sub in self.subscribers} == GATEWAYS, self.where()
        return self.subscribers

    def where(self) -> list[str | None]:
        return [sub.gateway for sub in self.subscribers]

    def check(self) -> None:
        self.publisher.check()
        for sub in self.subscribers:
            sub.check()

    async def received_more(self, count: int, timeout_s: float = 10.0) -> None:
        """Until every subscriber has `count` publications more than now."""
        targets = [(sub, len(sub.received) + count) for sub in self.subscribers]

        def done() -> bool:
            self.check()
            return all(len(sub.received) >= target for sub, target in targets)

        await wait_until(done, timeout_s=timeout_s, what=f"{count} more publications each")

    async def reconnected(self, subscribers: list[ResilientSubscriber], times: int) -> None:
        def done() -> bool:
            self.check()
            return all(sub.reconnects == times for sub in subscribers)

        await wait_until(done, timeout_s=10, what=f"{len(subscribers)} clients reconnected")

    async def history(self) -> list[tuple[str, Any]]:
        token = self.make_token("backend", scope="publish")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{self.cluster.url}/api/history",
                params={"channel": CHANNEL, "limit": "10000"},
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
            body = await response.json()
        return [(p["offset"], p["data"]) for p in body["publications"]]

    async def finish(self, timeout_s: float = 10.0) -> list[tuple[str, Any]]:
        """Stop publishing; once everyone has caught up, return the channel's whole history."""
        await self.publisher.stop()
        history = await self.history()
        assert len(history) == len({offset for offset, _ in history})
        acked = {offset for _, offset in self.publisher.acked}
        assert acked <= {offset for offset, _ in history}, "an acknowledged publication is lost"

        def caught_up() -> bool:
            self.check()
            return all(len(sub.received) >= len(history) for sub in self.subscribers)

        await wait_until(caught_up, timeout_s=timeout_s, what="subscribers caught up")
        return history

    async def close(self) -> None:
        await self.publisher.stop()
        for sub in self.subscribers:
            await sub.stop()


@pytest.fixture
async def crowd(cluster: LocalCluster, make_token: Callable[..., str]) -> AsyncIterator[Crowd]:
    c = Crowd(cluster, make_token)
    try:
        yield c
    finally:
        await c.close()


def assert_exactly_once(sub: ResilientSubscriber, history: list[tuple[str, Any]]) -> None:
    offsets = [offset for offset, _ in sub.received]
    duplicates = len(offsets) - len(set(offsets))
    missing = {offset for offset, _ in history} - set(offsets)
    assert (duplicates, len(missing)) == (0, 0), f"{duplicates} duplicates, {len(missing)} lost"
    assert sub.received == history  # same publications, same order
    assert sub.unrecovered == []


def reconnect_figures(sessions: list[Session]) -> str:
    total = [1000 * (s.reconnect_s or 0.0) for s in sessions]
    handshake = [1000 * (s.handshake_s or 0.0) for s in sessions]
    return (
        f"reconnect {min(total):.0f}-{max(total):.0f} ms (median {statistics.median(total):.0f}), "
        f"backoff included; connect and subscribe through haproxy "
        f"{min(handshake):.0f}-{max(handshake):.0f} ms"
    )


async def stats_of(cluster: LocalCluster, gateway: str) -> dict[str, Any]:
    """GET /stats through haproxy, pinned to one gateway by the stickiness cookie."""
    async with (
        aiohttp.ClientSession(cookies={"SBSERVER": gateway}) as http,
        http.get(f"{cluster.url}/stats") as response,
    ):
        assert response.headers["X-Served-By"] == gateway
        return await response.json()  # type: ignore[no-any-return]


async def test_routes_and_a_publication_reaching_subscribers_on_both_gateways(
    cluster: LocalCluster, crowd: Crowd, make_token: Callable[..., str]
) -> None:
    subscribers = await crowd.subscribe(4)
    for gateway in GATEWAYS:
        local = sum(sub.gateway == gateway for sub in subscribers)
        assert (await stats_of(cluster, gateway))["local_connections"] == local

    for n in range(1, 5):  # without a cookie, publications go to both gateways in turn
        await crowd.publisher.publish(n)
    assert set(crowd.publisher.served_by) == GATEWAYS
    history = await crowd.finish()
    assert [data for _, data in history] == [{"n": n} for n in range(1, 5)]
    for sub in subscribers:
        assert_exactly_once(sub, history)

    admin = {"Authorization": f"Bearer {make_token('ops', scope='admin')}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.url}/rooms", headers=admin) as response:
            assert response.status == 200
            assert response.headers["X-Served-By"].startswith("rooms-")
        async with http.get(f"{cluster.url}/") as response:
            assert response.headers["X-Served-By"] in GATEWAYS
            assert (await response.json())["name"] == "Zou Event stream"


async def test_clients_of_a_killed_gateway_reconnect_and_recover_every_publication(
    cluster: LocalCluster, crowd: Crowd
) -> None:
    subscribers = await crowd.subscribe(6)
    crowd.publisher.start()
    await crowd.received_more(10)

    victim = subscribers[0].gateway
    assert victim is not None
    moved = [sub for sub in subscribers if sub.gateway == victim]
    stayed = [sub for sub in subscribers if sub.gateway != victim]
    pid = cluster.kill(victim)

    await crowd.reconnected(moved, 1)
    await crowd.received_more(20)  # publishing went on through the survivor
    await cluster.wait_ready(victim)  # started again by the launcher
    assert cluster.replicas[victim].pid != pid
    history = await crowd.finish()

    for sub in moved:
        assert sub.sessions[0].close_code in (None, 1006), sub.sessions
        assert sub.gateway != victim  # haproxy sent it to the survivor, breaking stickiness
        assert sub.sessions[1].recovered > 0  # what was published while it was away
    for sub in stayed:
        assert sub.reconnects == 0
    for sub in subscribers:
        assert_exactly_once(sub, history)
    log.info(
        "SIGKILL: %d publications, %d clients moved, %s, %d recovered from history, "
        "%d failed publish attempts retried",
        len(history),
        len(moved),
        reconnect_figures([sub.sessions[1] for sub in moved]),
        sum(sub.sessions[1].recovered for sub in moved),
        len(crowd.publisher.failures),
    )


async def test_a_rolling_restart_loses_and_duplicates_nothing(
    cluster: LocalCluster, crowd: Crowd
) -> None:
    subscribers = await crowd.subscribe(6)
    crowd.publisher.start()
    await crowd.received_more(10)

    for gateway in ("gateway-1", "gateway-2"):
        pid = cluster.replicas[gateway].pid
        await cluster.restart(gateway)  # SIGTERM, exit, start again, routed again
        assert cluster.replicas[gateway].pid != pid
        await wait_until(
            lambda g=gateway: all(sub.gateway != g for sub in subscribers),  # type: ignore[misc]
            what=f"every client away from {gateway}",
        )
        await crowd.received_more(10)
    history = await crowd.finish()
    assert crowd.publisher.failures == []  # haproxy sent every publish to a live gateway

    for sub in subscribers:
        assert_exactly_once(sub, history)
        assert sub.reconnects >= 1
        assert {s.close_code for s in sub.sessions[:-1]} == {1012}, sub.sessions
        assert all(s.recovered > 0 for s in sub.sessions[1:]), sub.sessions
    sessions = [s for sub in subscribers for s in sub.sessions[1:]]
    log.info(
        "rolling restart: %d publications, %d reconnects, %s, %d recovered from history",
        len(history),
        len(sessions),
        reconnect_figures(sessions),
        sum(s.recovered for s in sessions),
    )


class PollingListener:
    """python-socketio on /events over long-polling only, with its own cookie jar."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.client = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.client.on("*", self._any, namespace=NS)

    async def _any(self, event: str, data: Any) -> None:
        self.events.put_nowait((event, data))

    async def connect(self, url: str, token: str) -> None:
        await self.client.connect(
            url,
            headers={"Authorization": f"Bearer {token}"},
            namespaces=[NS],
            transports=["polling"],
            wait_timeout=5,
        )

    @property
    def gateway(self) -> str | None:
        return sticky_server(self.http)

    async def close(self) -> None:
        await self.client.disconnect()
        await self.http.close()


async def test_socketio_long_polling_sticks_to_one_gateway_on_each_side(
    cluster: LocalCluster, make_token: Callable[..., str]
) -> None:
    listeners = [PollingListener() for _ in range(2)]
    try:
        for listener in listeners:
            await listener.connect(cluster.url, make_token("kitsu"))
        assert {listener.gateway for listener in listeners} == GATEWAYS
        for gateway in GATEWAYS:

            async def counted(g: str = gateway) -> bool:
                stats = await stats_of(cluster, g)
                return (stats["local_connections"], stats["socketio_connections"]) == (1, 2)

            await wait_until(counted, what=f"/stats of {gateway}: 1 local, 2 in the cluster")

        for n in range(3):  # publications through either gateway reach both polling clients
            body = {"channel": "zou:events", "event": "task:new", "data": {"n": n}}
            token = make_token("backend", scope="publish")
            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
                http.post(
                    f"{cluster.url}/api/publish",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as response,
            ):
                assert response.status == 200, await response.text()
            for listener in listeners:
                async with asyncio.timeout(5):
                    assert await listener.events.get() == ("task:new", {"n": n})
        assert all(listener.client.connected for listener in listeners)
    finally:
        for listener in listeners:
            await listener.close()

    # Without the cookie, the polls of one session alternate between the gateways: the second
    # request reaches a process that never heard of the session, and the connection fails.
    unsticky = socketio.AsyncClient(
        reconnection=False,
        http_session=(http := aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())),
    )
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await unsticky.connect(
                cluster.url,
                headers={"Authorization": f"Bearer {make_token('kitsu')}"},
                namespaces=[NS],
                transports=["polling"],
                wait_timeout=5,
            )
    finally:
        await unsticky.disconnect()
        await http.close()


class RoomWriter:
    """One member updating a room every `interval_s` through haproxy; keeps every answer."""

    def __init__(self, url: str, token: str, room: str, interval_s: float = 0.05) -> None:
        self.url, self.token, self.room, self.interval_s = url, token, room, interval_s
        self.versions: list[int] = []
        self.errors: list[dict[str, Any]] = []
        self.sent = 0
        self._stop = asyncio.Event()

    async def run(self, http: aiohttp.ClientSession) -> None:
        ws = await http.ws_connect(
            f"{self.url}/ws", headers={"Authorization": f"Bearer {self.token}"}
        )
        client = Client(ws)
        await client.ok("room.join", room=self.room, state={})
        while not self._stop.is_set():
            self.sent += 1
            reply = await client.call("room.update", room=self.room, patch={"n": self.sent},
                                      timeout_s=15.0)  # fmt: skip
            if "result" in reply:
                self.versions.append(reply["result"]["version"])
            else:
                self.errors.append(reply["error"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
        self.final = await client.ok("room.get", room=self.room)
        await client.close()

    def stop(self) -> None:
        self._stop.set()


class StreamPusher:
    """Pushes one entry every `interval_s` with `ack=true`, reconnecting through haproxy when
    the streams service goes away; keeps the ids the service acknowledged."""

    def __init__(self, url: str, token: str, stream: str, interval_s: float = 0.05) -> None:
        base = url.replace("http", "ws", 1)
        self.url = f"{base}/data/{stream}/push?ack=true&token={token}"
        self.interval_s = interval_s
        self.acked: list[str] = []
        self.reconnects = 0
        self._stop = asyncio.Event()

    async def run(self, http: aiohttp.ClientSession) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                async with http.ws_connect(self.url) as ws:
                    while not self._stop.is_set():
                        n += 1
                        await ws.send_bytes(b"entry %d" % n)
                        ack = await ws.receive(timeout=10)
                        if ack.type is not aiohttp.WSMsgType.TEXT:
                            break  # 1012: the service is restarting; not acked, not counted
                        self.acked.append(ack.data)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except (aiohttp.ClientError, TimeoutError):
                pass
            if not self._stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


async def test_rooms_streams_and_handlers_restart_one_by_one_and_lose_nothing(
    cluster: LocalCluster, crowd: Crowd, make_token: Callable[..., str]
) -> None:
    assert cluster.redis is not None
    redis = Redis.from_url(cluster.redis.url)
    crowd.publisher.event = "tick"
    writer = RoomWriter(cluster.url, make_token("writer"), "rolling")
    pusher = StreamPusher(cluster.url, make_token("camera"), "rolling")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        jobs = [asyncio.create_task(job.run(http)) for job in (writer, pusher)]
        crowd.publisher.start()

        async def progress() -> None:
            marks = (len(crowd.publisher.acked), len(writer.versions), len(pusher.acked))

            def moved() -> bool:
                crowd.publisher.check()
                now = (len(crowd.publisher.acked), len(writer.versions), len(pusher.acked))
                return all(n >= m + 5 for n, m in zip(now, marks, strict=True))

            await wait_until(moved, timeout_s=20, what="publishing, room updates and pushes")

        await progress()
        for name in ("rooms-1", "rooms-2", "streams-1", "handlers-1", "handlers-2"):
            pid = cluster.replicas[name].pid
            await cluster.restart(name)  # SIGTERM, exit, start again, routed again
            assert cluster.replicas[name].pid != pid
            await progress()
        writer.stop()
        pusher.stop()
        await crowd.publisher.stop()
        await asyncio.gather(*jobs)

    # Rooms: every update answered, versions strictly increasing, the last one is the state.
    assert writer.errors == []
    assert writer.versions == sorted(set(writer.versions))
    assert writer.final["state"] == {"n": writer.sent}
    # Streams: every acknowledged entry is in Redis, once.
    stored = [eid.decode() for eid, _ in await redis.xrange("sb:data:rolling")]
    assert set(pusher.acked) <= set(stored)
    assert len(stored) == len(set(stored))
    assert pusher.reconnects >= 1  # the streams restart did break its socket
    # Handlers: every event published was handled at least once, by whichever replica.
    published = {n for n, _ in crowd.publisher.acked}

    async def handled() -> bool:
        return {int(n) for n in await redis.smembers(HANDLED)} >= published

    await wait_until(handled, timeout_s=20, what="every event handled")
    await redis.aclose()
