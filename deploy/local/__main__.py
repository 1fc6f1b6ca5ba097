"""`python -m deploy.local` (`make cluster`): run the local cluster until Ctrl-C or SIGTERM.

Settings: `CLUSTER_PORT` (8000), `CLUSTER_HOST` (127.0.0.1), `CLUSTER_REPLICAS` (2 of each
service), `CLUSTER_SERVICES` (every service present), `CLUSTER_STATE_DIR` (.switchboard/cluster),
`CLUSTER_GRACE_S` (25); `SECRET_KEY` when set, else a key generated once in the state folder.
"""

import asyncio
import logging
import os
import shlex
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import uvloop

from services.common.children import StartError
from services.common.settings import load
from services.common.supervisor import SupervisorError

from .cluster import ClusterError, ClusterSettings, LocalCluster

log = logging.getLogger("deploy.local")


def banner(cluster: LocalCluster, environ: Mapping[str, str]) -> str:
    """What to tell the person who ran `make cluster`: the URL, who runs, how to get a token."""
    state = _relative(cluster.state_dir)
    key_env = "" if environ.get("SECRET_KEY") else f"SWITCHBOARD_STATE_DIR={shlex.quote(state)} "
    cli = f"{_relative(Path(sys.executable).parent)}/switchboard"
    replicas = ", ".join(cluster.replicas)
    return "\n".join(
        [
            f"Switchboard cluster on {cluster.url}: haproxy in front of {replicas}; one Redis",
            f"  WebSocket:  {cluster.url.replace('http', 'ws', 1)}/ws",
            f"  token:      {key_env}{cli} token --sub alice --ttl 1h",
            f"  publish:    SWITCHBOARD_URL={cluster.url} {key_env}{cli} publish news "
            """'{"text": "hi"}'""",
            f"  logs:       {_relative(cluster.logs)}/ (haproxy.log, gateway-1.log, …)",
            "Ctrl-C stops everything.",
        ]
    )


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def serve(settings: ClusterSettings, environ: Mapping[str, str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    cluster = LocalCluster(settings, environ)
    starting = asyncio.create_task(cluster.start(), name="cluster-start")
    stopping = asyncio.create_task(stop.wait(), name="cluster-stop-signal")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting: start() stops what it started
        starting.cancel()
    try:
        await starting
    except asyncio.CancelledError:
        return 130
    sys.stdout.write(banner(cluster, environ) + "\n")
    sys.stdout.flush()
    await stopping
    log.info("stopping the cluster")
    # A second Ctrl-C while stopping kills whatever is left.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _kill_all, cluster)
    await cluster.stop()
    log.info("cluster stopped")
    return 0


def _kill_all(cluster: LocalCluster) -> None:
    log.warning("stop requested again: killing every process")
    for replica in cluster.replicas.values():
        replica.child.kill()
    if cluster.haproxy is not None:
        cluster.haproxy.kill()


def main(environ: Mapping[str, str] = os.environ) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    settings = load(ClusterSettings.from_env, environ)
    try:
        return uvloop.run(serve(settings, environ))
    except (ClusterError, SupervisorError, StartError, OSError) as exc:
        raise SystemExit(f"cluster: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
