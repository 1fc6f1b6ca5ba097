"""The rooms service alone: how fast one replica drains a backlog of one room's updates.

`python -m bench.rooms_drain`: for each batch size (`ROOMS_BATCH`), the service is started on a
private Redis, 50 members join one room, the service is paused (SIGSTOP) while the updates are
queued on `sb:rooms:cmd`, then resumed and timed until the room reaches its last version. The
CPU is the service's own (/proc), Redis excluded. No gateway takes part: this is the rooms
service's capacity, not the update-to-receive latency of `python -m bench --workloads room`.
"""

import argparse
import asyncio
import signal
import time

from redis.asyncio import Redis

from services.common.redis import Keys
from services.common.rooms import RoomCommand

from .harness import RedisServer, split_cores
from .rooms import start_rooms_service

KEYS = Keys()
MEMBERS = 50
SECRET = "bench-rooms-drain-secret-0123456789"


async def drain(redis: RedisServer, batch: int, updates: int) -> tuple[float, float]:
    """(updates/s, us of service CPU per update) for one batch size."""
    service = start_rooms_service(
        redis,
        SECRET,
        f"rooms-drain-{batch}",
        ROOMS_BATCH=str(batch),
        ROOMS_CONSUMER=f"drain-{batch}",
    )
    client = Redis.from_url(redis.url)
    room = f"drain-{batch}"
    try:
        for m in range(MEMBERS):
            join = RoomCommand("join", room, f"c{m}", f"u{m}", "gw", f"j{m}")
            await client.xadd(KEYS.rooms_cmd, {"c": join.encode()})
        await _version(client, room, MEMBERS)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGSTOP)
        async with client.pipeline(transaction=False) as pipe:
            for n in range(updates):
                member = n % MEMBERS
                update = RoomCommand(
                    "update", room, f"c{member}", f"u{member}", "gw", str(n), patch={"n": n}
                )
                pipe.xadd(KEYS.rooms_cmd, {"c": update.encode()})
            await pipe.execute()
        before, started = service.sample().cpu_s, time.perf_counter()
        service.proc.send_signal(signal.SIGCONT)
        await _version(client, room, MEMBERS + updates)
        elapsed, cpu_s = time.perf_counter() - started, service.sample().cpu_s - before
        return updates / elapsed, cpu_s / updates * 1e6
    finally:
        await client.aclose()
        service.stop()


async def _version(client: Redis, room: str, version: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while int(await client.hget(KEYS.room(room), "version") or 0) < version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"room {room} did not reach version {version}")
        await asyncio.sleep(0.002)


async def main(args: argparse.Namespace) -> None:
    split_cores()  # the service on its own core, Redis and this process on the other
    redis = RedisServer()
    redis.start()
    try:
        print(f"{'batch':>5}  {'updates':>7}  {'updates/s':>9}  {'CPU us/update':>13}")
        for batch in args.batches:
            updates = args.updates if batch > 1 else args.updates // 5
            rate, cpu_us = await drain(redis, batch, updates)
            print(f"{batch:>5}  {updates:>7,}  {rate:>9,.0f}  {cpu_us:>13.1f}")
    finally:
        redis.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rooms_drain", description=__doc__)
    parser.add_argument(
        "--batches", type=lambda s: [int(b) for b in s.split(",")], default=[64, 14, 1]
    )
    parser.add_argument("--updates", type=int, default=20_000, help="per run (a fifth at 1)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
