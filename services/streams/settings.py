"""Streams service settings, read once from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import (
    Env,
    JwtSettings,
    RedisSettings,
    SettingsError,
    non_negative,
    one_of,
    parse_bool,
    parse_port,
    positive,
)

from .frames.settings import ACCESS_LEVELS, FramesSettings


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
    key_prefix: str = "sb:data:"  # "" = PTG's exact layout: `{id}` and `XMETA:{id}`
    maxlen: int = 1000  # default retention by count (0 = unbounded)
    maxlen_exact: bool = False  # MAXLEN = instead of MAXLEN ~
    max_age_s: float = 0.0  # default retention by age through MINID (0 = none)
    max_entry_bytes: int = 16 * 1024 * 1024
    max_message_bytes: int = 64 * 1024 * 1024  # one WebSocket message (a whole batch)
    default_access: str = "readwrite"  # what a token without a `streams` claim may do
    users_file: str = ""  # `switchboard users add` writes it; "" = POST /token refuses all
    token_ttl_s: float = 86400.0
    cookie_secure: bool = False
    announce: bool = False  # PUBLISH each push on the gateway channel `streams:<id>`
    reader_buffer: int = 512  # entries buffered per pull socket before it reads from Redis
    read_block_ms: int = 1000  # block time of the shared read loop's XREAD
    heap_keep_bytes: int = 64 * 1024 * 1024  # freed memory kept for the next batch (0 = libc's)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "StreamsSettings":
        env = Env(environ)
        return cls(
            host=env.get("STREAMS_HOST", str, "0.0.0.0"),
            port=env.get("STREAMS_PORT", parse_port, 7890),
            redis=RedisSettings.from_env(env),
            jwt=JwtSettings.from_env(env),
            frames=FramesSettings.from_env(env, environ),
            shutdown_timeout_s=env.get("STREAMS_SHUTDOWN_TIMEOUT_S", positive(float), 10.0),
            log_level=env.get("LOG_LEVEL", str, "INFO"),
            log_json=env.get("LOG_JSON", parse_bool, True),
            key_prefix=_key_prefix(environ),
            maxlen=env.get("STREAMS_MAXLEN", non_negative(int), 1000),
            maxlen_exact=env.get("STREAMS_MAXLEN_EXACT", parse_bool, False),
            max_age_s=env.get("STREAMS_MAX_AGE_S", non_negative(float), 0.0),
            max_entry_bytes=env.get("STREAMS_MAX_ENTRY_BYTES", positive(int), 16 * 1024 * 1024),
            max_message_bytes=env.get("STREAMS_MAX_MESSAGE_BYTES", positive(int), 64 * 1024 * 1024),
            default_access=env.get("STREAMS_DEFAULT_ACCESS", one_of(*ACCESS_LEVELS), "readwrite"),
            users_file=env.get("STREAMS_USERS_FILE", str, ""),
            token_ttl_s=env.get("STREAMS_TOKEN_TTL_S", positive(float), 86400.0),
            cookie_secure=env.get("STREAMS_COOKIE_SECURE", parse_bool, False),
            announce=env.get("STREAMS_ANNOUNCE", parse_bool, False),
            reader_buffer=env.get("STREAMS_READER_BUFFER", positive(int), 512),
            read_block_ms=env.get("STREAMS_READ_BLOCK_MS", positive(int), 1000),
            heap_keep_bytes=env.get("STREAMS_HEAP_KEEP_MB", non_negative(int), 64) * 1024 * 1024,
        )


def _key_prefix(environ: Mapping[str, str]) -> str:
    """`STREAMS_KEY_PREFIX`; set but empty (`STREAMS_KEY_PREFIX=`) means PTG's bare keys."""
    if "STREAMS_KEY_PREFIX" not in environ:
        return "sb:data:"
    prefix = environ["STREAMS_KEY_PREFIX"]
    if any(c.isspace() for c in prefix):
        raise SettingsError("STREAMS_KEY_PREFIX is invalid: no whitespace allowed")
    return prefix
