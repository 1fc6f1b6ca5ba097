"""PTG's batch framing: a JSON header of offsets, then one binary frame of concatenated entries.

Push headers come in three shapes, as on PTG:

    [["main", 100], ["depth", 250]]                  stream id and offset
    [["main", "1650811721065-0", 100], ...]           stream id, explicit entry id, offset
    [100, 250]                                        offsets only; ids from the path

Offsets follow either convention, told apart as redis-streamer does: a first offset of 0 means
start offsets (the README's, `[0, 100]` for two entries of a 250-byte frame), anything else end
offsets (ptgctl's, `[100, 250]`). End offsets must end at the data's length. PTG took start
offsets for end offsets and lost the last entry; here both give every entry. One consequence:
a batch whose first entry is empty must use start offsets.

Pull headers are always start offsets: `[[stream id, entry id, start], ...]`.
"""

import itertools
import json
from collections.abc import Sequence
from typing import Any

from .closes import BadHeader, OffsetsOutOfRange
from .store import Entry, check_stream_id


def split_batch(header: str | bytes, data: bytes, path_ids: Sequence[str]) -> list[Entry]:
    """The entries a push header and its binary frame describe; BadHeader/OffsetsOutOfRange."""
    try:
        items: Any = json.loads(header)
    except ValueError:
        raise BadHeader("header is not JSON") from None
    if not isinstance(items, list):
        raise BadHeader("header must be a JSON list")
    streams, ids, offsets = _columns(items, path_ids)
    bounds = _bounds(offsets, len(data))
    view = memoryview(data)
    return [
        Entry(stream, view[bounds[i] : bounds[i + 1]], entry_id)
        for i, (stream, entry_id) in enumerate(zip(streams, ids, strict=True))
    ]


def _columns(
    items: list[Any], path_ids: Sequence[str]
) -> tuple[list[str], list[str | None], list[int]]:
    wildcard = list(path_ids) == ["*"]
    if all(_is_int(i) for i in items):
        if wildcard:
            raise BadHeader("with stream id '*' the header must name each entry's stream")
        if len(path_ids) == 1:
            streams = [path_ids[0]] * len(items)
        elif len(items) == len(path_ids):
            streams = list(path_ids)
        else:
            raise BadHeader(f"{len(items)} offsets for the {len(path_ids)} streams of the path")
        return streams, [None] * len(items), list(items)
    streams, ids, offsets = [], [], []
    for item in items:
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise BadHeader(
                "header items must all be offsets, [stream, offset] or [stream, entry id, offset]"
            )
        stream, offset = item[0], item[-1]
        entry_id = item[1] if len(item) == 3 else None
        if not isinstance(stream, str) or not _is_int(offset):
            raise BadHeader("header item must be [stream id (string), ..., offset (integer)]")
        if entry_id is not None and not isinstance(entry_id, str):
            raise BadHeader("an explicit entry id must be a string like '1650811721065-0'")
        check_stream_id(stream)
        if not wildcard and stream not in path_ids:
            raise BadHeader(f"stream {stream!r} is not in the path")
        streams.append(stream)
        ids.append(None if entry_id in (None, "*", "") else entry_id)
        offsets.append(offset)
    return streams, ids, offsets


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(offsets: list[int], size: int) -> list[int]:
    """n+1 boundaries for n entries, whichever convention the offsets use."""
    if not offsets:
        if size:
            raise OffsetsOutOfRange(f"{size} bytes of data but no offsets")
        return [0]
    for a, b in itertools.pairwise(offsets):
        if b < a:
            raise OffsetsOutOfRange("offsets must not decrease")
    if offsets[0] < 0 or offsets[-1] > size:
        raise OffsetsOutOfRange(f"offsets must be within the data's {size} bytes")
    if offsets[0] == 0:
        return [*offsets, size]  # start offsets
    if offsets[-1] != size:
        raise OffsetsOutOfRange(
            f"end offsets must end at the data's length {size}, not {offsets[-1]} "
            "(start offsets begin with 0)"
        )
    return [0, *offsets]


def pack(entries: Sequence[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    """The pull answer: header `[[sid, id, start], ...]` and the concatenated data."""
    header, parts, offset = [], [], 0
    for stream, entry_id, data in entries:
        header.append([stream, entry_id, offset])
        parts.append(data)
        offset += len(data)
    return json.dumps(header, separators=(",", ":")), b"".join(parts)
