"""Channel namespaces: who may subscribe, history, presence and client publish, per namespace.

A channel is `namespace:name`; a channel without a colon is in the default namespace. The
configuration is a JSON or TOML file named by `SWITCHBOARD_CHANNELS`:

    {"namespaces": {"chat": {"subscribe": ["any"], "history_size": 1000,
                             "history_ttl_s": 3600, "presence": true, "join_leave": true,
                             "allow_publish": true, "events": true}}}

`events: true` appends every client publication that names an `event` to the handlers' event
stream (server API publications with an `event` always are).

`subscribe` lists the ways a user may be allowed in, any of which suffices:
- `any`: every authenticated user;
- `owner`: the channel name is `#<user>` (or `#<user1>,<user2>`), and the user is listed;
- `claim`: the connection token's `channels` claim lists the channel or a matching pattern;
- `token`: the client presents a channel token (`sub` = the user, `channel` = the channel)
  signed with the same key;
- `internal`: no client subscribes directly; the gateway subscribes sockets itself (the `room`
  namespace: after a successful `room.join`).
"""

import fnmatch
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import PermissionDenied, UnknownChannel
from .settings import SettingsError

MAX_CHANNEL_LENGTH = 255
SUBSCRIBE_RULES = frozenset({"any", "owner", "claim", "token", "internal"})


@dataclass(frozen=True, slots=True)
class Namespace:
    """The options of one namespace."""

    name: str
    subscribe: tuple[str, ...] = ("any",)
    history_size: int = 100
    history_ttl_s: float = 600.0
    presence: bool = True
    presence_ttl_s: float = 60.0
    join_leave: bool = False
    allow_publish: bool = False
    events: bool = False  # client publications with an `event` go to the handlers too

    @property
    def history_ttl_ms(self) -> int:
        return int(self.history_ttl_s * 1000)

    @property
    def has_history(self) -> bool:
        return self.history_size > 0


DEFAULT_NAMESPACES: dict[str, Namespace] = {
    "": Namespace(name=""),
    "user": Namespace(name="user", subscribe=("owner", "claim", "token"), presence=False),
    # Zou's event stream: every authenticated Kitsu user receives the studio's events.
    "zou": Namespace(name="zou", presence=False),
    # Room pushes (`room:<id>`): the gateway subscribes a socket after its `room.join`.
    "room": Namespace(name="room", subscribe=("internal",), history_size=0, presence=False),
    # A data stream's arrivals (`streams:<id>`, STREAMS_ANNOUNCE): entry ids, not the data.
    "streams": Namespace(
        name="streams", subscribe=("claim", "token"), history_size=0, presence=False
    ),
}


def usable_name(name: str) -> bool:
    """No whitespace, control character or brace: braces would break a Redis key's hash tag,
    the rest an unambiguous channel name. (A character that is not printable or is a space is
    exactly one that `isspace()` or not `isprintable()`; this checks the string in C.)"""
    return name.isprintable() and " " not in name and "{" not in name and "}" not in name


def split_channel(channel: object) -> tuple[str, str]:
    """`chat:room1` -> (`chat`, `room1`); validates the name."""
    if not isinstance(channel, str) or not 0 < len(channel) <= MAX_CHANNEL_LENGTH:
        raise UnknownChannel(f"channel must be a string of 1-{MAX_CHANNEL_LENGTH} characters")
    if not usable_name(channel):
        raise UnknownChannel("channel contains whitespace, control characters or braces")
    namespace, sep, name = channel.partition(":")
    if not sep:
        return "", channel
    if not name:
        raise UnknownChannel("channel name is empty")
    return namespace, name


class Namespaces:
    """Looks up a channel's namespace and decides whether a user may subscribe."""

    def __init__(self, namespaces: Mapping[str, Namespace]) -> None:
        self._namespaces = dict(namespaces)

    def __iter__(self) -> Any:
        return iter(self._namespaces.values())

    def of(self, channel: object) -> Namespace:
        namespace, _ = split_channel(channel)
        found = self._namespaces.get(namespace)
        if found is None:
            raise UnknownChannel(f"unknown namespace {namespace!r}")
        return found

    @staticmethod
    def check_subscribe(
        namespace: Namespace,
        channel: str,
        *,
        user: str,
        claimed: tuple[str, ...],
        channel_token_ok: bool,
    ) -> None:
        """Raise PermissionDenied unless one of the namespace's rules lets `user` in."""
        rules = namespace.subscribe
        if rules == ("internal",):
            raise PermissionDenied("permission denied: only the server subscribes here")
        if "any" in rules:
            return
        if "owner" in rules:
            _, name = split_channel(channel)
            if name.startswith("#") and user in name[1:].split(","):
                return
        if "claim" in rules and any(fnmatch.fnmatchcase(channel, p) for p in claimed):
            return
        if "token" in rules and channel_token_ok:
            return
        raise PermissionDenied("permission denied")

    @classmethod
    def load(cls, path: str) -> "Namespaces":
        """The built-in namespaces, overridden or extended by the file at `path` ('' = none)."""
        namespaces = dict(DEFAULT_NAMESPACES)
        if not path:
            return cls(namespaces)
        try:
            text = Path(path).read_text()
            raw = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"SWITCHBOARD_CHANNELS is invalid: {path}: {exc}") from None
        items = raw.get("namespaces") if isinstance(raw, dict) else None
        if not isinstance(items, dict):
            raise SettingsError("SWITCHBOARD_CHANNELS is invalid: expected a 'namespaces' table")
        for name, options in items.items():
            base = namespaces.get(name, Namespace(name=name))
            namespaces[name] = _namespace(base, options)
        return cls(namespaces)


_TYPES: dict[str, tuple[type, ...]] = {
    "history_size": (int,),
    "history_ttl_s": (int, float),
    "presence": (bool,),
    "presence_ttl_s": (int, float),
    "join_leave": (bool,),
    "allow_publish": (bool,),
    "events": (bool,),
}


def _namespace(base: Namespace, options: object) -> Namespace:
    where = f"SWITCHBOARD_CHANNELS is invalid: namespace {base.name!r}"
    if not isinstance(options, dict):
        raise SettingsError(f"{where}: expected a table of options")
    known = {f.name for f in fields(Namespace)} - {"name"}
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if key not in known:
            raise SettingsError(f"{where}: unknown option {key!r}")
        if key == "subscribe":
            rules = (value,) if isinstance(value, str) else value
            if (
                not isinstance(rules, list | tuple)
                or not rules
                # A hand-written file may hold an unhashable rule (a list): check its type first.
                or not all(isinstance(rule, str) and rule in SUBSCRIBE_RULES for rule in rules)
            ):
                raise SettingsError(
                    f"{where}: subscribe must list some of {sorted(SUBSCRIBE_RULES)}"
                )
            changes[key] = tuple(rules)
            continue
        types = _TYPES[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise SettingsError(f"{where}: {key} must be {types[0].__name__}")
        if bool not in types and value < 0:  # type: ignore[operator]  # int or float here
            raise SettingsError(f"{where}: {key} must not be negative")
        changes[key] = value
    return replace(base, **changes)
