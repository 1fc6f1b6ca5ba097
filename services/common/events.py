"""The events contract: what handlers consume.

Every publication that names an event is appended to the stream `sb:events` (approximate MAXLEN
`EVENTS_MAXLEN`), one entry per event with the fields

| field    | value                                                      |
|----------|------------------------------------------------------------|
| `event`  | the event name, e.g. `task:new`                            |
| `data`   | the event's payload as JSON text                           |
| `source` | `api` (server API), `client` (client publish), `zou` (bridge) |
| `channel`| the channel it was published on ('' when none)             |
| `ts`     | ms since the epoch when the gateway appended it            |

The handlers service reads it with the consumer group `handlers` (at least once: entries of a dead
consumer are claimed again).
"""

import time
from collections.abc import Mapping
from typing import Final

CONSUMER_GROUP: Final = "handlers"
EVENTS_MAXLEN: Final = 100_000


def event_fields(event: str, data_json: str, *, source: str, channel: str = "") -> dict[str, str]:
    return {
        "event": event,
        "data": data_json,
        "source": source,
        "channel": channel,
        "ts": str(int(time.time() * 1000)),
    }


def decode_fields(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in fields.items()}
