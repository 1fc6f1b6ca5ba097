"""Rooms: `room.update` throughput and update-to-receive latency, Switchboard only.

Two gateway processes, the rooms service (`python -m services.rooms`) and Redis, as deployed.
`rooms` rooms of `members` connections each; member i is in room i % rooms and connects to
gateway (i // rooms) % 2, so every room has half its members on each gateway. Every member sends
`room.update` with a merge patch `{"ts": <send time>}` on one paced schedule (`rate` updates per
second in total, consecutive updates in different rooms), without waiting for the previous
answer. Every member counts the pushes `{"push":"room",...,"patch":{"ts":...}}` it receives;
every `timed_every`-th member of a room (the same number on each gateway) also times each push
when the socket read that holds it returns (timing every push in every member cost the load
client, which shares its core with Redis, a fifth of a core at 262,000 pushes/s, and that cost
showed as latency). An update is counted once the gateway answered it; every member must get
the push of every answered update of its room.

python-socketio has no rooms service to compare with: the peer's column stays empty.
"""

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .harness import RedisServer, ServerProcess, free_port, python_argv
from .targets import NativeClient, SwitchboardTarget, Target
from .workloads import (
    CONNECT_CONCURRENCY,
    Meter,
    Result,
    check_alive,
    close_all,
    count_losses,
    drain,
    percentile,
)
from .wsclient import Tally, open_client, source_ip

GATEWAYS = 2


@dataclass(frozen=True, slots=True)
class RoomsSpec:
    rooms: int
    members: int  # per room
    rate: float  # room updates per second offered, all rooms together
    duration_s: float
    in_flight: int  # updates sent but not answered yet, at most
    paced_rate: float = 0.0  # then a second run at this rate (0: none), for latency alone
    timed_every: int = 1  # every Nth member of a room times its pushes; all count them


class RoomClient(NativeClient):
    """A member of one room: joins it, sends updates, counts and times the room's patch pushes.

    A delivery is a push whose patch starts with "ts" (`marker`); membership pushes carry
    `"patch":{}` and are not counted. Replies to `room.join` and `room.update` are control
    messages: `acked` counts the updates answered, `refused` keeps the errors.
    """

    marker = b'"patch":{"ts":'
    ts_key = marker  # not the "ts" of the state in a reply
    probe_at, probe = 11, ord("o")  # {"push":"room" (not "join": j-o-i); replies: {"id":...

    def __init__(
        self,
        tally: Tally,
        answers: Tally,
        path: str,
        headers: Sequence[tuple[str, str]],
        room: str,
    ) -> None:
        super().__init__(tally, path, headers)
        self.answers = answers  # updates answered, all members together
        self.room = room
        self.index = 0  # member number: room index % rooms, gateway (index // rooms) % 2
        self.acked = 0
        self.refused: list[str] = []
        self._next_id = 2  # 1 is the join

    def subscribe_frame(self, channel: str) -> str:
        return json.dumps({"id": 1, "op": "room.join", "room": channel})

    def update(self) -> None:
        self._next_id += 1
        ts = time.perf_counter_ns()
        self.send_text(
            f'{{"id":{self._next_id},"op":"room.update","room":"{self.room}",'
            f'"patch":{{"ts":{ts}}}}}'
        )

    def on_control_message(self, payload: bytes) -> None:
        for line in payload.splitlines():
            if line.startswith(b'{"id":1,'):
                super().on_control_message(line)  # the join's answer
            elif line.startswith(b'{"id"'):
                if line.find(b'"error"', 0, 40) >= 0:
                    self.refused.append(line[:200].decode(errors="replace"))
                else:
                    self.acked += 1
                answers = self.answers
                answers.total += 1
                answers.last_ns = time.perf_counter_ns()
                answers.check()


async def rooms_run(target: Target, redis: RedisServer, spec: RoomsSpec) -> Result:
    if not isinstance(target, SwitchboardTarget):
        raise ValueError("rooms are Switchboard's own: python-socketio has no rooms service")
    rooms = start_rooms_service(redis, target.secret)
    gateways: list[ServerProcess] = []
    clients: list[RoomClient] = []
    try:
        # Each member sends rate / (rooms x members) updates per second: with few rooms that is
        # over the default command rate limit (50/s per connection), raised to twice that.
        per_member = spec.rate / (spec.rooms * spec.members)
        limits = {
            "GATEWAY_COMMANDS_PER_S": str(max(50.0, 2 * per_member)),
            "GATEWAY_COMMAND_BURST": str(max(100, int(4 * per_member))),
        }
        for n in range(GATEWAYS):
            name = f"switchboard-rooms-gw{n + 1}"
            gateways.append(target.start_gateway(redis.url, name, limits))
        tally, answers = Tally(), Tally()
        clients = await _join_all(target, gateways, tally, answers, spec)
        await _warm_up(clients, tally, answers)
        others = {f"gateway{n + 1}": g.pid for n, g in enumerate(gateways[1:], 1)}
        others["rooms"] = rooms.pid
        servers = [*gateways, rooms]
        meter = Meter(gateways[0], redis, others)
        before = await _writes(target, gateways)
        result = await _paced(meter, servers, clients, tally, answers, spec)
        frames, writes = (
            a - b for a, b in zip(await _writes(target, gateways), before, strict=True)
        )
        result.metrics["rooms"] = spec.rooms
        if writes:
            _write_costs(result, frames, writes, spec.rate)
        if spec.paced_rate:
            # The same members at a rate this machine keeps up with: latency without a queue.
            paced = replace(spec, rate=spec.paced_rate, in_flight=10 * spec.in_flight)
            quiet = await _paced(meter, servers, clients, tally, answers, paced)
            for key in ("updates_per_s", "p50_ms", "p99_ms", "max_ms", "other_load_cores"):
                result.metrics[f"paced_{key}"] = quiet.metrics[key]
            result.metrics["paced_rate"] = spec.paced_rate
            result.lost += quiet.lost
            result.notes.extend(f"at {spec.paced_rate:,.0f} updates/s: {n}" for n in quiet.notes)
        return result
    finally:
        close_all(clients)
        for gateway in gateways:
            gateway.stop()
        rooms.stop()


def _is_gateway(name: str) -> bool:
    return name == "server" or name.startswith("gateway")


def _write_costs(result: Result, frames: float, writes: float, rate: float) -> None:
    """Frames per socket write, the gateways' kernel time per write, and what the writes alone
    would take at the offered rate: the floor under any user-space work.

    A member gets one push per update of its room; how many share a write depends on how many
    arrive together, so the writes an update costs grow with the number of rooms, and each
    costs the kernel the same whatever the server does in Python.
    """
    metrics = result.metrics
    updates = metrics["updates"]
    metrics["frames_per_write"] = frames / writes
    metrics["gateways_kernel_us_per_write"] = 1e6 * metrics["gateways_system_s"] / writes
    writes_at_rate = rate * writes / max(updates, 1)
    metrics["writes_per_s_at_offered"] = writes_at_rate
    metrics["kernel_cores_at_offered"] = (
        writes_at_rate * metrics["gateways_kernel_us_per_write"] / 1e6
    )


async def _writes(target: Target, gateways: Sequence[ServerProcess]) -> tuple[float, float]:
    """Frames and socket writes of the gateways so far (their own counters)."""
    counts = [await target.counters(gateway) for gateway in gateways]
    return sum(c.get("frames", 0) for c in counts), sum(c.get("writes", 0) for c in counts)


def start_rooms_service(
    redis: RedisServer, secret: str, name: str = "switchboard-rooms", **settings: str
) -> ServerProcess:
    """`python -m services.rooms` on a free port, with these extra settings (`ROOMS_BATCH`...)."""
    port = free_port()
    env = {
        "REDIS_URL": redis.url,
        "SECRET_KEY": secret,
        "ROOMS_HOST": "127.0.0.1",
        "ROOMS_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    service = ServerProcess(name, python_argv("-m", "services.rooms"), port, env)
    service.start()
    return service


def _room(i: int, spec: RoomsSpec) -> str:
    return f"bench-room-{i % spec.rooms}"


async def _join_all(
    target: SwitchboardTarget,
    gateways: Sequence[ServerProcess],
    tally: Tally,
    answers: Tally,
    spec: RoomsSpec,
) -> list[RoomClient]:
    """Connect every member to its gateway and join its room, a bounded number at a time."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[RoomClient] = []

    async def one(i: int) -> None:
        async with gate:
            headers = [("Authorization", f"Bearer {target.token({'sub': f'u{i}'})}")]
            client = RoomClient(tally, answers, "/ws", headers, _room(i, spec))
            client.index = i
            client.timed = (i // spec.rooms) % spec.timed_every == 0
            clients.append(client)
            port = gateways[(i // spec.rooms) % len(gateways)].port
            await open_client(client, "127.0.0.1", port, source_ip(i))
            await client.subscribe(client.room)

    total = spec.rooms * spec.members
    try:
        await asyncio.gather(*(one(i) for i in range(total)))
    except BaseException:
        close_all(clients)
        raise
    clients.sort(key=lambda c: c.index)
    return clients


async def _warm_up(clients: Sequence[RoomClient], tally: Tally, answers: Tally) -> None:
    """One update per room, answered, and received by all its members, before anything is
    measured."""
    tally.reset()
    answers.reset()
    first = {c.room: c for c in reversed(clients)}
    for client in first.values():
        client.update()
    if not await drain(answers, len(first), idle_s=5.0):
        raise RuntimeError(f"warm-up: {len(first) - answers.total} updates got no answer")
    if not await drain(tally, len(clients), idle_s=5.0):
        missing = sum(1 for c in clients if c.count == 0)
        raise RuntimeError(f"warm-up: {missing} room members got no push of the first update")
    refused = [e for c in clients for e in c.refused]
    if refused:
        raise RuntimeError(f"warm-up: update refused: {refused[0]}")
    for client in clients:
        client.count = client.acked = 0
        client.refused.clear()
    tally.reset()


async def _paced(
    meter: Meter,
    servers: Sequence[ServerProcess],
    clients: Sequence[RoomClient],
    tally: Tally,
    answers: Tally,
    spec: RoomsSpec,
) -> Result:
    # Member k % n sends update k (clients are ordered by index): consecutive updates go to
    # different rooms, and each member sends at most rate / n updates per second.
    n = len(clients)
    for client in clients:
        client.count = client.acked = 0
        client.refused.clear()
    tally.reset(latency=True)
    answers.reset()
    meter.start()
    t0 = time.perf_counter_ns()
    deadline = t0 + int(spec.duration_s * 1e9)
    sent = 0
    while (now := time.perf_counter_ns()) < deadline:
        due = int((now - t0) * spec.rate / 1e9) + 1  # on the schedule, this many by now
        room = spec.in_flight - (sent - answers.total)
        batch = min(due - sent, room)
        if batch > 0:
            for k in range(sent, sent + batch):
                clients[k % n].update()
            sent += batch
        elif due > sent:  # behind the schedule: the window is full, wait for an answer
            left = (deadline - now) / 1e9
            await answers.wait_for(sent - spec.in_flight + 1, timeout_s=max(left, 0.001))
            continue
        await asyncio.sleep(0.001)
    send_s = (time.perf_counter_ns() - t0) / 1e9
    answered = await drain(answers, sent, idle_s=3.0)
    acked_by_room: dict[str, int] = {}
    for client in clients:
        acked_by_room[client.room] = acked_by_room.get(client.room, 0) + client.acked
    acked = sum(acked_by_room.values())
    drained = await drain(tally, acked * spec.members)
    meter.stop()
    elapsed_s = (max(tally.last_ns, answers.last_ns) - t0) / 1e9
    samples = sorted(tally.latencies_ns or [])

    result = Result()
    count_losses(clients, lambda i: acked_by_room[clients[i].room], result)
    if not answered:
        result.notes.append(f"only {answers.total} of {sent} updates were answered")
    if not drained:
        result.notes.append("pushes stopped before every answered update arrived everywhere")
    refused = [e for c in clients for e in c.refused]
    if refused:
        result.notes.append(f"{len(refused)} updates refused, e.g. {refused[0]}")
    if sent < 0.95 * spec.rate * spec.duration_s:
        result.notes.append(
            f"{sent / send_s:,.0f} of the {spec.rate:,.0f} updates/s offered were sent: "
            f"{spec.in_flight} unanswered updates held the rest back"
        )
    for server in servers[1:]:
        if not server.alive():
            result.notes.append(f"{server.name} died")
    check_alive(servers[0], clients, result)
    cpu = meter.cpu_s
    gateways_s = sum(v for k, v in cpu.items() if _is_gateway(k))
    gateways_system_s = sum(v for k, v in meter.system_s.items() if _is_gateway(k))
    result.metrics = {
        "updates": acked,
        "offered_updates_per_s": spec.rate,
        "sent_updates_per_s": sent / send_s,
        "elapsed_s": elapsed_s,
        "updates_per_s": acked / elapsed_s,
        "pushes_per_s": tally.total / elapsed_s,
        "p50_ms": percentile(samples, 0.50) / 1e6,
        "p99_ms": percentile(samples, 0.99) / 1e6,
        "max_ms": (samples[-1] / 1e6) if samples else float("nan"),
        "gateways_cpu_us_per_update": 1e6 * gateways_s / max(acked, 1),
        "rooms_cpu_us_per_update": 1e6 * cpu["rooms"] / max(acked, 1),
        "redis_cpu_us_per_update": 1e6 * cpu["redis"] / max(acked, 1),
        "gateways_system_s": gateways_system_s,
        "gateways_cpu_utilisation": gateways_s / elapsed_s,
        "rooms_cpu_utilisation": cpu["rooms"] / elapsed_s,
        "redis_cpu_utilisation": cpu["redis"] / elapsed_s,
        "client_cpu_utilisation": cpu["client"] / elapsed_s,
    }
    meter.check(result)
    return result
