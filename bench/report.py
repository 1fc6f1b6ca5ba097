"""The results table, the targets check and the JSON file: formatting only, no measuring."""

import json
import math
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import ALL_CPUS, PLACEMENT
from .workloads import Result

Results = dict[str, dict[str, Result | str]]  # workload -> system -> result, or why it failed


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a metric of a workload, and which direction is better."""

    workload: str
    metric: str
    label: str
    higher_is_better: bool
    digits: int = 1


WORKLOAD_TITLES = {
    "busy": "1 channel x 1,000 subscribers",
    "channels": "1,000 channels x 1 subscriber",
    "latency": "latency, 100 subs x 100 pub/s",
    "idle": "{connections:,} idle connections",
    "sio": "socket.io /events x 1,000 sockets",
    "rooms": "rooms, 2 gateways, 50 per room",
    "room": "1 room, 2 gateways, 50 members",
}


def title(results: Results, workload: str) -> str:
    """The workload's name, with the connection count it actually ran with."""
    counts = [
        int(r.metrics.get("connections", 0))
        for r in results.get(workload, {}).values()
        if isinstance(r, Result)
    ]
    return WORKLOAD_TITLES[workload].format(connections=max(counts, default=10_000))


ROWS = [
    Row("busy", "deliveries_per_s", "deliveries/s (higher is better)", True, 0),
    Row("busy", "cpu_us_per_delivery", "server CPU us/delivery", False, 2),
    Row("busy", "frames_per_write", "frames per socket write", True, 1),
    Row("busy", "lost", "lost deliveries", False, 0),
    Row("channels", "publications_per_s", "publications/s (higher is better)", True, 0),
    Row("channels", "cpu_us_per_publication", "server CPU us/publication", False, 1),
    Row("channels", "redis_cpu_us_per_publication", "redis CPU us/publication", False, 1),
    Row("channels", "lost", "lost deliveries", False, 0),
    Row("latency", "p50_ms", "p50 publish-to-receive ms", False, 2),
    Row("latency", "p99_ms", "p99 publish-to-receive ms", False, 2),
    Row("latency", "max_ms", "max publish-to-receive ms", False, 2),
    Row("latency", "cpu_us_per_delivery", "server CPU us/delivery", False, 2),
    Row("latency", "lost", "lost deliveries", False, 0),
    Row("idle", "kb_per_connection", "RSS KB/connection", False, 1),
    Row("idle", "connections_per_s", "connections opened/s (higher is better)", True, 0),
    Row("sio", "deliveries_per_s", "deliveries/s (higher is better)", True, 0),
    Row("sio", "cpu_us_per_delivery", "server CPU us/delivery", False, 2),
    Row("sio", "lost", "lost deliveries", False, 0),
    Row("rooms", "updates_per_s", "room updates/s (higher is better)", True, 0),
    Row("rooms", "pushes_per_s", "pushes received/s (higher is better)", True, 0),
    Row("rooms", "p50_ms", "p50 update-to-receive ms", False, 2),
    Row("rooms", "p99_ms", "p99 update-to-receive ms", False, 2),
    Row("rooms", "max_ms", "max update-to-receive ms", False, 2),
    Row("rooms", "paced_updates_per_s", "paced run: room updates/s", True, 0),
    Row("rooms", "paced_p50_ms", "paced run: p50 update-to-receive ms", False, 2),
    Row("rooms", "paced_p99_ms", "paced run: p99 update-to-receive ms", False, 2),
    Row("rooms", "gateways_cpu_us_per_update", "2 gateways' CPU us/update", False, 1),
    Row("rooms", "rooms_cpu_us_per_update", "rooms service CPU us/update", False, 1),
    Row("rooms", "redis_cpu_us_per_update", "redis CPU us/update", False, 1),
    Row("rooms", "frames_per_write", "frames per socket write", True, 2),
    Row("rooms", "gateways_kernel_us_per_write", "gateways' kernel us/socket write", False, 2),
    Row("rooms", "kernel_cores_at_offered", "kernel cores for writes at offered rate", False, 2),
    Row("rooms", "lost", "lost pushes", False, 0),
    Row("room", "updates_per_s", "room updates/s (higher is better)", True, 0),
    Row("room", "pushes_per_s", "pushes received/s (higher is better)", True, 0),
    Row("room", "p50_ms", "p50 update-to-receive ms", False, 2),
    Row("room", "p99_ms", "p99 update-to-receive ms", False, 2),
    Row("room", "gateways_cpu_us_per_update", "2 gateways' CPU us/update", False, 1),
    Row("room", "rooms_cpu_us_per_update", "rooms service CPU us/update", False, 1),
    Row("room", "redis_cpu_us_per_update", "redis CPU us/update", False, 1),
    Row("room", "frames_per_write", "frames per socket write", True, 2),
    Row("room", "gateways_kernel_us_per_write", "gateways' kernel us/socket write", False, 2),
    Row("room", "kernel_cores_at_offered", "kernel cores for writes at offered rate", False, 2),
    Row("room", "lost", "lost pushes", False, 0),
]

# The targets for Switchboard: (workload, metric, limit, text, kind). Kind "max": the
# figure must not exceed the limit; "min": must reach it; "ratio": Switchboard's figure divided
# by the peer's must reach it.
TARGETS = [
    ("busy", "cpu_us_per_delivery", 1.0, "<= 1 us server CPU per delivery, busy channel", "max"),
    ("channels", "cpu_us_per_publication", 12.0, "<= 12 us server CPU per publication", "max"),
    ("latency", "p99_ms", 5.0, "p99 < 5 ms at 10,000 deliveries/s", "max"),
    ("idle", "kb_per_connection", 12.0, "<= 12 KB RSS per idle connection", "max"),
    ("sio", "deliveries_per_s", 2.0, ">= 2x python-socketio's deliveries/s on /events", "ratio"),
    ("room", "updates_per_s", 5000.0, ">= 5,000 room updates/s, one room", "min"),
    ("room", "p99_ms", 10.0, "room update p99 < 10 ms, one room", "max"),
]
# The room targets are for one review room served by 2 gateways (`room`). The same rate
# spread over many rooms (`rooms`) is checked too; when missed, the line says what it would take
# of the machine (see BENCHMARKS.md).
SPREAD_RATE = 5000.0
SPREAD_P99_MS = 10.0


def value(result: Result | str | None, metric: str) -> float | None:
    if not isinstance(result, Result):
        return None
    if metric == "lost":
        return float(result.lost)
    return result.metrics.get(metric)


def fmt(number: float | None, digits: int) -> str:
    if number is None or math.isnan(number):
        return "-"
    return f"{number:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or not b or math.isnan(a) or math.isnan(b):
        return "-"
    r = a / b
    return f"{r:.0f}" if r >= 100 else f"{r:.2f}" if r >= 1 else f"{r:.3g}"


def table(results: Results, systems: list[str], labels: dict[str, str]) -> str:
    """Plain text: workload | metric | <system> ... | ratio (first system / second)."""
    head = ["workload", "metric", *(labels[s] for s in systems)]
    if len(systems) == 2:
        head.append("ratio")
    lines = [head]
    for row in ROWS:
        if row.workload not in results:
            continue
        cells = [value(results[row.workload].get(s), row.metric) for s in systems]
        line = [title(results, row.workload), row.label, *(fmt(c, row.digits) for c in cells)]
        if len(systems) == 2:
            a, b = cells
            line.append(ratio(a, b))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        cols = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append(" | ".join(cols))
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def notes(results: Results, labels: dict[str, str]) -> list[str]:
    lines = []
    for workload, by_system in results.items():
        for system, result in by_system.items():
            where = f"{title(results, workload)}, {labels[system]}"
            if isinstance(result, str):
                lines.append(f"{where}: not measured: {result}")
            else:
                lines.extend(f"{where}: {note}" for note in result.notes)
    return lines


def target_check(results: Results, system: str, peer: str | None = None) -> list[str]:
    lines = []
    for workload, metric, limit, text, kind in TARGETS:
        got = value(results.get(workload, {}).get(system), metric)
        if got is None:
            continue
        if kind == "ratio":
            theirs = value(results.get(workload, {}).get(peer or ""), metric)
            if not theirs:
                continue
            got /= theirs
        met = got <= limit if kind == "max" else got >= limit
        lines.append(f"{text}: {got:.2f} -> {'met' if met else 'MISSED'}")
    spread = results.get("rooms", {}).get(system)
    if isinstance(spread, Result):
        lines.append(spread_check(spread, len(PLACEMENT.server)))
    return lines


def spread_check(result: Result, server_cores: int) -> str:
    """The one-room targets' rate over many rooms and, when missed, the cores it would take at
    this run's CPU per update: the whole machine's, and what would be left of them if the
    gateways' own code took no CPU at all (their kernel time for the socket writes stays)."""
    m = result.metrics
    rate, p99 = m.get("updates_per_s", 0.0), m.get("p99_ms", math.nan)
    head = f"5,000 updates/s with p99 < 10 ms over {m.get('rooms', 0):.0f} rooms: {rate:,.0f}/s"
    head += f", p99 {p99:.1f} ms"
    if rate >= SPREAD_RATE and p99 < SPREAD_P99_MS:
        return f"{head} -> met"
    if "kernel_cores_at_offered" not in m or not rate:
        return f"{head} -> MISSED"
    offered = m["offered_updates_per_s"]
    utilisation = ("gateways", "rooms", "redis", "client")
    machine = sum(m[f"{name}_cpu_utilisation"] for name in utilisation) * offered / rate
    gateways_user = m["gateways_cpu_utilisation"] - m["gateways_system_s"] / m["elapsed_s"]
    floor = machine - gateways_user * offered / rate
    return (
        f"{head} -> MISSED: at this run's CPU per update, {offered:,.0f}/s would take "
        f"{machine:.1f} cores of the machine's {len(ALL_CPUS)} (servers on {server_cores}), "
        f"{floor:.1f} if the gateways' own code took none (their kernel time for the socket "
        f"writes, {m['kernel_cores_at_offered']:.2f} cores at {m['frames_per_write']:.1f} "
        "frames per write, stays)"
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        redis_version = ""
    return {
        "nproc": len(ALL_CPUS),  # what `nproc` says before the harness splits the cores
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "redis": redis_version,
    }


def write_json(path: Path, results: Results, info: dict[str, Any]) -> None:
    out: dict[str, Any] = {**info, "results": {}}
    for workload, by_system in results.items():
        out["results"][workload] = {
            system: (
                {"metrics": r.metrics, "lost": r.lost, "notes": r.notes}
                if isinstance(r, Result)
                else {"error": r}
            )
            for system, r in by_system.items()
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
