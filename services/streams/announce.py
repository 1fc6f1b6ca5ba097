"""Optional announcement of pushed entries on the gateway channel `streams:<id>`.

Published through the common bus without history (a `streams` namespace with
`history_size: 0`), so a native client subscribed to `streams:main` receives

    {"push": "pub", "channel": "streams:main", "offset": "",
     "data": {"stream": "main", "ids": ["1650811721065-0", ...], "sizes": [1024, ...]}}

for every push batch. The bytes themselves stay in the stream (pull or GET /data for them).
"""

import json
import logging
from collections.abc import Sequence

from aiohttp import web
from redis.exceptions import RedisError

from services.common.bus import Bus
from services.common.channels import Namespace

log = logging.getLogger(__name__)

NAMESPACE = Namespace(name="streams", history_size=0, presence=False)


class Announcer:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def announce(self, stream: str, ids: Sequence[str], sizes: Sequence[int]) -> None:
        """Best effort: the entries are stored already; a failed announcement is only logged."""
        data = json.dumps({"stream": stream, "ids": list(ids), "sizes": list(sizes)}).encode()
        try:
            await self._bus.publish(f"streams:{stream}", data, NAMESPACE)
        except RedisError as exc:
            log.warning("announce failed", extra={"stream": stream, "error": repr(exc)})


announcer_key = web.AppKey("announcer", Announcer)
