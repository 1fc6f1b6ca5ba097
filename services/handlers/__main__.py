"""`python -m services.handlers`: settings -> logging -> serve until SIGTERM (SIGHUP reloads)."""

import os
import sys

from aiohttp import web

from services.common.web import serve

from .app import create_app
from .settings import HandlersSettings


def _create(settings: HandlersSettings) -> web.Application:
    # Only the real process listens for SIGHUP (`switchboard ctl reload-handlers`).
    return create_app(settings, reload_on_sighup=True)


def main() -> None:
    serve(HandlersSettings.from_env, _create)
    # A sync handler hung in a thread would keep the interpreter from exiting (it joins the
    # pool's threads): everything was cleaned up by now, so leave without waiting for it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
