"""Prometheus metrics of the frames API (no label, camera or user names as metric labels)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class FramesMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stored = Counter(
            "switchboard_streams_frames_stored",
            "Frames stored, by transport (http, ws).",
            ["transport"],
            registry=registry,
        )
        self.bytes_in = Counter(
            "switchboard_streams_frames_in_bytes",
            "Frame image bytes stored.",
            registry=registry,
        )
        self.rejected = Counter(
            "switchboard_streams_frames_rejected",
            "Uploads and requests refused, by error code.",
            ["code"],
            registry=registry,
        )
        self.sent = Counter(
            "switchboard_streams_frames_sent",
            "Frames sent to sockets, by endpoint (labels, stream).",
            ["endpoint"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "switchboard_streams_frames_out_bytes",
            "Frame message bytes sent to sockets.",
            registry=registry,
        )
        self.skipped = Counter(
            "switchboard_streams_frames_skipped",
            "Frames a slow socket skipped because a newer one of the same camera arrived.",
            registry=registry,
        )
        self.unchanged = Counter(
            "switchboard_streams_frames_unchanged",
            "Frames not pushed because they equal the camera's previous frame.",
            registry=registry,
        )
        self.sockets = Gauge(
            "switchboard_streams_frames_sockets",
            "Open frames WebSockets, by endpoint (frames, labels, stream).",
            ["endpoint"],
            registry=registry,
        )
        self.streams = Gauge(
            "switchboard_streams_frames_watched_streams",
            "Camera streams the shared read loop is reading.",
            registry=registry,
        )
        self.store_seconds = Histogram(
            "switchboard_streams_frames_store_seconds",
            "Time to store one frame (MULTI of XADD and index updates).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.dispatch_seconds = Histogram(
            "switchboard_streams_frames_dispatch_seconds",
            "Time to hand one XREAD reply to every watcher.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
            registry=registry,
        )
