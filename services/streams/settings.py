"""Streams service settings, read once from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import (
    Env,
    JwtSettings,
    RedisSettings,
    parse_bool,
    parse_port,
    positive,
)

from .frames.settings import FramesSettings


@dataclass(frozen=True, slots=True)
class StreamsSettings:
    """`STREAMS_*` variables (the frames API reads its own `FRAMES_*` ones)."""

    host: str
    port: int
    redis: RedisSettings
    jwt: JwtSettings
    frames: FramesSettings
    shutdown_timeout_s: float
    log_level: str
    log_json: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "StreamsSettings":
        env = Env(environ)
        return cls(
            host=env.get("STREAMS_HOST", str, "0.0.0.0"),
            port=env.get("STREAMS_PORT", parse_port, 7890),
            redis=RedisSettings.from_env(env),
            jwt=JwtSettings.from_env(env),
            frames=FramesSettings.from_env(env),
            shutdown_timeout_s=env.get("STREAMS_SHUTDOWN_TIMEOUT_S", positive(float), 10.0),
            log_level=env.get("LOG_LEVEL", str, "INFO"),
            log_json=env.get("LOG_JSON", parse_bool, True),
        )
