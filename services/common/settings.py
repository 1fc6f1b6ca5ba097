"""Typed settings read once from environment variables at start-up.

Every service builds its frozen settings object with `from_env(environ)`; a missing or malformed
value raises `SettingsError` naming the variable, and the process stops with that one line.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

T = TypeVar("T")

# Secrets that ship in examples and defaults (Zou's among them): refused in production.
WEAK_SECRETS = frozenset(
    {"mysecretkey", "secret", "secret-key", "secretkey", "changeme", "change-me", "password", "dev"}
)
MIN_SECRET_LENGTH = 32
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the process must not start."""


class _Missing:
    pass


MISSING = _Missing()


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of 1/0/true/false/yes/no/on/off")


def parse_port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number 0-65535")
    return port


def positive(cast: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a numeric cast so that zero and negative values are refused."""

    def parse(raw: str) -> T:
        value = cast(raw)
        if not value > 0:  # type: ignore[operator]  # numeric casts only
            raise ValueError("expected a positive number")
        return value

    return parse


def non_negative(cast: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a numeric cast so that negative values are refused (zero is allowed)."""

    def parse(raw: str) -> T:
        value = cast(raw)
        if not value >= 0:  # type: ignore[operator]  # numeric casts only
            raise ValueError("expected zero or a positive number")
        return value

    return parse


def one_of(*choices: str) -> Callable[[str], str]:
    """A case-insensitive choice among `choices`."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def parse_list(raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.replace(",", " ").split() if item.strip())
    if not items:
        raise ValueError("expected a comma- or space-separated list")
    return items


class Env:
    """Read-only, typed access to an environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str:
        return self._environ.get(name, "")

    def get(self, name: str, cast: Callable[[str], T], default: T | _Missing = MISSING) -> T:
        raw = self._environ.get(name, "")
        if raw == "":
            if isinstance(default, _Missing):
                raise SettingsError(f"{name} is required")
            return default
        try:
            return cast(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} is invalid: {exc}") from None


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is: `REDIS_URL`, or Zou's `KV_HOST`/`KV_PORT`/`KV_PASSWORD`/`KV_EVENTS_DB_INDEX`.

    `REDIS_URL` wins when both are set.
    """

    url: str = field(repr=False)  # may carry a password
    key_prefix: str = "sb"
    connect_timeout_s: float = 5.0
    socket_timeout_s: float = 5.0
    health_check_interval_s: int = 10

    @classmethod
    def from_env(cls, env: Env) -> "RedisSettings":
        url = env.raw("REDIS_URL")
        if url:
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise SettingsError("REDIS_URL is invalid: expected redis://, rediss:// or unix://")
        elif env.raw("KV_HOST") or env.raw("KV_PORT"):
            host = env.get("KV_HOST", str, "localhost")
            port = env.get("KV_PORT", parse_port, 6379)
            db = env.get("KV_EVENTS_DB_INDEX", int, 2)
            password = env.raw("KV_PASSWORD")
            auth = f":{quote(password, safe='')}@" if password else ""
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"  # an IPv6 address, bracketed as URLs require
            url = f"redis://{auth}{host}:{port}/{db}"
        else:
            raise SettingsError("REDIS_URL is required (or KV_HOST/KV_PORT)")
        return cls(
            url=url,
            key_prefix=env.get("REDIS_KEY_PREFIX", str, "sb"),
            connect_timeout_s=env.get("REDIS_CONNECT_TIMEOUT_S", positive(float), 5.0),
            socket_timeout_s=env.get("REDIS_SOCKET_TIMEOUT_S", positive(float), 5.0),
            health_check_interval_s=env.get("REDIS_HEALTH_CHECK_INTERVAL_S", int, 10),
        )


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """How tokens are verified. Algorithms are pinned here and never read from a token."""

    key: str = field(repr=False)  # HMAC secret, or a PEM public key
    signing_key: str = field(repr=False)  # what `switchboard token` signs with ("" = cannot sign)
    algorithms: tuple[str, ...] = ("HS256",)
    leeway_s: float = 5.0
    audience: str | None = None
    issuer: str | None = None
    require_exp: bool = True
    # Zou marks a revoked token by `SET <jti> "true"` in this DB of the same Redis.
    revocation_db: int | None = 0

    @classmethod
    def from_env(cls, env: Env) -> "JwtSettings":
        default_algorithms: tuple[str, ...] = ("HS256",)
        algorithms = env.get("JWT_ALGORITHMS", parse_list, default_algorithms)
        unknown = set(algorithms) - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
        if unknown:
            raise SettingsError(f"JWT_ALGORITHMS is invalid: unsupported {sorted(unknown)}")
        hmac = set(algorithms) & HMAC_ALGORITHMS
        if hmac and len(hmac) != len(algorithms):
            # One key cannot be both an HMAC secret and a public key: that mix is the
            # algorithm-confusion hole (an RS public key used as an HS secret).
            raise SettingsError("JWT_ALGORITHMS is invalid: do not mix HS* with RS*/ES*")
        if hmac:
            key = env.get("SECRET_KEY", str)
            if not env.get("SWITCHBOARD_DEV", parse_bool, False):
                if key.lower() in WEAK_SECRETS:
                    raise SettingsError("SECRET_KEY is a known default; set a random secret")
                if len(key) < MIN_SECRET_LENGTH:
                    raise SettingsError(
                        f"SECRET_KEY is too short: use at least {MIN_SECRET_LENGTH} characters"
                    )
            signing_key = key
        else:
            key = _read_key_file(env, "JWT_PUBLIC_KEY_FILE", required=True)
            signing_key = _read_key_file(env, "JWT_PRIVATE_KEY_FILE", required=False)
        revocation = env.get("JWT_REVOCATION_DB", str, "0")
        return cls(
            key=key,
            signing_key=signing_key,
            algorithms=algorithms,
            leeway_s=env.get("JWT_LEEWAY_S", float, 5.0),
            audience=env.get("JWT_AUDIENCE", str, None),
            issuer=env.get("JWT_ISSUER", str, None),
            require_exp=env.get("JWT_REQUIRE_EXP", parse_bool, True),
            revocation_db=None
            if revocation.lower() == "off"
            else _int(revocation, "JWT_REVOCATION_DB"),
        )


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} is invalid: expected an integer or 'off'") from None


def _read_key_file(env: Env, name: str, *, required: bool) -> str:
    path = env.raw(name)
    if not path:
        if required:
            raise SettingsError(f"{name} is required for RS*/ES* algorithms")
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{name} is invalid: {exc.strerror}: {path}") from None


def load(factory: Callable[[Mapping[str, str]], T], environ: Mapping[str, str] = os.environ) -> T:
    """Build settings or exit with one line naming the bad variable."""
    try:
        return factory(environ)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
