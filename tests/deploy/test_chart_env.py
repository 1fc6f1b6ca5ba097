"""STYLE §3.15's chart-env check: every env var the chart sets is one the services read (some
`from_env`), and the values the chart renders are ones the services' settings accept."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.deploy.chartkit import (
    CHART,
    COMPONENTS,
    SERVICES,
    VALUE_SETS,
    by_kind,
    container_env,
    deployments,
    env_names_read,
    one,
    render,
)
from tests.helpers import clean_env

# Set by the chart for the process, not read as settings: the root filesystem is read-only and
# /tmp is the pod's emptyDir.
PROCESS_ENV = {"HOME", "TMPDIR"}


def service_exists(component: str) -> bool:
    return (SERVICES / component / "__main__.py").is_file()


def test_the_scan_finds_what_the_services_read() -> None:
    names = env_names_read()
    assert {"GATEWAY_PORT", "REDIS_URL", "SECRET_KEY", "KV_PASSWORD", "LOG_JSON"} <= names
    assert {"JWT_PUBLIC_KEY_FILE", "SWITCHBOARD_CHANNELS"} <= names
    assert {"STREAMS_MAXLEN", "FRAMES_LABELS_RATE", "TASKS_FOLDER"} <= names
    assert "INFO" not in names  # a default value is not a name


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_env_name_the_chart_sets_is_read_by_a_service(name: str, tmp_path: Path) -> None:
    docs = render(VALUE_SETS[name], tmp_path)
    read = env_names_read()
    for component, deployment in deployments(docs).items():
        extra = set(VALUE_SETS[name].get(component, {}).get("extraEnv", {}))
        unknown = set(container_env(docs, deployment)) - read - PROCESS_ENV - extra
        assert not unknown, f"{component}: the chart sets {sorted(unknown)}, no service reads them"


def test_every_component_is_written_and_on_by_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in COMPONENTS:
        assert service_exists(component), f"services/{component} is missing"
        assert values[component]["enabled"], f"{component} is off by default"


def _pem_keys(tmp_path: Path) -> dict[str, str]:
    """The mounted key files of the public-keys value set, as files of the test's own."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "public.pem").write_bytes(public)
    (tmp_path / "private.pem").write_bytes(pem)
    return {
        "/etc/switchboard/jwt/public.pem": str(tmp_path / "public.pem"),
        "/etc/switchboard/jwt/private.pem": str(tmp_path / "private.pem"),
    }


def environment(docs: list[dict[str, Any]], component: str, tmp_path: Path) -> dict[str, str]:
    """The container's environment as the pod would see it, with test stand-ins for Secrets and
    mounted files."""
    env: dict[str, str] = {}
    files = _pem_keys(tmp_path)
    channels = [
        c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-channels")
    ]
    for config in channels:
        for key, text in config["data"].items():
            (tmp_path / key).write_text(text)
            files[f"/etc/switchboard/channels/{key}"] = str(tmp_path / key)
    secrets = {
        "SECRET_KEY": "k" * 48,
        "KV_PASSWORD": "p@ss/word",
        "REDIS_URL": "redis://:secret@redis.example:6379/0",
    }
    for name, value in container_env(docs, deployments(docs)[component]).items():
        if isinstance(value, dict):
            env[name] = secrets[name]
        else:
            env[name] = files.get(value, value)
    return env


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_services_accept_the_rendered_settings(name: str, tmp_path: Path) -> None:
    docs = render(VALUE_SETS[name], tmp_path)
    checked = 0
    for component in deployments(docs):
        if not service_exists(component):
            continue
        module = importlib.import_module(f"services.{component}.settings")
        factory = getattr(module, f"{component.capitalize()}Settings")
        settings = factory.from_env(environment(docs, component, tmp_path))
        assert settings.host == "0.0.0.0"
        assert settings.shutdown_timeout_s == 20
        checked += 1
    assert checked


def test_rendered_gateway_settings_match_the_values(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["everything-on"], tmp_path)
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env(environment(docs, "gateway", tmp_path))
    assert settings.port == 5001
    assert settings.limits.max_message_bytes == 1048576
    assert settings.limits.outbox_max_bytes == 4194304
    assert settings.jwt.audience == "switchboard"
    assert settings.jwt.leeway_s == 10  # from gateway.extraEnv
    assert settings.redis.url == f"redis://:p%40ss%2Fword@{'sb-switchboard-redis'}:6379/0"
    chat = settings.namespaces.of("chat:lobby")
    assert (chat.history_size, chat.allow_publish) == (500, True)
    assert one(docs, "ConfigMap", "sb-switchboard-config")["data"]["LOG_JSON"] == "true"


def test_rendered_rooms_settings_match_the_values(tmp_path: Path) -> None:
    values = {"rooms": {"settings": {"idleTtlSeconds": 90, "maxRooms": 50000}}}
    docs = render(values, tmp_path)
    from services.rooms.settings import RoomsSettings

    settings = RoomsSettings.from_env(environment(docs, "rooms", tmp_path))
    assert (settings.port, settings.idle_ttl_s, settings.max_rooms) == (5002, 90, 50000)
    assert settings.max_state_bytes == 262144
    assert settings.shutdown_timeout_s == 20


def test_the_preview_rooms_access_url_is_rendered_only_when_set(tmp_path: Path) -> None:
    from services.gateway.settings import GatewaySettings

    url = "http://zou.studio.svc/api"
    values = {"gateway": {"settings": {"roomAccessUrl": url}}}
    settings = GatewaySettings.from_env(environment(render(values, tmp_path), "gateway", tmp_path))
    assert settings.zou.room_access_url == url
    settings = GatewaySettings.from_env(environment(render({}, tmp_path), "gateway", tmp_path))
    assert settings.zou.room_access_url == ""


def test_the_zou_settings_reach_the_gateway(tmp_path: Path) -> None:
    from services.gateway.settings import GatewaySettings

    zou = {"zouBridge": False, "zouBridgeChannel": "zou-events", "zouProjectScoping": True}
    docs = render({"gateway": {"settings": zou}}, tmp_path)
    settings = GatewaySettings.from_env(environment(docs, "gateway", tmp_path)).zou
    assert (settings.bridge, settings.bridge_channel, settings.project_scoping) == (
        False,
        "zou-events",
        True,
    )


def test_chart_defaults_are_the_services_defaults(tmp_path: Path) -> None:
    """The chart sets the tuning knobs explicitly; with default values it must not change them."""
    from services.gateway.settings import GatewaySettings
    from services.rooms.settings import RoomsSettings

    docs = render({}, tmp_path)
    bare = {"REDIS_URL": "redis://redis:6379/0", "SECRET_KEY": "k" * 48}
    chart = GatewaySettings.from_env(environment(docs, "gateway", tmp_path))
    service = GatewaySettings.from_env(bare)
    assert chart.limits == service.limits
    assert chart.zou == service.zou
    assert (chart.heartbeat_s, chart.node_report_s) == (service.heartbeat_s, service.node_report_s)
    assert chart.shutdown_timeout_s == service.shutdown_timeout_s
    assert chart.redis == service.redis
    assert (chart.jwt.algorithms, chart.jwt.leeway_s, chart.jwt.require_exp) == (
        service.jwt.algorithms,
        service.jwt.leeway_s,
        service.jwt.require_exp,
    )
    rooms = RoomsSettings.from_env(environment(docs, "rooms", tmp_path))
    rooms_service = RoomsSettings.from_env(bare)
    assert (rooms.idle_ttl_s, rooms.max_rooms, rooms.max_state_bytes) == (
        rooms_service.idle_ttl_s,
        rooms_service.max_rooms,
        rooms_service.max_state_bytes,
    )


@pytest.mark.parametrize("name", ["default", "everything-on", "public-keys"])
def test_the_notes_token_command_mints_a_token_the_gateway_accepts(
    name: str, tmp_path: Path
) -> None:
    """NOTES.txt says `kubectl exec deploy/...-gateway -- switchboard token --sub alice`: the
    CLI, run with the gateway container's environment, signs what the gateway verifies."""
    from services.common.auth import TokenVerifier
    from services.gateway.settings import GatewaySettings

    docs = render(VALUE_SETS[name], tmp_path)
    env = environment(docs, "gateway", tmp_path)
    cli = shutil.which("switchboard", path=str(Path(sys.executable).parent))
    assert cli, "the switchboard console script is installed with the project"
    proc = subprocess.run(
        [cli, "token", "--sub", "alice", "--ttl", "1h"],
        env={**clean_env(), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    claims = TokenVerifier(GatewaySettings.from_env(env).jwt).verify(proc.stdout.strip())
    assert claims.user == "alice"
