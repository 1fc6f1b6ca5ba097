"""JWT verification (pyjwt) with pinned algorithms, and token revocation by `jti` in Redis."""

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .errors import NotAvailable, PermissionDenied, TokenExpired, Unauthorized
from .redis import Keys
from .settings import JwtSettings

_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
_KNOWN_CLAIMS = frozenset(
    {"sub", "exp", "iat", "nbf", "jti", "aud", "iss", "scope", "channels", "info"}
)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified connection token says about its bearer."""

    user: str
    expires_at: float | None  # epoch seconds; None when the token never expires
    jti: str | None
    scopes: frozenset[str]
    channels: tuple[str, ...]  # channels or fnmatch patterns the token allows (claim `channels`)
    info: Mapping[str, Any]  # claim `info`: shown to others in presence
    # Claims beyond the ones above (roles, tenant ids): what rpc tasks' `requires` checks.
    # Most tokens have none, and then every connection shares one empty mapping.
    extra: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRA)

    def as_dict(self) -> dict[str, Any]:
        """The claims as a task sees them (services/common/rpc.py `RpcCall.claims`)."""
        return {
            **self.extra,
            "sub": self.user,
            "scope": " ".join(sorted(self.scopes)),
            "channels": list(self.channels),
            "info": dict(self.info),
        }

    def expires_in(self, now: float | None = None) -> int | None:
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - (time.time() if now is None else now)))


class TokenVerifier:
    """Verifies connection, channel and server-API tokens against one configured key."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        required = ["sub", "exp"] if settings.require_exp else ["sub"]
        if settings.audience:
            required.append("aud")
        if settings.issuer:
            required.append("iss")
        self._required = required

    def decode(self, token: str, *, required: list[str] | None = None) -> dict[str, Any]:
        """Verify the signature and registered claims; return the payload."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("token missing")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._settings.key,
                algorithms=list(self._settings.algorithms),
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={
                    "require": required or self._required,
                    "verify_aud": bool(self._settings.audience),
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthorized("token not valid yet") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks claim {exc.claim!r}") from exc
        except jwt.PyJWTError as exc:
            # Not only InvalidTokenError: a token of a configured family that does not fit the
            # key (ES256 against an RSA key) raises InvalidKeyError.
            raise Unauthorized("invalid token") from exc
        return payload

    def verify(self, token: str) -> Claims:
        payload = self.decode(token)
        user = payload.get("sub")
        if not isinstance(user, str) or not user:
            raise Unauthorized("token claim 'sub' must be a non-empty string")
        exp = payload.get("exp")
        scope = payload.get("scope", "")
        channels = payload.get("channels", ())
        info = payload.get("info", {})
        jti = payload.get("jti")
        extra = {k: v for k, v in payload.items() if k not in _KNOWN_CLAIMS}
        return Claims(
            user=user,
            expires_at=float(exp) if isinstance(exp, int | float) else None,
            jti=str(jti) if jti is not None else None,
            scopes=frozenset(scope.split() if isinstance(scope, str) else ()),
            channels=tuple(c for c in channels if isinstance(c, str))
            if isinstance(channels, list)
            else (),
            info=info if isinstance(info, dict) else {},
            extra=extra or _NO_EXTRA,
        )

    def verify_channel_token(self, token: str, *, user: str, channel: str) -> None:
        """A channel token is signed by the backend: `sub` = the user, `channel` = the channel."""
        # Everything a connection token must carry (`exp` above all), plus the channel.
        payload = self.decode(token, required=[*self._required, "channel"])
        if payload.get("sub") != user or payload.get("channel") != channel:
            raise Unauthorized("channel token is for another user or channel")


def mint_token(settings: JwtSettings, claims: Mapping[str, Any], *, ttl_s: float | None) -> str:
    """Sign a token with the configured key (the CLI and tests use this)."""
    if not settings.signing_key:
        raise ValueError("no signing key configured (JWT_PRIVATE_KEY_FILE)")
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, **claims}
    if ttl_s is not None:
        payload["exp"] = now + int(ttl_s)
    if settings.audience and "aud" not in payload:
        payload["aud"] = settings.audience
    if settings.issuer and "iss" not in payload:
        payload["iss"] = settings.issuer
    return jwt.encode(payload, settings.signing_key, algorithm=settings.algorithms[0])


class RevocationList:
    """Revoked token ids: ours under `sb:revoked:<jti>`, and Zou's `<jti>` = "true" in its DB."""

    def __init__(self, redis: Redis, keys: Keys, *, zou_redis: Redis | None) -> None:
        self._redis = redis
        self._keys = keys
        self._zou = zou_redis

    async def is_revoked(self, jti: str | None) -> bool:
        if jti is None:
            return False
        if await self._redis.exists(self._keys.revoked(jti)):
            return True
        if self._zou is None:
            return False
        value = await self._zou.get(jti)
        return value in (b"true", "true")

    async def revoke(self, jti: str, ttl_s: int) -> None:
        await self._redis.set(self._keys.revoked(jti), b"1", ex=max(1, ttl_s))


class TokenRevoked(Unauthorized):
    """The token's `jti` was revoked (ours, or logged out in Zou): close code 4502."""


async def check_not_revoked(revocations: RevocationList, jti: str | None) -> None:
    """Raise TokenRevoked for a revoked token, NotAvailable when the list cannot be read."""
    try:
        revoked = await revocations.is_revoked(jti)
    except RedisError as exc:
        raise NotAvailable("token revocation list unreachable") from exc
    if revoked:
        raise TokenRevoked("token revoked")


def bearer_token(request: web.Request) -> str:
    """The token of an `Authorization: Bearer` header ("" without one)."""
    return bearer_of(request.headers.get("Authorization", ""))


def bearer_of(authorization: str) -> str:
    """The token of an `Authorization` header's value if it is `Bearer <token>`, else ""."""
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""


async def require_scope(
    request: web.Request, verifier: TokenVerifier, revocations: RevocationList, *scopes: str
) -> Claims:
    """The claims of an operator API call whose token holds one of `scopes`, or the error."""
    token = bearer_token(request)
    if not token:
        raise Unauthorized("Authorization: Bearer <token> required")
    claims = verifier.verify(token)
    await check_not_revoked(revocations, claims.jti)
    if not claims.scopes & set(scopes):
        raise PermissionDenied(f"token scope must include {' or '.join(scopes)}")
    return claims
