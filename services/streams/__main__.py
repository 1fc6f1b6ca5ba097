"""`python -m services.streams`: settings -> logging -> serve until SIGTERM."""

from services.common.web import serve

from .app import create_app
from .settings import StreamsSettings


def main() -> None:
    serve(StreamsSettings.from_env, create_app)


if __name__ == "__main__":
    main()
