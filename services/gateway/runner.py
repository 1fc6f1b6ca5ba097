"""aiohttp's runner for the gateway: its sites accept connections through the `FrontDoor`."""

from aiohttp import web

from .keys import commands_key, node_key
from .native_ws import FrontDoor


class GatewayRunner(web.AppRunner):
    """Sites take `server` as their protocol factory: the front door, around aiohttp's own
    (which still owns shutdown of the connections handed to it)."""

    _door: FrontDoor | None = None

    @property
    def server(self) -> FrontDoor | None:  # type: ignore[override]
        inner = super().server
        if inner is None:
            return None
        if self._door is None:
            app = self.app
            self._door = FrontDoor(inner, app[node_key], app[commands_key])
        return self._door
