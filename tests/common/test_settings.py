"""Settings from the environment: where Redis is, which ports, and one clear line per bad value."""

from pathlib import Path
from typing import Any

import pytest

from services.common.settings import Env, RedisSettings, SettingsError, load
from services.gateway.settings import GatewaySettings

SECRET = "s" * 48


def gateway(**extra: str) -> GatewaySettings:
    environ = {"REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": SECRET, **extra}
    return GatewaySettings.from_env(environ)


def redis(**environ: str) -> RedisSettings:
    return RedisSettings.from_env(Env(environ))


# -- Redis ------------------------------------------------------------------------------------


def test_redis_url_is_taken_as_is() -> None:
    assert redis(REDIS_URL="rediss://:pw@cache:6380/4").url == "rediss://:pw@cache:6380/4"
    assert redis(REDIS_URL="unix:///run/redis.sock").url == "unix:///run/redis.sock"


def test_redis_url_wins_over_zou_settings() -> None:
    settings = redis(REDIS_URL="redis://a:1/0", KV_HOST="b", KV_PORT="2")
    assert settings.url == "redis://a:1/0"


def test_zou_settings_build_the_url() -> None:
    settings = redis(KV_HOST="kv", KV_PORT="6390", KV_PASSWORD="pw", KV_EVENTS_DB_INDEX="5")
    assert settings.url == "redis://:pw@kv:6390/5"


def test_zou_settings_defaults() -> None:
    # Zou's defaults: localhost:6379, events in DB 2, no password.
    assert redis(KV_HOST="kv").url == "redis://kv:6379/2"
    assert redis(KV_PORT="7000").url == "redis://localhost:7000/2"


def test_zou_ipv6_host_is_bracketed() -> None:
    from redis.asyncio import Redis

    settings = redis(KV_HOST="::1", KV_PORT="6390")
    assert settings.url == "redis://[::1]:6390/2"
    kwargs = Redis.from_url(settings.url).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("::1", 6390, 2)


def test_zou_password_is_quoted() -> None:
    settings = redis(KV_HOST="kv", KV_PASSWORD="p@ss:w/rd")
    assert settings.url == "redis://:p%40ss%3Aw%2Frd@kv:6379/2"


def test_password_is_kept_out_of_repr() -> None:
    assert "pw" not in repr(redis(KV_HOST="kv", KV_PASSWORD="pw"))


@pytest.mark.parametrize("port", ["abc", "99999", "-1", "63 79"])
def test_bad_kv_port_names_kv_port(port: str) -> None:
    with pytest.raises(SettingsError, match=r"^KV_PORT is invalid"):
        redis(KV_HOST="kv", KV_PORT=port)


def test_bad_kv_db_index_names_it() -> None:
    with pytest.raises(SettingsError, match=r"^KV_EVENTS_DB_INDEX is invalid"):
        redis(KV_HOST="kv", KV_EVENTS_DB_INDEX="two")


def test_redis_url_with_another_scheme_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^REDIS_URL is invalid"):
        redis(REDIS_URL="http://cache:6379")


def test_no_redis_at_all_is_refused() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL is required"):
        redis()


# -- ports and numbers ------------------------------------------------------------------------


def test_gateway_port_defaults_to_5001() -> None:
    settings = gateway()
    assert (settings.host, settings.port) == ("0.0.0.0", 5001)


def test_event_stream_host_and_port_are_honoured() -> None:
    settings = gateway(EVENT_STREAM_HOST="127.0.0.2", EVENT_STREAM_PORT="5101")
    assert (settings.host, settings.port) == ("127.0.0.2", 5101)


def test_gateway_port_wins_over_event_stream_port() -> None:
    settings = gateway(EVENT_STREAM_PORT="5101", GATEWAY_PORT="5202", GATEWAY_HOST="::1")
    assert (settings.host, settings.port) == ("::1", 5202)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "abc"),
        ("GATEWAY_PORT", "70000"),
        ("EVENT_STREAM_PORT", "abc"),
        ("GATEWAY_MAX_MESSAGE_BYTES", "0"),
        ("GATEWAY_MAX_SUBSCRIPTIONS", "-3"),
        ("GATEWAY_COMMANDS_PER_S", "fast"),
        ("GATEWAY_CONNECT_TIMEOUT_S", "0"),
        ("GATEWAY_HEARTBEAT_S", "x"),
        ("LOG_JSON", "maybe"),
        ("JWT_LEEWAY_S", "x"),
        ("JWT_REQUIRE_EXP", "sometimes"),
    ],
)
def test_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name} is invalid"):
        gateway(**{name: value})


def test_limits_are_read() -> None:
    limits = gateway(
        GATEWAY_MAX_MESSAGE_BYTES="1024",
        GATEWAY_MAX_SUBSCRIPTIONS="2",
        GATEWAY_MAX_CONNECTIONS_PER_USER="1",
        GATEWAY_COMMANDS_PER_S="1.5",
        GATEWAY_COMMAND_BURST="3",
        GATEWAY_CONNECT_TIMEOUT_S="0.3",
    ).limits
    assert (limits.max_message_bytes, limits.max_subscriptions) == (1024, 2)
    assert (limits.max_connections_per_user, limits.command_burst) == (1, 3)
    assert (limits.commands_per_s, limits.connect_timeout_s) == (1.5, 0.3)


def test_empty_value_means_default() -> None:
    assert gateway(GATEWAY_PORT="").port == 5001


def test_load_exits_with_one_line_naming_the_variable() -> None:
    environ = {"REDIS_URL": "redis://x/0", "SECRET_KEY": SECRET, "GATEWAY_PORT": "abc"}
    with pytest.raises(SystemExit) as info:
        load(GatewaySettings.from_env, environ)
    message = str(info.value.code)
    assert message.startswith("configuration error: GATEWAY_PORT is invalid")
    assert "\n" not in message


# -- the channels file, through the gateway's settings ---------------------------------------


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_channels_file_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "ch.json", '{"namespaces": {"chat": {"allow_publish": true}}}')
    namespaces = gateway(SWITCHBOARD_CHANNELS=path).namespaces
    assert namespaces.of("chat:room").allow_publish is True
    assert namespaces.of("news").allow_publish is False  # the built-ins are still there


def test_missing_channels_file_names_variable_and_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(SettingsError, match="SWITCHBOARD_CHANNELS is invalid") as info:
        gateway(SWITCHBOARD_CHANNELS=path)
    assert path in str(info.value)


def _bad_channels(tmp_path: Path, namespaces: Any) -> str:
    import json

    path = write(tmp_path, "ch.json", json.dumps({"namespaces": namespaces}))
    with pytest.raises(SettingsError) as info:
        gateway(SWITCHBOARD_CHANNELS=path)
    return str(info.value)


def test_channels_file_error_names_namespace_and_option(tmp_path: Path) -> None:
    message = _bad_channels(tmp_path, {"chat": {"histroy_size": 10}})
    assert message.startswith("SWITCHBOARD_CHANNELS is invalid")
    assert "'chat'" in message
    assert "'histroy_size'" in message
