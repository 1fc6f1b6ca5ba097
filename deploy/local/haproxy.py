"""The local cluster's ingress: an haproxy configuration rendered from the replicas it fronts.

Routing follows the chart's Ingress (`deploy/helm/switchboard/templates/ingress.yaml`): path
prefixes matched by whole segments (`/ws` takes `/ws` and `/ws/…`, not `/wsx`), the longest
prefix first, and everything else (`/`, `/stats`) to the gateways. The gateways' backend inserts
the stickiness cookie `SBSERVER` that Socket.IO long-polling needs (every poll of one session must
reach the process that holds it); WebSockets get a long tunnel timeout. Servers are checked on
`/readyz`; a refused connection marks one down at once and the request is retried on another, so
clients of a process that died or is restarting reconnect without an error.
"""

import asyncio
import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Final

STICKY_COOKIE: Final = "SBSERVER"
DEFAULT_SERVICE: Final = "gateway"
SERVED_BY_HEADER: Final = "X-Served-By"


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    service: str


# As in the chart's Ingress; a service that is not running has no routes (its paths fall to the
# gateways, which answer 404). The streaming web backend's sockets live under /ws/.
_GATEWAY_PATHS: Final = ("/ws", "/socket.io", "/zeph", "/api")
_STREAMS_PATHS: Final = (
    *("/data", "/streams", "/token", "/frames", "/labels", "/mjpeg"),
    *("/ws/labels", "/ws/stream", "/ws/frames"),
)
ROUTES: Final = (
    *(Route(path, "gateway") for path in _GATEWAY_PATHS),
    *(Route(path, "streams") for path in _STREAMS_PATHS),
    Route("/rooms", "rooms"),
)


@dataclass(frozen=True, slots=True)
class Server:
    """One replica behind haproxy; `name` is also its stickiness cookie value."""

    name: str
    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class IngressConfig:
    port: int
    backends: Mapping[str, Sequence[Server]]  # service -> its replicas
    stats_socket: Path  # admin socket: `show stat` tells which servers are up
    host: str = "127.0.0.1"


# Checked every second, every 250 ms while changing state or down; two checks flip a state.
# `observe layer4 … mark-down`: one refused connection marks the server down at once (it died or
# is restarting), without waiting for the checks; the request is retried on another server.
_SERVER_OPTIONS: Final = (
    "inter 1s fastinter 250ms downinter 250ms rise 2 fall 2",
    "observe layer4 error-limit 1 on-error mark-down",
)

# Timeouts: `connect` is also the pause before a retry (haproxy waits min(connect, 1 s)): short,
# since every server is local and a refused connection should move on to another replica at once;
# `tunnel` applies once a WebSocket is upgraded (the gateway pings every 25 s, so it only has to be
# longer than that); `server` covers a long-poll (25 s).
_TEMPLATE: Final = Template(
    """\
# Rendered by deploy/local/haproxy.py for the local cluster; rewritten at every start.
global
    log stdout format raw local0 info
    stats socket $stats_socket mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # a new server connection per request: a replica that stops cannot close an idle one just as
    # haproxy reuses it (its client would see the request fail)
    option http-server-close
    option redispatch 1
    retries 3
    timeout connect 200ms
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout server-fin 5s
    timeout check 2s
    default-server $server_options

frontend ingress
    bind $bind
    http-response set-header $served_by %s
$routing
    default_backend $default_backend
$backends"""
)


def render_config(config: IngressConfig) -> str:
    """The whole haproxy.cfg for `config`."""
    if not config.backends.get(DEFAULT_SERVICE):
        raise ValueError(f"the ingress needs at least one {DEFAULT_SERVICE} server")
    return _TEMPLATE.substitute(
        stats_socket=config.stats_socket,
        bind=f"{config.host}:{config.port}",
        server_options=" ".join(_SERVER_OPTIONS),
        served_by=SERVED_BY_HEADER,
        routing=_routing(config.backends),
        default_backend=DEFAULT_SERVICE,
        backends="\n".join(
            _backend(service, servers) for service, servers in config.backends.items() if servers
        ),
    )


def _acl_name(prefix: str) -> str:
    return "path_" + re.sub(r"\W", "_", prefix.strip("/"))


def _routing(backends: Mapping[str, Sequence[Server]]) -> str:
    routes = sorted(
        (route for route in ROUTES if backends.get(route.service)),
        key=lambda route: len(route.prefix),
        reverse=True,  # longest prefix first: /ws/labels (streams) before /ws (gateway)
    )
    acls, rules = [], []
    for route in routes:
        name = _acl_name(route.prefix)
        acls += [f"    acl {name} path {route.prefix}", f"    acl {name} path_beg {route.prefix}/"]
        rules.append(f"    use_backend {route.service} if {name}")
    return "\n".join(acls + rules)


def _backend(service: str, servers: Sequence[Server]) -> str:
    sticky = service == DEFAULT_SERVICE
    lines = [
        f"backend {service}",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /readyz",
        "    http-check expect status 200",
    ]
    if sticky:
        lines.append(f"    cookie {STICKY_COOKIE} insert indirect nocache httponly")
    for server in servers:
        cookie = f" cookie {server.name}" if sticky else ""
        lines.append(f"    server {server.name} {server.host}:{server.port} check{cookie}")
    return "\n".join(lines) + "\n"


# -- the admin socket ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server as `show stat` reports it."""

    backend: str
    status: str  # UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (going up), MAINT, …
    check_status: str  # L7OK, L4CON (refused), INI (not checked yet), …

    @property
    def routed(self) -> bool:
        """Up after a passing check: haproxy sends it new requests."""
        return self.status == "UP" and self.check_status.startswith("L7OK")


async def server_states(stats_socket: Path) -> dict[str, ServerState]:
    """Every server of every backend, by server name (raises OSError while haproxy is down)."""
    reader, writer = await asyncio.open_unix_connection(str(stats_socket))
    try:
        writer.write(b"show stat\n")
        await writer.drain()
        async with asyncio.timeout(5.0):
            raw = await reader.read()  # haproxy closes the connection after one command
    finally:
        writer.close()
    lines = raw.decode(errors="replace").splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    return {
        row["svname"]: ServerState(row["pxname"], row["status"], row["check_status"])
        for row in rows
        if row.get("svname") not in (None, "FRONTEND", "BACKEND")
    }
