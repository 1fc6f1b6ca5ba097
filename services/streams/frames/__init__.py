"""The streaming-web-compatible frames API (`/frames`, `/labels`, `/ws/frames`, `/ws/labels`,
`/ws/stream`), stored in the same Redis Streams as every other data stream."""

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the frames routes and their background tasks to the streams app."""
