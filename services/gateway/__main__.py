"""`python -m services.gateway`: settings -> logging -> serve until SIGTERM."""

from services.common.web import serve

from .app import create_app
from .runner import GatewayRunner
from .settings import GatewaySettings


def main() -> None:
    serve(GatewaySettings.from_env, create_app, GatewayRunner)


if __name__ == "__main__":
    main()
