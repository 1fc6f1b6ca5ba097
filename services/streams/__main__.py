"""`python -m services.streams`: settings -> logging -> serve until SIGTERM."""

from aiohttp import web

from services.common.heap import keep_freed_heap
from services.common.web import serve

from .app import create_app
from .settings import StreamsSettings


def main() -> None:
    serve(StreamsSettings.from_env, _create_app)


def _create_app(settings: StreamsSettings) -> web.Application:
    # A process-wide malloc setting: here, not in create_app, which tests call in their process.
    keep_freed_heap(settings.heap_keep_bytes)
    return create_app(settings)


if __name__ == "__main__":
    main()
