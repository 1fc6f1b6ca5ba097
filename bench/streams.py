"""Streams: PTG-style WebSocket push and pull against Redis's own speed.

`python -m bench.streams` starts a private redis-server and the streams service
(`python -m services.streams`, on a core of its own when there are two) and measures:

1. push: 1 and 4 producers on `/data/bench/push?batch=true&ack=true`, batches of 100 entries
   (1 KB, then 100 KB) with ptgctl's end offsets, each producer sending a batch once its
   previous one was acked;
2. the physical reference, in the same run: as many redis-py clients sending pipelines of the
   same 100 `XADD MAXLEN ~ 1000` straight into the same Redis, one after the other. The two
   alternate `--repeat` times and each keeps its median run;
3. pull: 100 readers of one stream (`last_entry_id=$&latest=false&count=100`), one producer
   pushing one 1 KB entry per message at a paced rate; each entry carries its send time and is
   timed when a reader's binary frame arrives. Every reader must receive every entry.

Targets: push entries/s at least 70% of the raw pipeline's; pull p99 under 20 ms.
"""

import argparse
import asyncio
import json
import os
import secrets
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import jwt
from redis.asyncio import Redis

from .harness import RedisServer, ServerProcess, free_port, python_argv, split_cores
from .wsclient import Tally, WsClient, open_client, source_ip

BATCH = 100
PULL_ENTRY = 1000
OP_BINARY = 2
STREAM = "bench"


@dataclass(frozen=True, slots=True)
class Throughput:
    name: str
    entries: int
    seconds: float
    entry_bytes: int

    @property
    def per_s(self) -> float:
        return self.entries / self.seconds

    @property
    def mb_s(self) -> float:
        return self.per_s * self.entry_bytes / 1e6


@dataclass(frozen=True, slots=True)
class Latency:
    readers: int
    entries: int
    received: int
    expected: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _batch(entry_bytes: int) -> tuple[str, bytes]:
    """ptgctl's framing: `[[sid, end offset], ...]` and the concatenated entries."""
    header = json.dumps([[STREAM, (i + 1) * entry_bytes] for i in range(BATCH)])
    return header, os.urandom(entry_bytes) * BATCH


async def push_run(
    base: str, token: str, entry_bytes: int, batches: int, producers: int
) -> Throughput:
    """`producers` sockets, each pushing its share of `batches` one ack after the other."""
    header, data = _batch(entry_bytes)
    url = f"{base}/data/{STREAM}/push?batch=true&ack=true"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        sockets = [
            await session.ws_connect(url, headers=headers, max_msg_size=0) for _ in range(producers)
        ]

        async def produce(ws: aiohttp.ClientWebSocketResponse, n: int) -> None:
            for _ in range(n):
                await ws.send_str(header)
                await ws.send_bytes(data)
                ack = await ws.receive_str()
                assert ack.count(",") == BATCH - 1, ack[:200]

        await asyncio.gather(*(produce(ws, 2) for ws in sockets))  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(produce(ws, batches // producers) for ws in sockets))
        elapsed = time.perf_counter() - started
        for ws in sockets:
            await ws.close()
    name = f"ws push {entry_bytes // 1000} KB x{BATCH}, {producers} producer(s)"
    return Throughput(name, batches // producers * producers * BATCH, elapsed, entry_bytes)


async def raw_run(redis_url: str, entry_bytes: int, batches: int, producers: int) -> Throughput:
    """The same entries by `producers` redis-py clients, one pipeline of XADDs after the other."""
    data = os.urandom(entry_bytes)
    clients = [Redis.from_url(redis_url, protocol=3) for _ in range(producers)]

    async def produce(redis: Redis, n: int) -> None:
        for _ in range(n):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.xadd("raw:" + STREAM, {"d": data}, maxlen=1000, approximate=True)
                await pipe.execute()

    try:
        await asyncio.gather(*(produce(r, 2) for r in clients))
        started = time.perf_counter()
        await asyncio.gather(*(produce(r, batches // producers) for r in clients))
        elapsed = time.perf_counter() - started
        await clients[0].delete("raw:" + STREAM)
    finally:
        for r in clients:
            await r.aclose()
    name = f"raw XADD pipeline {entry_bytes // 1000} KB x{BATCH}, {producers} client(s)"
    return Throughput(name, batches // producers * producers * BATCH, elapsed, entry_bytes)


class PullClient(WsClient):
    """A pull socket on the raw-protocol client: headers are ignored, each binary frame's
    entries (1000 bytes, a send time first) are timed and counted."""

    def __init__(self, tally: Tally, path: str, headers: Sequence[tuple[str, str]]) -> None:
        super().__init__(tally, path, headers)
        self.received = 0

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode != OP_BINARY:
            super()._control_frame(opcode, payload)
            return
        now = time.perf_counter_ns()
        record = self.tally.latencies_ns
        for offset in range(0, len(payload), PULL_ENTRY):
            (sent,) = struct.unpack_from("<q", payload, offset)
            if record is not None:
                record.append(now - sent)
            self.received += 1
        self.tally.total += len(payload) // PULL_ENTRY
        self.tally.check()


async def pull_run(base: str, token: str, readers: int, rate: float, entries: int) -> Latency:
    headers = {"Authorization": f"Bearer {token}"}
    tally = Tally()
    tally.reset(latency=True)
    host, port = base.removeprefix("http://").split(":")
    async with aiohttp.ClientSession() as session:
        # The stream must exist before a pull (unknown streams are refused).
        async with session.put(f"{base}/streams/live", json={}, headers=headers) as r:
            assert r.status == 200
        path = "/data/live/pull?last_entry_id=$&latest=false&count=100"
        clients = [
            await open_client(PullClient(tally, path, list(headers.items())), host, int(port),
                              source_ip(n))
            for n in range(readers)
        ]  # fmt: skip
        await asyncio.sleep(1.0)  # every reader has joined the shared read loop
        push_url = f"{base.replace('http://', 'ws://')}/data/live/push?ack=true"
        async with session.ws_connect(push_url, headers=headers) as producer:
            padding = os.urandom(PULL_ENTRY - 8)
            start = time.perf_counter()
            for i in range(entries):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send_bytes(struct.pack("<q", time.perf_counter_ns()) + padding)
                await producer.receive_str()
        await tally.wait_for(readers * entries, timeout_s=10)
        for client in clients:
            client.close()
    latencies = [ns / 1e6 for ns in tally.latencies_ns or []]
    return Latency(
        readers=readers,
        entries=entries,
        received=sum(c.received for c in clients),
        expected=readers * entries,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=float("nan")),
    )


def start_service(redis: RedisServer, secret: str) -> tuple[ServerProcess, str]:
    port = free_port()
    env = {
        "REDIS_URL": redis.url,
        "SECRET_KEY": secret,
        "JWT_REVOCATION_DB": "off",
        "STREAMS_HOST": "127.0.0.1",
        "STREAMS_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    service = ServerProcess("switchboard-streams", python_argv("-m", "services.streams"), port, env)
    service.start()
    return service, f"http://127.0.0.1:{port}"


async def run(args: argparse.Namespace) -> int:
    split_cores()
    redis = RedisServer()
    redis.start()
    secret = secrets.token_urlsafe(48)
    token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, secret, "HS256")
    service, base = start_service(redis, secret)
    ws_base = base.replace("http://", "ws://")
    rows: list[tuple[Throughput, Throughput]] = []
    try:
        for producers in args.producers:
            for entry_bytes, batches in ((1000, args.batches_1k), (100_000, args.batches_100k)):
                # Alternate the two, `repeat` times each, and keep each one's median run: the
                # machine's other load then weighs on both alike.
                raws, pushes = [], []
                for _ in range(args.repeat):
                    raws.append(await raw_run(redis.url, entry_bytes, batches, producers))
                    pushes.append(await push_run(ws_base, token, entry_bytes, batches, producers))
                rows.append((_median(pushes), _median(raws)))
        pull = await pull_run(base, token, args.readers, args.rate, args.entries)
    finally:
        service.stop()
        redis.close()
    ok = _report(rows, pull)
    return 0 if ok else 1


def _median(runs: list[Throughput]) -> Throughput:
    return sorted(runs, key=lambda r: r.per_s)[len(runs) // 2]


def _report(rows: list[tuple[Throughput, Throughput]], pull: Latency) -> bool:
    out = sys.stdout.write
    out(f"{'workload':<48}{'entries/s':>12}{'MB/s':>10}{'vs raw':>9}{'target':>9}\n")
    ok = True
    for pushed, raw in rows:
        ratio = pushed.per_s / raw.per_s
        ok &= ratio >= 0.7
        out(f"{raw.name:<48}{raw.per_s:>12,.0f}{raw.mb_s:>10,.1f}{'1.00':>9}{'':>9}\n")
        out(f"{pushed.name:<48}{pushed.per_s:>12,.0f}{pushed.mb_s:>10,.1f}{ratio:>9.2f}"
            f"{'>= 0.70':>9}\n")  # fmt: skip
    complete = pull.received == pull.expected
    ok &= complete and pull.p99_ms < 20
    out(
        f"\npull: {pull.readers} readers x {pull.entries} entries of 1 KB: received "
        f"{pull.received}/{pull.expected}; push-to-receive p50 {pull.p50_ms:.2f} ms, "
        f"p99 {pull.p99_ms:.2f} ms (target < 20), max {pull.max_ms:.2f} ms\n"
    )
    out(f"targets {'met' if ok else 'NOT met'}\n")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--batches-1k", type=int, default=200, help="batches of 100 x 1 KB")
    parser.add_argument("--batches-100k", type=int, default=20, help="batches of 100 x 100 KB")
    parser.add_argument(
        "--producers", type=int, nargs="+", default=[1, 4], help="concurrent pushers per run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0, help="pull entries pushed per s")
    parser.add_argument("--entries", type=int, default=500, help="entries pushed for pull")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
