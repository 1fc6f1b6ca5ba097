"""The gateway's Prometheus metrics; hot-path figures are read at scrape time, not counted."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .commands import Commands
    from .node import GatewayNode
    from .socketio_server import SocketIOEndpoint


class GatewayMetrics:
    """The gateway's metrics, all read from the node's plain counters when scraped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def watch(self, node: "GatewayNode", commands: "Commands") -> None:
        self._registry.register(_Live(node, commands))

    def watch_socketio(self, endpoint: "SocketIOEndpoint") -> None:
        self._registry.register(_SocketIO(endpoint))


class _SocketIO(Collector):
    """The Socket.IO endpoint (Kitsu, gazu), read when scraped."""

    def __init__(self, endpoint: "SocketIOEndpoint") -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        endpoint = self._endpoint
        yield GaugeMetricFamily(
            "switchboard_gateway_socketio_connections",
            "Authenticated Socket.IO sockets on /events.",
            len(endpoint.sockets),
        )
        yield CounterMetricFamily(
            "switchboard_gateway_socketio_events_sent",
            "Socket.IO events sent to sockets (broadcast events, preview-room events).",
            endpoint.events_sent,
        )
        yield GaugeMetricFamily(
            "switchboard_gateway_preview_rooms",
            "Preview rooms with at least one local socket that opened them.",
            sum(1 for socks in endpoint.previews.audience.values() if socks),
        )


class _Live(Collector):
    """Reads counters the hot path keeps as plain integers."""

    def __init__(self, node: "GatewayNode", commands: "Commands") -> None:
        self._node = node
        self._commands = commands

    def collect(self) -> Iterator[Metric]:
        node = self._node
        yield GaugeMetricFamily(
            "switchboard_gateway_connections", "Open WebSocket connections.", len(node.connections)
        )
        yield GaugeMetricFamily(
            "switchboard_gateway_channels",
            "Channels with local subscribers.",
            node.hub.channel_count,
        )
        yield GaugeMetricFamily(
            "switchboard_gateway_redis_connected",
            "1 while the Redis pub/sub link is up.",
            1.0 if node.subscriber.connected else 0.0,
        )
        yield GaugeMetricFamily(
            "switchboard_gateway_subscriptions",
            "Channel subscriptions of the open connections.",
            sum(len(conn.subscriptions) for conn in list(node.connections.values())),
        )
        yield CounterMetricFamily(
            "switchboard_gateway_redis_reconnects",
            "Times the Redis pub/sub link came back after a loss.",
            node.redis_reconnects,
        )
        yield CounterMetricFamily(
            "switchboard_gateway_redis_errors",
            "Client commands answered 108 because a Redis command failed.",
            node.redis_errors,
        )
        yield CounterMetricFamily(
            "switchboard_gateway_bytes_sent",
            "Bytes written to sockets.",
            node.outbox.bytes_sent,
        )
        ages = node.hub.ages
        yield HistogramMetricFamily(
            "switchboard_gateway_publication_age_seconds",
            "Age of a publication (from its offset) when it reaches this gateway: publish to "
            "fan-out.",
            buckets=ages.buckets(),
            sum_value=ages.sum_ms / 1000,
        )
        yield CounterMetricFamily(
            "switchboard_gateway_publications_received",
            "Publications received from Redis for local subscribers.",
            node.hub.publications_received,
        )
        yield CounterMetricFamily(
            "switchboard_gateway_frames_sent",
            "Frames written to sockets.",
            node.outbox.frames_sent,
        )
        yield CounterMetricFamily(
            "switchboard_gateway_socket_writes",
            "Socket writes (frames coalesce into fewer writes under load).",
            node.outbox.writes,
        )
        yield CounterMetricFamily(
            "switchboard_gateway_slow_consumers",
            "Connections closed because their outbound buffer overflowed.",
            node.slow_consumers,
        )
        closes = CounterMetricFamily(
            "switchboard_gateway_closes", "Connections closed, by close code.", labels=["code"]
        )
        for code, count in node.close_codes.items():
            closes.add_metric([str(code)], count)
        yield closes
        commands = CounterMetricFamily(
            "switchboard_gateway_commands", "Client commands, by op.", labels=["op"]
        )
        for op, count in self._commands.counts.items():
            commands.add_metric([op], count)
        yield commands
