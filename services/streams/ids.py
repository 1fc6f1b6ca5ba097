"""Redis stream entry ids as (ms, seq) pairs: compared as numbers, never as strings.

PTG compared ids bytewise (`max()` on strings), so `5-10` sorted before `5-9` and a reader
that resumed got duplicates; here every comparison goes through `parse_id`.
"""

import re

_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}|\*))?$")
MAX_U64 = 2**64 - 1
MAX_EXPLICIT = 2**53  # explicit ids are checked in a Lua script, whose numbers are doubles
ZERO = (0, 0)

EntryId = tuple[int, int]


def parse_id(raw: str | bytes) -> EntryId:
    """`1650811721065-3` -> (1650811721065, 3); a bare `ms` means `ms-0`."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    match = _ID.match(text)
    if match is None or match[2] == "*":
        raise ValueError(f"invalid entry id {text!r}")
    ms, seq = int(match[1]), int(match[2] or 0)
    if ms > MAX_U64 or seq > MAX_U64:
        raise ValueError(f"invalid entry id {text!r}")
    return ms, seq


def parse_explicit(raw: str) -> str:
    """An id a client asks XADD to use: `ms-seq`, `ms-*` or `ms` (= `ms-*`), normalised."""
    match = _ID.match(raw)
    if match is None or int(match[1]) >= MAX_EXPLICIT:
        raise ValueError(f"invalid entry id {raw!r}: expected <ms>-<seq>")
    if match[2] is None or match[2] == "*":
        return f"{int(match[1])}-*"
    if int(match[2]) >= MAX_EXPLICIT:
        raise ValueError(f"invalid entry id {raw!r}")
    if (int(match[1]), int(match[2])) == ZERO:
        raise ValueError("entry id 0-0 is not allowed")
    return f"{int(match[1])}-{int(match[2])}"


def format_id(entry: EntryId) -> str:
    return f"{entry[0]}-{entry[1]}"
