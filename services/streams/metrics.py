"""The streams service's Prometheus metrics: traffic per stream, push latency, readers, lag."""

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


class StreamsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries_in = Counter(
            "switchboard_streams_entries_in",
            "Entries appended, by stream.",
            ["stream"],
            registry=registry,
        )
        self.bytes_in = Counter(
            "switchboard_streams_bytes_in",
            "Entry bytes appended, by stream.",
            ["stream"],
            registry=registry,
        )
        self.entries_out = Counter(
            "switchboard_streams_entries_out",
            "Entries sent to pull sockets, REST readers and MJPEG viewers, by stream.",
            ["stream"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "switchboard_streams_bytes_out",
            "Entry bytes sent, by stream.",
            ["stream"],
            registry=registry,
        )
        self.push_seconds = Histogram(
            "switchboard_streams_push_seconds",
            "From a push batch's last frame received to its entries in Redis (and the ack sent).",
            buckets=_LATENCY,
            registry=registry,
        )
        self.readers = Gauge(
            "switchboard_streams_readers",
            "Pull sockets and MJPEG viewers reading a stream.",
            ["stream"],
            registry=registry,
        )
        self.reader_lag = Histogram(
            "switchboard_streams_reader_lag_seconds",
            "Age of the newest entry of a batch when it is sent to a reader (by its entry id).",
            buckets=(*_LATENCY, 5.0, 30.0, 300.0),
            registry=registry,
        )
        self.reader_fell_behind = Counter(
            "switchboard_streams_reader_fell_behind",
            "Times a reader's buffer was full and it went on reading from Redis.",
            registry=registry,
        )
        self.refused = Counter(
            "switchboard_streams_refused",
            "Push and pull sockets closed for bad input, by close code.",
            ["close"],
            registry=registry,
        )

        # labels() takes a lock and builds a key: look each stream's children up once.
        self._out: dict[str, tuple[Any, Any]] = {}

    def sent(self, items: list[tuple[str, str, bytes]]) -> None:
        """Count entries sent to one reader (called per batch, for every reader)."""
        out = self._out
        for stream, _, data in items:
            children = out.get(stream)
            if children is None:
                if len(out) > 10_000:
                    out.clear()
                children = out[stream] = (
                    self.entries_out.labels(stream),
                    self.bytes_out.labels(stream),
                )
            children[0].inc()
            children[1].inc(len(data))
