"""`FRAMES_*` settings of the frames API."""

from dataclasses import dataclass

from services.common.settings import Env


@dataclass(frozen=True, slots=True)
class FramesSettings:
    @classmethod
    def from_env(cls, env: Env) -> "FramesSettings":
        return cls()
