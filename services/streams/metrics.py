"""The streams service's Prometheus metrics: traffic per stream, push latency, readers, lag."""

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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
        # Counted per delivery to every reader: plain integers, turned into counters at scrape
        # time (a prometheus_client Counter costs microseconds per increment).
        self._out: dict[str, list[int]] = {}
        registry.register(_TrafficOut(self._out))
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
            "Age of new entries (by their ids) when the read loop has handed them to every live "
            "reader, and of a batch a reader's own task sends.",
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

    def sent(self, items: list[tuple[str, str, bytes]]) -> None:
        """Count entries sent to one reader (called per batch, for every reader)."""
        out = self._out
        for stream, _, data in items:
            counts = out.get(stream)
            if counts is None:
                counts = out[stream] = [0, 0]
            counts[0] += 1
            counts[1] += len(data)


class _TrafficOut(Collector):
    """`switchboard_streams_entries_out_total` and `…_bytes_out_total` from plain counts."""

    def __init__(self, counts: dict[str, list[int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        entries = CounterMetricFamily(
            "switchboard_streams_entries_out",
            "Entries sent to pull sockets, REST readers and MJPEG viewers, by stream.",
            labels=["stream"],
        )
        size = CounterMetricFamily(
            "switchboard_streams_bytes_out", "Entry bytes sent, by stream.", labels=["stream"]
        )
        for stream, (n, total) in list(self._counts.items()):
            entries.add_metric([stream], n)
            size.add_metric([stream], total)
        return [entries, size]
