"""Rooms service settings, read once from the environment."""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import (
    Env,
    JwtSettings,
    RedisSettings,
    SettingsError,
    parse_bool,
    parse_port,
    positive,
)


@dataclass(frozen=True, slots=True)
class RoomsSettings:
    """`ROOMS_*` variables; the consumer name defaults to `<host>:<port>` so that a replica
    restarted in place finds the commands it held when it died."""

    host: str
    port: int
    redis: RedisSettings
    jwt: JwtSettings
    idle_ttl_s: float
    max_rooms: int
    max_state_bytes: int
    consumer: str
    batch: int
    block_ms: int
    claim_idle_ms: int
    reap_interval_s: float
    stats_interval_s: float
    shutdown_timeout_s: float
    log_level: str
    log_json: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "RoomsSettings":
        env = Env(environ)
        port = env.get("ROOMS_PORT", parse_port, 5002)
        settings = cls(
            host=env.get("ROOMS_HOST", str, "0.0.0.0"),
            port=port,
            redis=RedisSettings.from_env(env),
            jwt=JwtSettings.from_env(env),
            idle_ttl_s=env.get("ROOMS_IDLE_TTL_S", positive(float), 3600.0),
            max_rooms=env.get("ROOMS_MAX", positive(int), 10_000),
            max_state_bytes=env.get("ROOMS_MAX_STATE_BYTES", positive(int), 256 * 1024),
            consumer=env.get("ROOMS_CONSUMER", str, f"{socket.gethostname()}:{port}"),
            batch=env.get("ROOMS_BATCH", positive(int), 64),
            block_ms=env.get("ROOMS_BLOCK_MS", positive(int), 1000),
            claim_idle_ms=env.get("ROOMS_CLAIM_IDLE_MS", positive(int), 10_000),
            reap_interval_s=env.get("ROOMS_REAP_INTERVAL_S", positive(float), 1.0),
            stats_interval_s=env.get("ROOMS_STATS_INTERVAL_S", positive(float), 5.0),
            shutdown_timeout_s=env.get("ROOMS_SHUTDOWN_TIMEOUT_S", positive(float), 10.0),
            log_level=env.get("LOG_LEVEL", str, "INFO"),
            log_json=env.get("LOG_JSON", parse_bool, True),
        )
        if settings.block_ms >= settings.shutdown_timeout_s * 1000:
            raise SettingsError("ROOMS_BLOCK_MS is invalid: must be below ROOMS_SHUTDOWN_TIMEOUT_S")
        return settings

    @property
    def idle_ttl_ms(self) -> int:
        return int(self.idle_ttl_s * 1000)
