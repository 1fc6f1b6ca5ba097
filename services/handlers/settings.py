"""Handlers service settings, read once from the environment."""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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


class Isolation(StrEnum):
    THREAD = "thread"  # sync handlers in a bounded thread pool of this process
    PROCESS = "process"  # every handler in a pool of worker processes that may be killed


@dataclass(frozen=True, slots=True)
class HandlersSettings:
    """`HANDLERS_*` variables, plus Zou's `EVENT_HANDLERS_FOLDER` and `TASKS_FOLDER`.

    The consumer name defaults to `<host>:<port>` so that a replica restarted in place first
    re-reads the entries it held when it died.
    """

    host: str
    port: int
    redis: RedisSettings
    jwt: JwtSettings
    handlers_folder: Path
    tasks_folder: Path
    isolation: Isolation
    threads: int
    processes: int
    handler_timeout_s: float
    retries: int
    backoff_s: float
    backoff_max_s: float
    task_timeout_s: float
    concurrency: int
    consumer: str
    batch: int
    block_ms: int
    claim_idle_ms: int
    watch_interval_s: float
    stats_interval_s: float
    dlq_maxlen: int
    shutdown_timeout_s: float
    log_level: str
    log_json: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "HandlersSettings":
        env = Env(environ)
        port = env.get("HANDLERS_PORT", parse_port, 5003)
        isolation = env.get("HANDLERS_ISOLATION", one_of(*Isolation), "thread")
        settings = cls(
            host=env.get("HANDLERS_HOST", str, "0.0.0.0"),
            port=port,
            redis=RedisSettings.from_env(env),
            jwt=JwtSettings.from_env(env),
            handlers_folder=Path(env.get("EVENT_HANDLERS_FOLDER", str, "./event_handlers")),
            tasks_folder=Path(env.get("TASKS_FOLDER", str, "./tasks")),
            isolation=Isolation(isolation),
            threads=env.get("HANDLERS_THREADS", positive(int), 16),
            processes=env.get("HANDLERS_PROCESSES", positive(int), 2),
            handler_timeout_s=env.get("HANDLERS_TIMEOUT_S", positive(float), 30.0),
            retries=env.get("HANDLERS_RETRIES", non_negative(int), 3),
            backoff_s=env.get("HANDLERS_BACKOFF_S", positive(float), 0.5),
            backoff_max_s=env.get("HANDLERS_BACKOFF_MAX_S", positive(float), 30.0),
            task_timeout_s=env.get("HANDLERS_TASK_TIMEOUT_S", positive(float), 10.0),
            concurrency=env.get("HANDLERS_CONCURRENCY", positive(int), 256),
            consumer=env.get("HANDLERS_CONSUMER", str, f"{socket.gethostname()}:{port}"),
            batch=env.get("HANDLERS_BATCH", positive(int), 128),
            block_ms=env.get("HANDLERS_BLOCK_MS", positive(int), 1000),
            claim_idle_ms=env.get("HANDLERS_CLAIM_IDLE_MS", positive(int), 30_000),
            watch_interval_s=env.get("HANDLERS_WATCH_INTERVAL_S", positive(float), 1.0),
            stats_interval_s=env.get("HANDLERS_STATS_INTERVAL_S", positive(float), 5.0),
            dlq_maxlen=env.get("HANDLERS_DLQ_MAXLEN", positive(int), 10_000),
            shutdown_timeout_s=env.get("HANDLERS_SHUTDOWN_TIMEOUT_S", positive(float), 10.0),
            log_level=env.get("LOG_LEVEL", str, "INFO"),
            log_json=env.get("LOG_JSON", parse_bool, True),
        )
        if settings.block_ms >= settings.shutdown_timeout_s * 1000:
            raise SettingsError(
                "HANDLERS_BLOCK_MS is invalid: must be below HANDLERS_SHUTDOWN_TIMEOUT_S"
            )
        if settings.block_ms >= settings.redis.socket_timeout_s * 1000:
            raise SettingsError(
                "HANDLERS_BLOCK_MS is invalid: must be below REDIS_SOCKET_TIMEOUT_S"
            )
        return settings
