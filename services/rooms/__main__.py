"""`python -m services.rooms`: settings -> logging -> serve until SIGTERM."""

from services.common.logging import configure_logging
from services.common.settings import load
from services.common.web import run

from .app import create_app
from .settings import RoomsSettings


def main() -> None:
    settings = load(RoomsSettings.from_env)
    configure_logging(settings.log_level, json_output=settings.log_json)
    run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )


if __name__ == "__main__":
    main()
