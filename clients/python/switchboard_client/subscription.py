"""One channel subscription: an async iterator of publications, in order and once, across
reconnects.

The client keeps the offset of the last publication delivered and the epoch of the channel's
history; a reconnect subscribes with them as `since` and the server sends what was missed.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .callbacks import call_safely
from .errors import ErrorCode, SwitchboardError

if TYPE_CHECKING:
    from .client import Switchboard

Callback = Callable[[Any], object]


@dataclass(frozen=True, slots=True)
class Publication:
    channel: str
    data: Any
    offset: str | None = None  # None where the namespace keeps no history
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """What a (re)subscribe gave: `recovered` False after a reconnect means a gap."""

    channel: str
    recovered: bool
    resubscribed: bool
    epoch: str | None
    offset: str | None


def compare_offsets(a: str, b: str) -> int:
    """Negative, zero or positive, as stream offsets `<ms>-<seq>` compare."""
    a_ms, _, a_seq = a.partition("-")
    b_ms, _, b_seq = b.partition("-")
    left, right = (int(a_ms), int(a_seq or 0)), (int(b_ms), int(b_seq or 0))
    return (left > right) - (left < right)


class _End:
    def __init__(self, error: SwitchboardError | None) -> None:
        self.error = error


class Subscription:
    """`async for pub in sub`: ends when unsubscribed or the client closes; raises the
    SwitchboardError that ended it otherwise (a resubscribe refused after a reconnect)."""

    def __init__(
        self,
        client: "Switchboard",
        channel: str,
        *,
        since: dict[str, str] | None = None,
        token: str | None = None,
        on_join: Callback | None = None,
        on_leave: Callback | None = None,
        on_subscribed: Callable[[Subscribed], object] | None = None,
        on_recovery_failed: Callable[[Subscribed], object] | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.token = token
        self.offset: str | None = since["offset"] if since else None  # last delivered
        self.epoch: str | None = since["epoch"] if since else None
        self.recovered: bool | None = None
        self.subscribed = False
        self.on_join = on_join
        self.on_leave = on_leave
        self.on_subscribed = on_subscribed
        self.on_recovery_failed = on_recovery_failed
        self._queue: asyncio.Queue[Publication | _End] = asyncio.Queue()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight: object = None
        self._ended = False

    def position(self) -> dict[str, str] | None:
        """Where to resume from: `{offset, epoch}` once something was received."""
        if self.offset and self.epoch:
            return {"offset": self.offset, "epoch": self.epoch}
        return None

    async def unsubscribe(self) -> None:
        await self.client.unsubscribe(self.channel)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Publication:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later __anext__ ends too
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def get(self, timeout_s: float | None = None) -> Publication:
        """The next publication (within `timeout_s` seconds, else TimeoutError)."""
        async with asyncio.timeout(timeout_s):
            return await self.__anext__()

    # -- called by the client ---------------------------------------------------------------

    def _deliver(self, push: dict[str, Any]) -> None:
        offset = push.get("offset")
        if offset:
            if self.offset and compare_offsets(offset, self.offset) <= 0:
                return  # had it already
            self.offset = offset
        self._queue.put_nowait(
            Publication(self.channel, push.get("data"), offset or None, push.get("event"))
        )

    def _on_subscribed(self, result: dict[str, Any], asked_since: bool) -> Subscribed:
        resubscribed = self._ready.done()
        epoch = result.get("epoch") or None
        if self.epoch and epoch != self.epoch:
            self.offset = None  # another history: its offsets do not compare with ours
        self.epoch = epoch
        for pub in result.get("publications") or []:
            self._deliver(pub)
        if result.get("offset") and (not self.offset or not result.get("recovered")):
            self.offset = result["offset"]
        self.recovered = bool(result.get("recovered"))
        self.subscribed = True
        info = Subscribed(self.channel, self.recovered, resubscribed, self.epoch, self.offset)
        if not self._ready.done():
            self._ready.set_result(None)
        if self.on_subscribed is not None:
            call_safely(self.on_subscribed, info)
        if (asked_since or resubscribed) and not self.recovered:
            if self.on_recovery_failed is not None:
                call_safely(self.on_recovery_failed, info)
            self.client._emit("recovery_failed", info)
        return info

    def _end(self, error: SwitchboardError | None) -> None:
        """No more publications: unsubscribed (None), or refused (the error)."""
        self.subscribed = False
        if not self._ready.done():
            self._ready.set_exception(
                error or SwitchboardError(ErrorCode.NOT_SUBSCRIBED, "unsubscribed")
            )
            self._ready.exception()  # retrieved: nobody may be waiting on it
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(error))
