"""A stand-in service for the supervisor tests: waits for signals, exits 0 on SIGTERM.

Run as `python -m tests.common.dummy_service`. It writes one line to stdout when it starts and one
on SIGHUP, so a test can see both in the supervisor's output.
"""

import os
import signal
import sys
from types import FrameType


def _say(text: str) -> None:
    sys.stdout.write(f"dummy_service pid={os.getpid()} {text}\n")
    sys.stdout.flush()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _on_sighup(signum: int, frame: FrameType | None) -> None:
    _say("reloaded")


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sighup)
    _say("started")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
