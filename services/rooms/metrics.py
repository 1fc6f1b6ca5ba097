"""The rooms service's Prometheus metrics (no room ids as labels)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RoomsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter(
            "switchboard_rooms_commands",
            "Room commands handled, by op and outcome.",
            ["op", "outcome"],
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "switchboard_rooms_apply_seconds",
            "Time to apply one room command, reply included.",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.state_reads = Counter(
            "switchboard_rooms_state_reads",
            "Rooms read before updates were merged into them: not remembered by this replica, "
            "or changed since it wrote them (elsewhere).",
            ["reason"],
            registry=registry,
        )
        self.reaped = Counter(
            "switchboard_rooms_members_reaped",
            "Members removed because their gateway stopped renewing them.",
            registry=registry,
        )
        self.rooms = Gauge("switchboard_rooms_rooms", "Rooms in Redis.", registry=registry)
        self.members = Gauge(
            "switchboard_rooms_members", "Members across all rooms.", registry=registry
        )
        self.lag = Gauge(
            "switchboard_rooms_consumer_lag",
            "Room commands not yet delivered to any replica.",
            registry=registry,
        )

        # Labelled children looked up once: `labels()` costs more than the count itself, and
        # every command is observed.
        self._counted: dict[tuple[str, str], Counter] = {}
        self._timed: dict[str, Histogram] = {}

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        counter = self._counted.get((op, outcome))
        if counter is None:
            counter = self._counted[op, outcome] = self.commands.labels(op, outcome)
        counter.inc()
        timer = self._timed.get(op)
        if timer is None:
            timer = self._timed[op] = self.apply_seconds.labels(op)
        timer.observe(seconds)
