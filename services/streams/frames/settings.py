"""`FRAMES_*` settings of the frames API."""

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import Env, non_negative, one_of, parse_bool, positive

# What a token without permission claims may do (streams and frames alike).
ACCESS_LEVELS = ("readwrite", "read", "none")


@dataclass(frozen=True, slots=True)
class FramesSettings:
    """How frames are stored, who may touch them, and how sockets are bounded.

    `key_prefix` goes in front of every frames key: `<prefix>stream_frame:{b64(label)}|{b64(key)}`.
    It defaults to `<REDIS_KEY_PREFIX>:`; `FRAMES_KEY_PREFIX=` (set but empty) gives the streaming
    web backend's exact keys.
    """

    key_prefix: str = "sb:"
    maxlen: int = 10  # frames kept per camera stream (MAXLEN)
    maxlen_exact: bool = False  # MAXLEN = instead of MAXLEN ~
    ttl_s: float = 86400.0  # a camera stream not written for this long expires (0 = never)
    max_frame_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 64 * 1024  # the JSON header of a `--IMG--` message, or form fields
    default_access: str = "readwrite"  # what a token without a `labels` claim may do
    labels_rate: int = 60  # GET /labels per user per window
    labels_rate_window_s: int = 60
    read_block_ms: int = 1000  # XREAD BLOCK of the shared read loop
    read_count: int = 10  # entries per stream per XREAD
    label_refresh_s: float = 1.0  # how often watched labels look for new cameras
    pull_timeout_s: float = 10.0  # /ws/stream `pull` waits this long for a new frame
    idle_timeout_s: float = 60.0  # /ws/frames and /ws/stream close after this long silent
    max_session_s: float = 1800.0  # every frames socket is closed after this long (0 = never)
    heartbeat_s: float = 30.0  # WebSocket ping interval

    @classmethod
    def from_env(cls, env: Env, environ: Mapping[str, str] | None = None) -> "FramesSettings":
        """`environ` lets `FRAMES_KEY_PREFIX=` (set but empty) mean "no prefix"."""
        redis_prefix = env.get("REDIS_KEY_PREFIX", str, "sb")
        return cls(
            key_prefix=_key_prefix(env, environ, f"{redis_prefix}:"),
            maxlen=env.get("FRAMES_MAXLEN", positive(int), 10),
            maxlen_exact=env.get("FRAMES_MAXLEN_EXACT", parse_bool, False),
            ttl_s=env.get("FRAMES_TTL_S", non_negative(float), 86400.0),
            max_frame_bytes=env.get("FRAMES_MAX_FRAME_BYTES", positive(int), 8 * 1024 * 1024),
            max_header_bytes=env.get("FRAMES_MAX_HEADER_BYTES", positive(int), 64 * 1024),
            default_access=env.get("FRAMES_DEFAULT_ACCESS", one_of(*ACCESS_LEVELS), "readwrite"),
            labels_rate=env.get("FRAMES_LABELS_RATE", positive(int), 60),
            labels_rate_window_s=env.get("FRAMES_LABELS_RATE_WINDOW_S", positive(int), 60),
            read_block_ms=env.get("FRAMES_READ_BLOCK_MS", positive(int), 1000),
            read_count=env.get("FRAMES_READ_COUNT", positive(int), 10),
            label_refresh_s=env.get("FRAMES_LABEL_REFRESH_S", positive(float), 1.0),
            pull_timeout_s=env.get("FRAMES_PULL_TIMEOUT_S", positive(float), 10.0),
            idle_timeout_s=env.get("FRAMES_IDLE_TIMEOUT_S", positive(float), 60.0),
            max_session_s=env.get("FRAMES_MAX_SESSION_S", non_negative(float), 1800.0),
            heartbeat_s=env.get("FRAMES_HEARTBEAT_S", positive(float), 30.0),
        )


def _key_prefix(env: Env, environ: Mapping[str, str] | None, default: str) -> str:
    if environ is not None and "FRAMES_KEY_PREFIX" in environ:
        return environ["FRAMES_KEY_PREFIX"]
    return env.get("FRAMES_KEY_PREFIX", str, default)
