"""Who is asking, and may they read or write this stream.

A token comes, in PTG's order, from `?token=`, then `Authorization: Bearer <jwt>`, then the
`authorization` cookie (`Bearer <jwt>`, as `POST /token` sets it) or `access_token_cookie`. It is
verified by the common `TokenVerifier` (signature, pinned algorithms, expiry) and checked against
the revocation list; PTG's "any string is a token" and "expired is fine" are gone.

Stream permissions come from the token's `streams` claim, fnmatch patterns of stream ids:

    {"streams": {"read": ["cam*", "imu"], "write": ["cam1"]}}   read and write separately
    {"streams": ["cam*"]}                                      read and write the same ids

A token without a `streams` claim gets `STREAMS_DEFAULT_ACCESS` (`readwrite`, as on PTG; or
`read`, or `none`). The scope `admin` may do anything.
"""

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.common.auth import check_not_revoked
from services.common.errors import PermissionDenied, Unauthorized

from .keys import revocations_key, settings_key, verifier_key

COOKIE_NAMES = ("authorization", "access_token_cookie")


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified token's bearer and what it may touch."""

    user: str
    claims: Mapping[str, Any] = field(repr=False)
    scopes: frozenset[str] = frozenset()
    read_patterns: tuple[str, ...] = ("*",)
    write_patterns: tuple[str, ...] = ("*",)

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def can_read(self, stream: str) -> bool:
        return self.admin or _matches(self.read_patterns, stream)

    def can_write(self, stream: str) -> bool:
        return self.admin or _matches(self.write_patterns, stream)

    def require_read(self, streams: str | list[str] | tuple[str, ...]) -> None:
        for stream in [streams] if isinstance(streams, str) else streams:
            if not self.can_read(stream):
                raise PermissionDenied(f"token may not read stream {stream!r}")

    def require_write(self, streams: str | list[str] | tuple[str, ...]) -> None:
        for stream in [streams] if isinstance(streams, str) else streams:
            if not self.can_write(stream):
                raise PermissionDenied(f"token may not write stream {stream!r}")


def _matches(patterns: tuple[str, ...], stream: str) -> bool:
    return any(p == "*" or p == stream or fnmatch.fnmatchcase(stream, p) for p in patterns)


def token_from(request: web.Request) -> str:
    """The raw token of a request, or "" when it carries none."""
    token = request.query.get("token", "").strip()
    if token:
        return _strip_bearer(token)
    header = request.headers.get("Authorization", "").strip()
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in COOKIE_NAMES:
        cookie = request.cookies.get(name, "").strip().strip('"')
        if cookie:
            return _strip_bearer(cookie)
    return ""


def _strip_bearer(value: str) -> str:
    scheme, sep, rest = value.partition(" ")
    if sep and scheme.lower() == "bearer":
        return rest.strip()
    return value


def principal_from(payload: Mapping[str, Any], default_access: str) -> Principal:
    """Build a Principal from a verified JWT payload; a malformed `streams` claim is refused."""
    user = payload.get("sub")
    if not isinstance(user, str) or not user:
        raise Unauthorized("token claim 'sub' must be a non-empty string")
    scope = payload.get("scope", "")
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    read, write = _stream_patterns(payload.get("streams"), default_access)
    return Principal(
        user=user, claims=dict(payload), scopes=scopes, read_patterns=read, write_patterns=write
    )


def _stream_patterns(claim: Any, default_access: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if claim is None:
        everything: tuple[str, ...] = ("*",)
        return (
            everything if default_access in ("readwrite", "read") else (),
            everything if default_access == "readwrite" else (),
        )
    if isinstance(claim, list):
        patterns = _patterns(claim)
        return patterns, patterns
    if isinstance(claim, dict):
        return _patterns(claim.get("read", [])), _patterns(claim.get("write", []))
    raise Unauthorized("token claim 'streams' must be a list or an object")


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Unauthorized("token claim 'streams' must hold lists of strings")
    return tuple(value)


async def verify_token(app: web.Application, token: str) -> Principal:
    """Verify `token` (signature, expiry, revocation) and return its bearer."""
    if not token:
        raise Unauthorized("not authenticated: send ?token=, Authorization: Bearer or the cookie")
    payload = app[verifier_key].decode(token)
    jti = payload.get("jti")
    await check_not_revoked(app[revocations_key], str(jti) if jti is not None else None)
    return principal_from(payload, app[settings_key].default_access)


async def authenticate(request: web.Request) -> Principal:
    """The bearer of the request's token (HTTP requests and WebSocket handshakes alike).

    Raises Unauthorized (no token, forged, revoked), TokenExpired, or NotAvailable when the
    revocation list cannot be read.
    """
    return await verify_token(request.app, token_from(request))
