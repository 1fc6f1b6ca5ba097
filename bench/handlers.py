"""Handlers: events/s through a no-op handler, publish-to-handler latency, rpc calls/s and round
trip, against `python -m services.handlers` in its own process (`python -m bench.handlers`).

The load is what a gateway puts on Redis (services/common/events.py and rpc.py): XADD to
`sb:events` and to `sb:rpc`, replies read from the caller's pub/sub channel. Each event carries
its send time `t`; the no-op handler (`async def handle_event(data)`, on the service's loop)
records `now - t` when it starts, and a `bench:flush` event makes it write its samples to a file.

- events/s: `events` events XADDed as fast as pipelines go; the clock stops when the group has
  every one acked (XINFO GROUPS: lag 0, pending 0). Done for an async and for a sync (thread
  pool) no-op handler.
- publish-to-handler: `rate` events/s for `duration_s`, one XADD each; p50/p99/max of `now - t`.
- rpc: `callers` concurrent callers, each sending its next call when the last was answered,
  for `duration_s`; calls/s and the p50/p99 of XADD-to-reply. With 1 caller it is the latency
  of an idle service.
- rpc as an application sees it: the Python client (`switchboard_client`) calling through a
  gateway process (`rpc` op, gateway, `sb:rpc`, the task, the reply channel, the socket), one
  caller, p50/p99 of `await sb.rpc(...)`.

Targets (issue 5): 5,000 events/s; publish-to-handler p99 < 20 ms; rpc p99 < 10 ms.
"""

import argparse
import asyncio
import json
import tempfile
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
import uvloop
from redis.asyncio import Redis

from services.common.pubsub import Subscriber

from .harness import RedisServer, ServerProcess, free_port, python_argv, split_cores
from .resp import RespConnection, encode_command

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"

PACKAGE = {
    "__init__.py": """
        from . import flush, noop, noop_sync

        event_map = {"bench:noop": noop, "bench:noop-sync": noop_sync, "bench:flush": flush}
        """,
    "samples.py": """
        DELAYS = []
        """,
    "noop.py": """
        import time

        from . import samples

        async def handle_event(data):
            now = time.time()
            samples.DELAYS.append((now, now - data["t"], "async"))
        """,
    "noop_sync.py": """
        import time

        from . import samples

        def handle_event(data):
            now = time.time()
            samples.DELAYS.append((now, now - data["t"], "sync"))
        """,
    "flush.py": """
        import json

        from . import samples

        def handle_event(data):
            delays, samples.DELAYS[:] = list(samples.DELAYS), []
            if data.get("path"):
                with open(data["path"], "w") as f:
                    json.dump(delays, f)
        """,
}
TASK = "async def run(request):\n    return request.data\n"


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    value: str
    target: str
    detail: str


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def _settled(redis: Redis, stream: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for group in await redis.xinfo_groups(stream):
            name, lag, pending = group.get("name"), group.get("lag"), group.get("pending")
            if name in (b"handlers", "handlers") and lag == 0 and pending == 0:
                return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{stream} not drained within {timeout_s} s")


async def _flood(redis: Redis, conn: RespConnection, event: str, count: int) -> float:
    """XADD `count` events as fast as pipelines allow; seconds until all were acked."""
    started = time.perf_counter()
    await _fill(conn, event, count)
    await _settled(redis, "sb:events", timeout_s=120)
    return time.perf_counter() - started


async def _fill(conn: RespConnection, event: str, count: int) -> None:
    for start in range(0, count, 500):
        n = min(count, start + 500) - start
        fields = ("event", event, "source", "api", "ts", "0")
        payload = b"".join(
            encode_command(
                "XADD", "sb:events", "*", *fields, "data", json.dumps({"t": time.time()})
            )
            for _ in range(n)
        )
        await conn.execute(payload, n)


async def _flush(redis: Redis, path: str) -> list[tuple[float, float, str]]:
    """(handler start, publish-to-start delay, kind) of every no-op run since the last flush."""
    await redis.xadd(
        "sb:events", {"event": "bench:flush", "data": json.dumps({"path": path}), "ts": "0"}
    )
    await _settled(redis, "sb:events", timeout_s=30)
    if not path:
        return []
    raw = await asyncio.to_thread(Path(path).read_text)
    return [(float(start), float(delay), kind) for start, delay, kind in json.loads(raw)]


def _rate(starts: list[float]) -> float:
    return (len(starts) - 1) / (max(starts) - min(starts))


async def _paced(conn: RespConnection, rate: float, duration_s: float) -> int:
    interval = 1 / rate
    count = int(rate * duration_s)
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = json.dumps({"t": time.time()})
        await conn.execute(
            encode_command("XADD", "sb:events", "*", "event", "bench:noop", "data", body, "ts", 0),
            1,
        )
    return count


async def _rpc(url: str, callers: int, duration_s: float) -> tuple[list[float], float]:
    """Closed-loop callers; (round trips, elapsed seconds)."""
    channel = f"sb:rpc:reply:bench-{uuid.uuid4().hex[:6]}"
    waiting: dict[str, asyncio.Future[None]] = {}

    def on_reply(_: bytes, raw: bytes) -> None:
        future = waiting.pop(json.loads(raw)["req"], None)
        if future is not None and not future.done():
            future.set_result(None)

    # The gateway's own fast pub/sub reader, so that the client adds little to the round trip.
    subscriber = Subscriber(url, on_reply)
    reader = asyncio.create_task(subscriber.run())
    while not subscriber.connected:  # noqa: ASYNC110  # the Subscriber exposes no event for it
        await asyncio.sleep(0.01)
    await subscriber.subscribe(channel.encode())
    rtts: list[float] = []
    stop_at = time.perf_counter() + duration_s
    conns = [await RespConnection.open(url) for _ in range(callers)]

    async def caller(n: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            req = f"{n}-{i}"
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting[req] = future
            call = {
                "req": req,
                "reply": channel,
                "method": "echo",
                "data": {"i": i},
                "user": "bench",
                "client": f"c{n}",
                "deadline": int((time.time() + 10) * 1000),
            }
            payload = encode_command("XADD", "sb:rpc", "*", "c", json.dumps(call))
            sent = time.perf_counter()
            await conns[n].execute(payload, 1)
            await asyncio.wait_for(future, 10)
            rtts.append(time.perf_counter() - sent)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    return rtts, elapsed


def _write_folders(root: Path) -> tuple[Path, Path]:
    handlers, tasks = root / "event_handlers", root / "tasks"
    (handlers / "event_handlers").mkdir(parents=True)
    tasks.mkdir()
    for name, source in PACKAGE.items():
        (handlers / "event_handlers" / name).write_text(textwrap.dedent(source).lstrip())
    (tasks / "task_echo.py").write_text(TASK)
    return handlers, tasks


def _wait_ready(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the handlers service did not become ready")


async def run(args: argparse.Namespace) -> list[Row]:
    split_cores()
    redis_server = RedisServer()
    redis_server.start()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-handlers-") as tmp:
        handlers, tasks = _write_folders(Path(tmp))
        port = free_port()
        server = ServerProcess(
            "switchboard-handlers",
            python_argv("-m", "services.handlers"),
            port,
            env={
                "REDIS_URL": redis_server.url,
                "SECRET_KEY": SECRET,
                "HANDLERS_PORT": str(port),
                "HANDLERS_HOST": "127.0.0.1",
                "EVENT_HANDLERS_FOLDER": str(handlers),
                "TASKS_FOLDER": str(tasks),
                "LOG_LEVEL": "WARNING",
            },
        )
        redis = Redis.from_url(redis_server.url, protocol=3)
        # Events and calls are written raw (bench/resp.py): redis-py's cost per command would
        # be the client's bottleneck on a shared machine, not the service's.
        conn = await RespConnection.open(redis_server.url)
        try:
            # A backlog first: the service starts with it waiting and drains it at its own
            # pace, which the handlers' start times show, whatever the producer could do.
            await _fill(conn, "bench:noop", args.events)
            await _fill(conn, "bench:noop-sync", args.events)
            server.start()
            _wait_ready(port)
            await _settled(redis, "sb:events", timeout_s=120)
            cpu = server.sample().cpu_s
            backlog = await _flush(redis, str(Path(tmp) / "backlog.json"))
            for kind in ("async", "sync"):
                starts = [start for start, _, k in backlog if k == kind]
                rows.append(
                    Row(
                        f"events/s, no-op handler ({kind}), backlog",
                        f"{_rate(starts):,.0f}",
                        ">= 5,000",
                        f"{len(starts):,} events waiting when the service starts",
                    )
                )
            rows.append(
                Row(
                    "service CPU per event, backlog",
                    f"{cpu / (2 * args.events) * 1e6:.0f} us",
                    "",
                    "start-up included",
                )
            )

            cpu_before = server.sample().cpu_s
            elapsed = await _flood(redis, conn, "bench:noop", args.events)
            cpu = server.sample().cpu_s - cpu_before
            flood = [d for _, d, _ in await _flush(redis, str(Path(tmp) / "flood.json"))]
            rows.append(
                Row(
                    "events/s, no-op handler (async), live",
                    f"{args.events / elapsed:,.0f}",
                    ">= 5,000",
                    f"XADD to last ack, producer included; {cpu / args.events * 1e6:.0f} us "
                    f"service CPU/event; p99 delay {_percentile(flood, 0.99) * 1000:.0f} ms",
                )
            )

            await _paced(conn, args.rate, args.duration)
            delays = [d for _, d, _ in await _flush(redis, str(Path(tmp) / "delays.json"))]
            rows.append(
                Row(
                    "publish-to-handler p99",
                    f"{_percentile(delays, 0.99) * 1000:.2f} ms",
                    "< 20 ms",
                    f"{len(delays):,} events at {args.rate:,.0f}/s; p50 "
                    f"{_percentile(delays, 0.5) * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms",
                )
            )

            for callers in (1, args.callers):
                cpu_before = server.sample().cpu_s
                rtts, elapsed = await _rpc(redis_server.url, callers, args.duration)
                cpu = server.sample().cpu_s - cpu_before
                calls = len(rtts)
                rows.append(
                    Row(
                        f"rpc, {callers} caller{'s' if callers > 1 else ''}",
                        f"{calls / elapsed:,.0f} calls/s",
                        "",
                        f"{calls:,} calls; {cpu / calls * 1e6:.0f} us service CPU/call",
                    )
                )
                rows.append(
                    Row(
                        f"rpc p99 round trip, {callers} caller{'s' if callers > 1 else ''}",
                        f"{_percentile(rtts, 0.99) * 1000:.2f} ms",
                        "< 10 ms",
                        f"p50 {_percentile(rtts, 0.5) * 1000:.2f} ms, "
                        f"max {max(rtts) * 1000:.2f} ms",
                    )
                )
            rtts = await _rpc_via_gateway(redis_server.url, args.duration)
            rows.append(
                Row(
                    "rpc p99 through a gateway (Python client)",
                    f"{_percentile(rtts, 0.99) * 1000:.2f} ms",
                    "< 10 ms",
                    f"{len(rtts):,} calls, 1 caller; p50 {_percentile(rtts, 0.5) * 1000:.2f} ms, "
                    f"max {max(rtts) * 1000:.2f} ms",
                )
            )
        finally:
            conn.close()
            await redis.aclose()
            server.stop()
            redis_server.close()
    return rows


async def _rpc_via_gateway(redis_url: str, duration_s: float) -> list[float]:
    """One caller's round trips through a gateway process, timed around the client's call."""
    from switchboard_client import Switchboard

    port = free_port()
    gateway = ServerProcess(
        "switchboard-gateway",
        python_argv("-m", "services.gateway"),
        port,
        env={
            "REDIS_URL": redis_url,
            "SECRET_KEY": SECRET,
            "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            # One connection calls as fast as answers come: above the default 50 commands/s.
            "GATEWAY_COMMANDS_PER_S": "100000",
            "GATEWAY_COMMAND_BURST": "100000",
        },
    )
    gateway.start()
    try:
        _wait_ready(port)
        token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET)
        rtts: list[float] = []
        async with Switchboard(f"ws://127.0.0.1:{port}/ws", token=token) as sb:
            await sb.rpc("echo", 0)  # the first call also subscribes the reply channel path
            end = time.monotonic() + duration_s
            while time.monotonic() < end:
                started = time.perf_counter()
                await sb.rpc("echo", {"n": len(rtts)})
                rtts.append(time.perf_counter() - started)
        return rtts
    finally:
        gateway.stop()


def print_table(rows: list[Row]) -> None:
    headers = ("measure", "value", "target", "detail")
    table = [headers, *((r.measure, r.value, r.target, r.detail) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handlers", description=__doc__)
    parser.add_argument("--events", type=int, default=30_000, help="events per flood")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced events per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per paced run")
    parser.add_argument("--callers", type=int, default=16, help="concurrent rpc callers")
    args = parser.parse_args()
    print_table(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
