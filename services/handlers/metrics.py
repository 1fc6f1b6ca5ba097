"""The handlers service's Prometheus metrics (labels are handler ids and task names: bounded by
what the folders hold, never by events)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


class HandlersMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "switchboard_handlers_runs",
            "Handler attempts, by handler and outcome (ok, error, timeout).",
            ["handler", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "switchboard_handlers_retries",
            "Handler attempts that failed and were scheduled again.",
            ["handler"],
            registry=registry,
        )
        self.failures = Counter(
            "switchboard_handlers_dead_lettered",
            "Events written to the dead-letter stream after their last attempt, by handler.",
            ["handler"],
            registry=registry,
        )
        self.duration = Histogram(
            "switchboard_handlers_duration_seconds",
            "Time of one handler attempt.",
            ["handler"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.delay = Histogram(
            "switchboard_handlers_event_delay_seconds",
            "From the gateway appending an event to its first handler starting.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.tasks = Counter(
            "switchboard_handlers_task_calls",
            "rpc calls, by task and outcome (ok, or the error code's name).",
            ["task", "outcome"],
            registry=registry,
        )
        self.task_duration = Histogram(
            "switchboard_handlers_task_duration_seconds",
            "Time of one task call.",
            ["task"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.dlq_size = Gauge(
            "switchboard_handlers_dlq_size", "Entries in the dead-letter stream.", registry=registry
        )
        self.lag = Gauge(
            "switchboard_handlers_consumer_lag",
            "Entries not yet delivered to any replica, by stream (events, rpc).",
            ["stream"],
            registry=registry,
        )
        self.pending = Gauge(
            "switchboard_handlers_consumer_pending",
            "Entries delivered to a replica and not acknowledged yet, by stream.",
            ["stream"],
            registry=registry,
        )
        self.workers_replaced = Counter(
            "switchboard_handlers_workers_replaced",
            "Isolation worker processes killed (timeout, crash) and replaced.",
            registry=registry,
        )
        self.load_errors = Gauge(
            "switchboard_handlers_load_errors",
            "Files of the handlers and tasks folders that failed to load.",
            registry=registry,
        )
        self.reloads = Counter(
            "switchboard_handlers_reloads", "Reloads of the folders.", registry=registry
        )
