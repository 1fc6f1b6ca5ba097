"""The alert rules and the Grafana dashboard against a real Prometheus.

`promtool check rules` accepts deploy/prometheus/alerts.yml. Then a real Prometheus (the Debian
package's binary, `make deps` installs it) scrapes every second a local cluster (deploy.local:
haproxy, two gateways, two rooms replicas, one streams, two handlers, one Redis) while clients
subscribe, receive publications, share a room and get closed; through its HTTP API every alert
rule is loaded and evaluated without error (none fires on this healthy cluster) and every
dashboard query is valid and returns data."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml

from deploy.local import ClusterSettings, LocalCluster
from tests.conftest import SECRET
from tests.helpers import Client, clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CHART_ALERTS = ROOT / "deploy" / "helm" / "switchboard" / "rules" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "helm" / "switchboard" / "dashboards" / "switchboard.json"
NAMESPACE = "observability-test"  # the dashboard's $namespace, set on every target
RATE_INTERVAL = "5s"  # Grafana's $__rate_interval for a 1 s scrape interval is 4 s
CHANNEL = "news"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not on PATH (`make deps` installs the Debian package prometheus)")
    return path


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's variables replaced."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$namespace", NAMESPACE)
            expr = expr.replace("$__rate_interval", RATE_INTERVAL)
            queries.append((f"{panel['title']} ({target['refId']})", expr))
    return queries


def test_alerts_file_is_the_charts() -> None:
    assert ALERTS.read_bytes() == CHART_ALERTS.read_bytes()


def test_promtool_accepts_the_rules() -> None:
    promtool = _require("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


# -- a real Prometheus over a local cluster ---------------------------------------------------


# The handlers' code for the load: a handler that fails the first attempt of one event in five
# (retries, never dead letters: the DLQ alert must stay quiet) and an rpc task.
HANDLER = """
SEEN = set()

def handle_event(data):
    if data["n"] % 5 == 0 and data["n"] not in SEEN:
        SEEN.add(data["n"])
        raise RuntimeError("first attempt fails")
"""
TASK = "def run(request):\n    return request.data\n"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not on PATH (`make deps` installs it)")
    handlers, tasks = tmp_path / "event_handlers", tmp_path / "tasks"
    handlers.mkdir()
    tasks.mkdir()
    (handlers / "on_tick.py").write_text(HANDLER)
    (tasks / "task_echo.py").write_text(TASK)
    settings = ClusterSettings(
        state_dir=tmp_path / "cluster",
        port=0,
        replicas=2,
        services=("gateway", "rooms", "streams", "handlers"),
        secret_key=SECRET,
        extra_env={
            "ROOMS_STATS_INTERVAL_S": "0.5",
            "HANDLERS_STATS_INTERVAL_S": "0.5",
            "GATEWAY_SHUTDOWN_TIMEOUT_S": "3",
            "STREAMS_SHUTDOWN_TIMEOUT_S": "3",
            "HANDLERS_SHUTDOWN_TIMEOUT_S": "3",
            "HANDLERS_BACKOFF_S": "0.1",
            "EVENT_HANDLERS_FOLDER": str(handlers),
            "TASKS_FOLDER": str(tasks),
        },
        grace_s=5.0,
        backoff_initial_s=0.2,
    )
    local = LocalCluster(settings, clean_env())
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


class Prometheus:
    def __init__(self, binary: str, workdir: Path, cluster: LocalCluster) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir()
        jobs = []
        for service in ("gateway", "rooms", "streams", "handlers"):
            targets = [
                {
                    "targets": [f"127.0.0.1:{replica.port}"],
                    "labels": {"namespace": NAMESPACE, "pod": replica.name},
                }
                for replica in cluster.replicas_of(service)
            ]
            jobs.append({"job_name": f"switchboard-{service}", "static_configs": targets})
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ALERTS)],
            "scrape_configs": jobs,
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()

    def tail(self) -> str:
        return "\n".join((self.workdir / "prometheus.log").read_text().splitlines()[-10:])


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[LocalCluster], Prometheus]]:
    binary = _require("prometheus")
    started: list[Prometheus] = []

    def start(cluster: LocalCluster) -> Prometheus:
        prom = Prometheus(binary, tmp_path / "prometheus", cluster)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


async def query(http: aiohttp.ClientSession, prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    """An instant query; fails on anything but success (a bad expression, an evaluation error)."""
    async with http.get(f"{prom.url}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["status"] == "success", f"{expr}: {body}"
    assert body["data"]["resultType"] == "vector", expr
    return body["data"]["result"]  # type: ignore[no-any-return]


async def until(what: str, check: Callable[[], Any], deadline: float, prom: Prometheus) -> None:
    while True:
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; Prometheus log:\n{prom.tail()}")
        await asyncio.sleep(0.25)


class Load:
    """Clients through haproxy: subscribers, a publisher, a shared room, a few closed sockets."""

    def __init__(self, cluster: LocalCluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http
        self.clients: list[Client] = []
        self.published = 0
        self._task: asyncio.Task[None] | None = None
        self._streams: list[aiohttp.ClientWebSocketResponse] = []
        self._reader: asyncio.Task[None] | None = None

    def token(self, sub: str, **claims: Any) -> str:
        payload = {"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + 600, **claims}
        return jwt.encode(payload, SECRET, algorithm="HS256")

    async def connect(self, sub: str) -> Client:
        ws = await self.http.ws_connect(
            f"{self.cluster.url}/ws", headers={"Authorization": f"Bearer {self.token(sub)}"}
        )
        client = Client(ws)
        self.clients.append(client)
        return client

    async def start(self) -> None:
        for i in range(6):
            client = await self.connect(f"user{i}")
            await client.ok("subscribe", channel=CHANNEL)
        first, second = self.clients[0], self.clients[1]
        await first.ok("room.join", room="review-1", state={"frame": 0})
        await second.ok("room.join", room="review-1")
        await first.ok("room.update", room="review-1", patch={"frame": 12})
        # A bad frame: the gateway closes with 4501, which shows in closes by code.
        bad = await self.connect("mallory")
        await bad.ws.send_str("not json")
        assert await bad.closed() == 4501
        await self.publish()
        await self.clients[2].push()
        # A data stream with a pusher (acked) and a reader, and a camera of the frames API.
        token = self.token("camera")
        base = self.cluster.url.replace("http", "ws", 1)
        self.pusher = await self.http.ws_connect(f"{base}/data/cam/push?ack=true&token={token}")
        await self.push_entry()
        self.puller = await self.http.ws_connect(
            f"{base}/data/cam/pull?last_entry_id=0&count=10&token={token}"
        )
        self._streams += [self.pusher, self.puller]
        self._reader = asyncio.create_task(self._read_stream())
        self._task = asyncio.create_task(self._keep_busy())

    async def push_entry(self) -> None:
        await self.pusher.send_bytes(b"frame %d" % self.published)
        ack = await self.pusher.receive()
        assert ack.type is aiohttp.WSMsgType.TEXT and "-" in ack.data, ack

    async def _read_stream(self) -> None:
        async for _ in self.puller:
            pass

    async def upload_frame(self) -> None:
        form = aiohttp.FormData()
        form.add_field("label", "site-a")
        form.add_field("key", "cam-1")
        form.add_field("file", b"\xff\xd8jpeg\xff\xd9", filename="f.jpg")
        headers = {"Authorization": f"Bearer {self.token('camera')}"}
        async with self.http.post(f"{self.cluster.url}/frames", data=form, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    async def publish(self) -> None:
        headers = {"Authorization": f"Bearer {self.token('backend', scope='publish')}"}
        body = {"channel": CHANNEL, "data": {"n": self.published}, "event": "tick"}
        async with self.http.post(
            f"{self.cluster.url}/api/publish", json=body, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
        self.published += 1

    async def _keep_busy(self) -> None:
        """A publication (an event for the handlers too) every 50 ms; a room update, a stream
        entry, a camera frame and an rpc call every 250 ms: rates are never zero."""
        first = self.clients[0]
        tick = 0
        while True:
            await self.publish()
            if tick % 5 == 0:
                await first.ok("room.update", room="review-1", patch={"frame": tick})
                await self.push_entry()
                await self.upload_frame()
                assert await first.ok("rpc", method="echo", data=tick) == tick
            tick += 1
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self.clients:
            await client.close()
        for ws in self._streams:
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()


@pytest.mark.timeout(120)
async def test_prometheus_evaluates_every_alert_and_dashboard_query(
    cluster: LocalCluster, prometheus_for: Callable[[LocalCluster], Prometheus]
) -> None:
    started = time.monotonic()
    prom = prometheus_for(cluster)
    async with aiohttp.ClientSession() as http:
        load = Load(cluster, http)
        try:
            await load.start()
            deadline = time.monotonic() + 30
            targets = len(cluster.replicas)

            async def every_target_scraped_thrice() -> bool:
                # >= 3 samples of every target, all up: rate() over the window has two.
                seen = await query(http, prom, "count_over_time(up[1m]) >= 3 and up == 1")
                return len(seen) == targets

            await until(
                "three scrapes of every target", every_target_scraped_thrice, deadline, prom
            )

            async def rules_evaluated() -> bool:
                async with http.get(f"{prom.url}/api/v1/rules") as resp:
                    body = await resp.json()
                loaded = [r for g in body["data"]["groups"] for r in g["rules"]]
                return len(loaded) == len(alert_rules()) and all(
                    r["health"] == "ok" and r["lastEvaluation"] > "2000" for r in loaded
                )

            await until("every alert rule evaluated", rules_evaluated, deadline, prom)
            async with http.get(f"{prom.url}/api/v1/rules") as resp:
                loaded = [r for g in (await resp.json())["data"]["groups"] for r in g["rules"]]
            assert {r["name"] for r in loaded} == {r["alert"] for r in alert_rules()}
            for rule in loaded:
                assert rule["health"] == "ok" and not rule.get("lastError"), rule
                assert rule["state"] == "inactive", f"{rule['name']} fires on a healthy cluster"
            for rule in alert_rules():
                assert await query(http, prom, rule["expr"]) == [], rule["alert"]

            # Every dashboard query answers with data (rates need the load's last seconds).
            empty = []
            for title, expr in dashboard_queries():
                if not await query(http, prom, expr):
                    empty.append(f"{title}: {expr}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

            # Figures that follow from the load.
            by_title = {title: expr for title, expr in dashboard_queries()}

            async def values(title: str) -> dict[str, float]:
                result = await query(http, prom, by_title[title])
                return {
                    json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result
                }

            assert sum((await values("Open connections and subscriptions (A)")).values()) >= 6
            assert sum((await values("Open connections and subscriptions (B)")).values()) >= 6
            assert set((await values("Redis pub/sub link up (A)")).values()) == {1.0}
            assert sum((await values("Deliveries / s (frames sent) (A)")).values()) > 0
            assert sum((await values("Publications received from Redis / s (A)")).values()) > 0
            closes = await query(http, prom, "switchboard_gateway_closes_total")
            assert "4501" in {r["metric"]["code"] for r in closes}
            ops = await query(http, prom, "switchboard_rooms_commands_total")
            assert {r["metric"]["outcome"] for r in ops} >= {"ok"}
        finally:
            await load.stop()
    assert time.monotonic() - started < 60
