"""A local cluster: haproxy in front of replicas of every service, one Redis (`make cluster`).

`python -m deploy.local` runs it in the foreground; tests drive `LocalCluster` as a library.
"""

from .cluster import ClusterSettings, LocalCluster, Replica
from .haproxy import ROUTES, Route, render_config

__all__ = ["ROUTES", "ClusterSettings", "LocalCluster", "Replica", "Route", "render_config"]
