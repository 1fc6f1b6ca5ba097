"""The streaming-web-compatible frames API (`/frames`, `/labels`, `/ws/frames`, `/ws/labels`,
`/ws/stream`), stored in the backend's Redis stream layout (docs/frames.md)."""

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the frames routes and their background tasks to the streams app."""
    # Imported here, not at the top: services.streams.settings imports frames.settings, which
    # runs this package first, and the wiring needs services.streams.keys (which needs settings).
    from .wiring import install

    install(app)
