"""`python -m services.rooms`: settings -> logging -> serve until SIGTERM."""

from services.common.web import serve

from .app import create_app
from .settings import RoomsSettings


def main() -> None:
    serve(RoomsSettings.from_env, create_app)


if __name__ == "__main__":
    main()
