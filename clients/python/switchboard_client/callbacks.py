"""Calling the application's callbacks: one that raises is logged, and the client carries on
(it runs inside the socket's reader, which must not die of it)."""

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("switchboard_client")


def call_safely(callback: Callable[..., object], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("switchboard_client: callback %r failed", callback)
