"""Who may read or write which label (site) and key (camera), from the token's `labels` claim.

The claim holds fnmatch patterns. A pattern without `|` matches a label (every key of it); a
pattern `LABEL|KEY` matches one label's keys (the `|` separator of the backend's stream keys):

    {"labels": ["site-a", "site-b|cam*"]}                       read and write the same
    {"labels": {"read": ["site-*"], "write": ["site-a|cam1"]}}  read and write separately

A token without a `labels` claim gets `FRAMES_DEFAULT_ACCESS` (`readwrite`, `read` or `none`);
the scope `admin` may do anything. The check applies to every endpoint (the backend filtered only
`GET /labels`).
"""

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.common.errors import PermissionDenied, Unauthorized

EVERYTHING = ("*",)


@dataclass(frozen=True, slots=True)
class LabelAccess:
    user: str
    admin: bool
    read: tuple[str, ...]
    write: tuple[str, ...]
    expires_at: float | None = None  # the token's `exp`: sockets close then

    def can_see_label(self, label: str) -> bool:
        """Whether any key of `label` may be read (what `GET /labels` lists)."""
        return self.admin or any(_label_part_matches(p, label) for p in self.read)

    def can_read(self, label: str, key: str) -> bool:
        return self.admin or _matches(self.read, label, key)

    def can_write(self, label: str, key: str) -> bool:
        return self.admin or _matches(self.write, label, key)

    def require_label(self, label: str) -> None:
        if not self.can_see_label(label):
            raise PermissionDenied(f"token may not read label {label!r}")

    def require_read(self, label: str, key: str) -> None:
        if not self.can_read(label, key):
            raise PermissionDenied(f"token may not read {label!r}/{key!r}")

    def require_write(self, label: str, key: str) -> None:
        if not self.can_write(label, key):
            raise PermissionDenied(f"token may not write {label!r}/{key!r}")


def access_from(
    user: str, claims: Mapping[str, Any], scopes: frozenset[str], default: str
) -> LabelAccess:
    """Read the `labels` claim; a malformed one is refused rather than read as "everything"."""
    claim = claims.get("labels")
    read: tuple[str, ...]
    write: tuple[str, ...]
    if claim is None:
        read = EVERYTHING if default in ("readwrite", "read") else ()
        write = EVERYTHING if default == "readwrite" else ()
    elif isinstance(claim, list):
        read = write = _patterns(claim)
    elif isinstance(claim, dict):
        read, write = _patterns(claim.get("read", [])), _patterns(claim.get("write", []))
    else:
        raise Unauthorized("token claim 'labels' must be a list or an object")
    exp = claims.get("exp")
    return LabelAccess(
        user=user,
        admin="admin" in scopes,
        read=read,
        write=write,
        expires_at=float(exp) if isinstance(exp, int | float) else None,
    )


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Unauthorized("token claim 'labels' must hold lists of strings")
    return tuple(value)


def _matches(patterns: tuple[str, ...], label: str, key: str) -> bool:
    for pattern in patterns:
        label_pattern, sep, key_pattern = pattern.partition("|")
        if not fnmatch.fnmatchcase(label, label_pattern):
            continue
        if not sep or fnmatch.fnmatchcase(key, key_pattern):
            return True
    return False


def _label_part_matches(pattern: str, label: str) -> bool:
    return fnmatch.fnmatchcase(label, pattern.partition("|")[0])
