"""The demo page's fixtures: Debian's chromium driven by Playwright, and the local cluster
(haproxy in front of two gateways, two rooms replicas and one streams process) in demo mode."""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from deploy.local import ClusterSettings, LocalCluster
from tests.conftest import SECRET
from tests.helpers import clean_env

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored: screenshots


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium from apt (never Playwright's own download: `make test` installs it)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not on PATH (`make test` installs it with apt)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def demo_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """haproxy on a free port, gateways with GATEWAY_DEMO on (the suite's signing key)."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not on PATH (`make test` installs it: Makefile target `deps`)")
    settings = ClusterSettings(
        state_dir=tmp_path / "cluster",
        port=0,
        services=("gateway", "rooms", "streams"),
        secret_key=SECRET,
        extra_env={
            "GATEWAY_DEMO": "true",
            "GATEWAY_SHUTDOWN_TIMEOUT_S": "2",
            "ROOMS_SHUTDOWN_TIMEOUT_S": "2",
            "STREAMS_SHUTDOWN_TIMEOUT_S": "2",
        },
        grace_s=5.0,
        backoff_initial_s=0.2,
    )
    cluster = LocalCluster(settings, clean_env())
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
