"""The CLI drives every service: the rooms service's fixture too."""

from tests.rooms.conftest import start_rooms  # noqa: F401
