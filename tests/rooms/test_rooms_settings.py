"""Rooms settings from the environment, and the gateway's room settings."""

import pytest

from services.common.settings import SettingsError
from services.gateway.settings import GatewaySettings
from services.rooms.settings import RoomsSettings
from tests.conftest import gateway_env


def test_rooms_defaults():
    settings = RoomsSettings.from_env(gateway_env("redis://localhost/0"))
    assert (settings.port, settings.idle_ttl_s, settings.max_rooms) == (5002, 3600.0, 10_000)
    assert settings.consumer.endswith(":5002")
    assert settings.claim_idle_ms == 10_000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROOMS_MAX": "0"}, "ROOMS_MAX is invalid: expected a positive number"),
        ({"ROOMS_PORT": "x"}, "ROOMS_PORT is invalid"),
        ({"ROOMS_BLOCK_MS": "20000"}, "ROOMS_BLOCK_MS is invalid"),
        ({"ROOMS_IDLE_TTL_S": "-1"}, "ROOMS_IDLE_TTL_S is invalid"),
    ],
)
def test_bad_rooms_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        RoomsSettings.from_env(gateway_env("redis://localhost/0", **env))


def test_gateway_room_settings():
    rooms = GatewaySettings.from_env(gateway_env("redis://localhost/0")).rooms
    assert (rooms.timeout_s, rooms.heartbeat_s, rooms.member_ttl_s, rooms.max_rooms) == (
        5.0,
        3.0,
        10.0,
        32,
    )
    with pytest.raises(SettingsError, match="GATEWAY_ROOM_MEMBER_TTL_S is invalid"):
        GatewaySettings.from_env(gateway_env("redis://localhost/0", GATEWAY_ROOM_MEMBER_TTL_S="4"))
