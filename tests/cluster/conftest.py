"""The local cluster of `make cluster` (deploy.local), started for each test on free ports."""

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.local import ClusterSettings, LocalCluster
from tests.conftest import SECRET
from tests.helpers import clean_env

# A namespace whose history outlasts every test: recovery must never run out of it.
NAMESPACES = {"namespaces": {"feed": {"history_size": 10000, "history_ttl_s": 600}}}
HANDLED = "test:handled"  # the `n` of every `tick` event some handler ran (a Redis set)
# Runs in the handlers replicas: records each event in the cluster's Redis, so a test can tell
# that every event was handled at least once, whichever replica ran it.
ON_TICK = f"""
import os

import redis

CLIENT = redis.Redis.from_url(os.environ["REDIS_URL"])


def handle_event(data):
    CLIENT.sadd("{HANDLED}", data["n"])
"""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """haproxy on a free port in front of two replicas of each service (one streams), Redis."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not on PATH (`make test` installs it: Makefile target `deps`)")
    channels = tmp_path / "channels.json"
    channels.write_text(json.dumps(NAMESPACES))
    handlers = tmp_path / "event_handlers"
    handlers.mkdir()
    (handlers / "on_tick.py").write_text(ON_TICK)
    settings = ClusterSettings(
        state_dir=tmp_path / "cluster",
        port=0,
        secret_key=SECRET,  # the key of the suite's `make_token`
        extra_env={
            "SWITCHBOARD_CHANNELS": str(channels),
            "GATEWAY_SHUTDOWN_TIMEOUT_S": "5",
            "GATEWAY_NODE_REPORT_S": "0.2",
            "ROOMS_SHUTDOWN_TIMEOUT_S": "5",
            "STREAMS_SHUTDOWN_TIMEOUT_S": "5",
            "HANDLERS_SHUTDOWN_TIMEOUT_S": "5",
            "HANDLERS_CLAIM_IDLE_MS": "3000",
            "EVENT_HANDLERS_FOLDER": str(handlers),
            "TASKS_FOLDER": str(tmp_path / "no-tasks"),
        },
        grace_s=10.0,
        backoff_initial_s=0.2,
    )
    local = LocalCluster(settings, clean_env())
    await local.start()
    try:
        yield local
    finally:
        await local.stop()
