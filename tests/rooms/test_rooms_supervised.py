"""`switchboard run` finds the rooms service by itself and runs it next to the gateway."""

import json
import urllib.error
import urllib.request
from pathlib import Path

from services.common.supervisor import ServiceSpec, discover_services
from tests.common.test_supervisor import shut_down, start_supervisor, wait_until
from tests.helpers import free_port


def _ready(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError):
        return None


def test_switchboard_run_starts_the_rooms_service(tmp_path: Path) -> None:
    rooms_port = free_port()
    running = start_supervisor(
        tmp_path,
        SWITCHBOARD_SERVICES="gateway rooms",  # not all that exist: others would need ports
        GATEWAY_PORT=str(free_port()),
        ROOMS_PORT=str(rooms_port),
    )
    try:
        status = wait_until(running.ready, what="the supervisor to be ready", timeout_s=20)
        assert {"gateway", "rooms"} <= set(status["services"])
        answer = wait_until(lambda: _ready(rooms_port), what="rooms /readyz", timeout_s=20)
        assert answer == {"status": "ok", "checks": {"redis": True, "consumer": True}}
    finally:
        shut_down(running)


def test_the_supervisor_discovers_the_rooms_service() -> None:
    assert ServiceSpec("rooms", "services.rooms") in discover_services()
