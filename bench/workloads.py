"""The four workloads. Each starts a fresh server, measures it, and stops it.

Throughput runs are closed-loop: the publisher keeps a bounded number of publications in flight
(published but not yet delivered everywhere), so the server always has work queued yet never
falls so far behind that Redis drops its pub/sub connection (client-output-buffer-limit). Every
delivery is counted per subscriber, so a loss shows up as a shortfall, not as a faster figure.
"""

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .harness import ProcSample, RedisServer, ServerProcess, machine_cpu_s, sample
from .targets import BenchClient, Publisher, Target
from .wsclient import Tally, open_client, source_ip

PAYLOAD_BYTES = 100
OTHER_LOAD_LIMIT = 0.15  # cores used by processes other than ours before a run is flagged
CONNECT_CONCURRENCY = 100  # below the listen backlog, so no SYN is dropped and retried after 1 s


def payload(ts: int = 0) -> dict[str, Any]:
    """Message data whose compact JSON encoding is PAYLOAD_BYTES long."""
    skeleton = len('{"ts":,"pad":""}') + len(str(ts))
    return {"ts": ts, "pad": "x" * (PAYLOAD_BYTES - skeleton)}


@dataclass
class Result:
    """Figures of one workload on one system; `metrics` holds what the report shows."""

    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lost: int = 0


class Meter:
    """CPU time of the server, Redis and this load client between `start()` and `stop()`, and
    what else took the machine's CPUs meanwhile: other processes (`other_cores`) and the
    hypervisor (`stolen_cores`). Either makes a run noisy when high."""

    def __init__(
        self, server: ServerProcess, redis: RedisServer, others: Mapping[str, int] | None = None
    ) -> None:
        """`others`: more processes under test (name -> pid), measured like the server."""
        self.server, self.redis = server, redis
        self._pids = {"server": server.pid, "redis": redis.pid, "client": os.getpid()}
        self._pids.update(others or {})
        self._start: dict[str, ProcSample] = {}
        self._t0 = self._busy0 = self._stolen0 = 0.0
        self.cpu_s: dict[str, float] = {}
        self.system_s: dict[str, float] = {}
        self.tick_cpu_s = 0.0
        self.other_cores = self.stolen_cores = 0.0

    def start(self) -> None:
        self._start = {name: sample(pid) for name, pid in self._pids.items()}
        self._t0 = time.monotonic()
        self._busy0, self._stolen0 = machine_cpu_s()

    def stop(self) -> None:
        end = {name: sample(pid) for name, pid in self._pids.items()}
        self.cpu_s = {name: end[name].cpu_s - self._start[name].cpu_s for name in end}
        self.system_s = {name: end[name].system_s - self._start[name].system_s for name in end}
        self.tick_cpu_s = end["server"].tick_cpu_s - self._start["server"].tick_cpu_s
        # Same 10 ms clock ticks as /proc/stat; a process's ticks include the softirq time
        # spent on its own loopback traffic.
        ours = sum(end[name].tick_cpu_s - self._start[name].tick_cpu_s for name in end)
        elapsed = time.monotonic() - self._t0
        busy, stolen = machine_cpu_s()
        self.other_cores = max(0.0, busy - self._busy0 - ours) / elapsed
        self.stolen_cores = (stolen - self._stolen0) / elapsed

    def check(self, result: "Result") -> None:
        result.metrics["other_load_cores"] = self.other_cores
        result.metrics["stolen_cores"] = self.stolen_cores
        if self.other_cores > OTHER_LOAD_LIMIT:
            result.notes.append(
                f"other processes used {self.other_cores:.2f} cores during the run: figures noisy"
            )
        if self.stolen_cores > OTHER_LOAD_LIMIT:
            result.notes.append(
                f"the hypervisor took {self.stolen_cores:.2f} cores (steal time): figures noisy"
            )


# -- connections -------------------------------------------------------------------------------


async def connect_all(
    target: Target, server: ServerProcess, tally: Tally, count: int, first_index: int = 0
) -> list[BenchClient]:
    """Open `count` clients from spread-out source addresses, a bounded number at a time."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> BenchClient:
        async with gate:
            client = target.client(tally, index)
            return await open_client(client, "127.0.0.1", server.port, source_ip(index))

    tasks = [one(first_index + i) for i in range(count)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for client in results:
            if isinstance(client, BenchClient):
                client.close()
        raise RuntimeError(f"{len(failures)} of {count} connections failed: {failures[0]!r}")
    return [r for r in results if isinstance(r, BenchClient)]


async def subscribe_all(clients: Sequence[BenchClient], channel_of: Callable[[int], str]) -> None:
    """Subscribe client i to channel_of(i) and wait until every subscription is confirmed."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int, client: BenchClient) -> None:
        async with gate:
            await client.subscribe(channel_of(i))

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))


def close_all(clients: Sequence[BenchClient]) -> None:
    for client in clients:
        client.close()


async def drain(tally: Tally, total: int, idle_s: float = 2.0) -> bool:
    """Wait for `total` deliveries; give up once none has arrived for `idle_s`."""
    while True:
        seen = tally.total
        if await tally.wait_for(total, timeout_s=idle_s):
            return True
        if tally.total == seen:
            return False


async def warm_up(
    target: Target,
    server: ServerProcess,
    publisher: Publisher,
    tally: Tally,
    channels: Sequence[str],
    clients: Sequence[BenchClient],
) -> None:
    """One publication per channel, received everywhere, before anything is measured; then
    one through the server's HTTP API, if it has one, which must arrive the same way.

    A subscription confirmed before the server's Redis SUBSCRIBE took effect would lose the
    first: that is a bug in the server, and the run stops here rather than report a loss later.
    """
    tally.reset()
    await publisher.publish([(c, payload()) for c in channels])
    if not await drain(tally, len(clients), idle_s=5.0):
        missing = sum(1 for c in clients if c.count == 0)
        raise RuntimeError(f"warm-up: {missing} subscribers got nothing after subscribing")
    on_first = sum(1 for i in range(len(clients)) if i % len(channels) == 0)
    if await target.api_publish(server, channels[0], payload()) and not await drain(
        tally, len(clients) + on_first, idle_s=5.0
    ):
        raise RuntimeError("warm-up: a publication through the HTTP API was not delivered")
    for client in clients:
        client.count = 0
    tally.reset()


def count_losses(
    clients: Sequence[BenchClient], expected: Callable[[int], int], result: "Result"
) -> None:
    """Compare each subscriber's count with what was published to its channel."""
    result.lost = sum(max(0, expected(i) - c.count) for i, c in enumerate(clients))
    extra = sum(max(0, c.count - expected(i)) for i, c in enumerate(clients))
    if extra:
        result.notes.append(f"{extra} deliveries more than were published (duplicates)")


def check_alive(server: ServerProcess, clients: Sequence[BenchClient], result: Result) -> None:
    if not server.alive():
        result.notes.append("server process died")
    closed = sum(1 for c in clients if c.close_code is not None)
    if closed:
        result.notes.append(f"{closed} connections closed by the server")
    errors = sum(len(c.errors) for c in clients)
    if errors:
        example = next(e for c in clients for e in c.errors)
        result.notes.append(f"{errors} client errors, e.g. {example}")


# -- 1 and 2: fan-out at saturation ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fanout:
    """A closed-loop throughput run: `subscribers` spread evenly over `channels`."""

    subscribers: int
    channels: int
    duration_s: float
    in_flight: int  # publications published but not yet delivered everywhere
    batch: int  # the fewest publications sent at once, to keep sends few

    def __post_init__(self) -> None:
        if self.in_flight < self.batch:
            raise ValueError("in_flight must be at least one batch")


async def fanout(target: Target, redis: RedisServer, spec: Fanout) -> Result:
    server = target.start(redis.url)
    tally = Tally()
    clients: list[BenchClient] = []
    publisher = await target.publisher(redis.url)
    try:
        clients = await connect_all(target, server, tally, spec.subscribers)
        channels = [target.channel(i) for i in range(spec.channels)]
        await subscribe_all(clients, lambda i: channels[i % spec.channels])
        await warm_up(target, server, publisher, tally, channels, clients)
        before = await target.counters(server)
        result = await _saturate(server, redis, publisher, tally, clients, channels, spec)
        after = await target.counters(server)
        if after.get("writes", 0) > before.get("writes", 0):
            frames = after["frames"] - before["frames"]
            result.metrics["frames_per_write"] = frames / (after["writes"] - before["writes"])
        return result
    finally:
        close_all(clients)
        await publisher.aclose()
        server.stop()


async def _saturate(
    server: ServerProcess,
    redis: RedisServer,
    publisher: Publisher,
    tally: Tally,
    clients: Sequence[BenchClient],
    channels: Sequence[str],
    spec: Fanout,
) -> Result:
    per_pub = spec.subscribers // spec.channels
    # Publication k goes to channel k % n, encoded once per channel.
    n, data = len(channels), payload()
    units = [publisher.prepare(channel, data) for channel in channels]
    published = 0
    meter = Meter(server, redis)
    meter.start()
    t0 = time.perf_counter_ns()
    deadline = t0 + int(spec.duration_s * 1e9)
    while time.perf_counter_ns() < deadline:
        # Top the window up in one pipelined send, once at least `batch` publications fit:
        # waiting for Redis between publications would make the publisher the bottleneck.
        room = spec.in_flight - (published - tally.total // per_pub)
        if room < spec.batch:
            needed = (published + spec.batch - spec.in_flight) * per_pub
            left = (deadline - time.perf_counter_ns()) / 1e9
            await tally.wait_for(needed, timeout_s=max(left, 0.001))
            continue
        await publisher.send([units[(published + i) % n] for i in range(room)])
        published += room
    drained = await drain(tally, published * per_pub)
    meter.stop()
    elapsed_s = ((tally.last_ns or time.perf_counter_ns()) - t0) / 1e9
    deliveries = tally.total

    # Client i is subscribed to channel i % n.
    result = Result()
    count_losses(clients, lambda i: published // n + (i % n < published % n), result)
    if not drained:
        result.notes.append("deliveries stopped before every publication arrived")
    check_alive(server, clients, result)
    cpu_s = meter.cpu_s["server"]
    result.metrics = {
        "publications": published,
        "deliveries": deliveries,
        "seconds": elapsed_s,
        "deliveries_per_s": deliveries / elapsed_s,
        "publications_per_s": published / elapsed_s,
        "server_cpu_s": cpu_s,
        "server_tick_cpu_s": meter.tick_cpu_s,
        "cpu_us_per_delivery": 1e6 * cpu_s / max(deliveries, 1),
        "cpu_us_per_publication": 1e6 * cpu_s / max(published, 1),
        "redis_cpu_us_per_publication": 1e6 * meter.cpu_s["redis"] / max(published, 1),
        "client_cpu_us_per_delivery": 1e6 * meter.cpu_s["client"] / max(deliveries, 1),
        "server_cpu_utilisation": cpu_s / elapsed_s,
        "client_cpu_utilisation": meter.cpu_s["client"] / elapsed_s,
    }
    meter.check(result)
    return result


# -- 3: latency at a paced rate ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paced:
    """`rate` publications per second on one channel with `subscribers`, for `duration_s`."""

    subscribers: int
    rate: float
    duration_s: float


def percentile(values: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return float("nan")
    rank = min(len(values) - 1, max(0, round(fraction * len(values)) - 1))
    return float(values[rank])


async def latency(target: Target, redis: RedisServer, spec: Paced) -> Result:
    server = target.start(redis.url)
    tally = Tally()
    clients: list[BenchClient] = []
    publisher = await target.publisher(redis.url)
    try:
        clients = await connect_all(target, server, tally, spec.subscribers)
        channel = target.channel(0)
        await subscribe_all(clients, lambda i: channel)
        await warm_up(target, server, publisher, tally, [channel], clients)
        return await _paced(Meter(server, redis), publisher, tally, clients, channel, spec)
    finally:
        close_all(clients)
        await publisher.aclose()
        server.stop()


async def _paced(
    meter: Meter,
    publisher: Publisher,
    tally: Tally,
    clients: Sequence[BenchClient],
    channel: str,
    spec: Paced,
) -> Result:
    tally.reset(latency=True)
    count = int(spec.rate * spec.duration_s)
    interval_ns = int(1e9 / spec.rate)
    meter.start()
    t0 = time.perf_counter_ns()
    for k in range(count):
        # An absolute schedule: a late publication does not push back the ones after it.
        delay = (t0 + k * interval_ns - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await publisher.publish([(channel, payload(time.perf_counter_ns()))])
    drained = await drain(tally, count * spec.subscribers)
    meter.stop()
    elapsed_s = (tally.last_ns - t0) / 1e9
    samples = sorted(tally.latencies_ns or [])
    result = Result()
    count_losses(clients, lambda i: count, result)
    if not drained:
        result.notes.append("deliveries stopped before every publication arrived")
    check_alive(meter.server, clients, result)
    cpu_s = meter.cpu_s["server"]
    result.metrics = {
        "publications": count,
        "deliveries": tally.total,
        "deliveries_per_s": tally.total / elapsed_s,
        "p50_ms": percentile(samples, 0.50) / 1e6,
        "p99_ms": percentile(samples, 0.99) / 1e6,
        "p999_ms": percentile(samples, 0.999) / 1e6,
        "max_ms": (samples[-1] / 1e6) if samples else float("nan"),
        "cpu_us_per_delivery": 1e6 * cpu_s / max(tally.total, 1),
        "server_cpu_utilisation": cpu_s / elapsed_s,
        "client_cpu_utilisation": meter.cpu_s["client"] / elapsed_s,
    }
    meter.check(result)
    return result


# -- 4: memory per idle connection -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Idle:
    """`connections` idle, fully handshaken connections, after `baseline` warm-up ones."""

    connections: int
    baseline: int = 100
    settle_s: float = 1.0


async def idle_memory(target: Target, redis: RedisServer, spec: Idle) -> Result:
    server = target.start(redis.url)
    tally = Tally()
    warm: list[BenchClient] = []
    clients: list[BenchClient] = []
    try:
        # The first connections pay for lazy imports and pools: keep them out of the figure.
        warm = await connect_all(target, server, tally, spec.baseline)
        await asyncio.sleep(spec.settle_s)
        before = server.sample()
        t0 = time.perf_counter()
        clients = await connect_all(target, server, tally, spec.connections, spec.baseline)
        connect_s = time.perf_counter() - t0
        await asyncio.sleep(spec.settle_s)
        after = server.sample()
        result = Result()
        check_alive(server, [*warm, *clients], result)
        result.metrics = {
            "connections": len(clients),
            "rss_before_mb": before.rss_kb / 1024,
            "rss_after_mb": after.rss_kb / 1024,
            "kb_per_connection": (after.rss_kb - before.rss_kb) / len(clients),
            "connections_per_s": len(clients) / connect_s,
            "cpu_ms_per_connection": 1e3 * (after.cpu_s - before.cpu_s) / len(clients),
        }
        return result
    finally:
        close_all(clients)
        close_all(warm)
        server.stop()
