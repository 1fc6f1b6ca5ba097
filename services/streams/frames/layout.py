"""Redis key layout of the frames API, compatible with the streaming web backend.

`B(x)` is URL-safe base64 of the UTF-8 text **with** `=` padding, as the backend writes it.
`<p>` is `FRAMES_KEY_PREFIX` (default `sb:`; empty gives the backend's exact stream keys).

| key                                  | type   | purpose                                         |
|--------------------------------------|--------|-------------------------------------------------|
| `<p>stream_frame:{B(label)}|{B(key)}`| stream | one camera's frames: `frame, warnings,          |
|                                      |        | cone_polygons, pole_polygons, detection_items,  |
|                                      |        | width, height`; MAXLEN and TTL on every write   |
| `<p>frames:labels`                   | zset   | label -> last write (ms): the label index       |
| `<p>frames:keys:{B(label)}`          | zset   | key -> last write (ms): the cameras of a label  |
| `<p>frames:rate:{user}:{window}`     | string | `GET /labels` calls of a user in one window     |

The indexes are written in the same MULTI as the frame, so `GET /labels` never scans the keyspace;
entries older than `FRAMES_TTL_S` (whose streams have expired) are pruned when read.
"""

import base64

STREAM_PREFIX = "stream_frame:"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode("ascii")


class FrameKeys:
    """Builds every frames key from the configured prefix."""

    __slots__ = ("labels", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.labels = f"{prefix}frames:labels"

    def stream(self, label: str, key: str) -> str:
        return f"{self.prefix}{STREAM_PREFIX}{b64(label)}|{b64(key)}"

    def label_keys(self, label: str) -> str:
        return f"{self.prefix}frames:keys:{b64(label)}"

    def rate(self, user: str, window: int) -> str:
        return f"{self.prefix}frames:rate:{user}:{window}"
