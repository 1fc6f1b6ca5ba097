"""Error codes of the native protocol (docs/protocol.md), the client's own below 100, and the
one exception every call raises. Branch on `code`, never on the message."""

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    # client side: no server reply could be had
    CONNECTION_LOST = 1  # the socket closed before the reply: the command may have been applied
    CLOSED = 2  # the client was closed, or the server refused it for good (close code 45xx)
    # the server's
    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    NOT_SUBSCRIBED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112
    CONFLICT = 113
    TIMEOUT = 114  # also a command the client gave up waiting for (its timeout)
    TASK_FAILED = 115


class CloseCode(IntEnum):
    """WebSocket close codes the gateway sends; 4500-4999 mean "do not reconnect"."""

    NORMAL = 1000
    ABNORMAL = 1006  # no close frame: the connection dropped
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4002
    RATE_LIMITED = 4003
    CONNECTION_LIMIT = 4004
    CONNECT_TIMEOUT = 4005
    NO_PONG = 4006
    INSUFFICIENT_STATE = 4007
    INVALID_TOKEN = 4500
    BAD_FRAME = 4501
    TOKEN_REVOKED = 4502
    FORBIDDEN = 4503
    DISCONNECTED = 4504


def is_terminal_close(code: int) -> bool:
    """Whether reconnecting with the same credentials is pointless."""
    return 4500 <= code <= 4999


class SwitchboardError(Exception):
    """An error the server answered (`code` >= 100) or the client's own (`code` < 100).

    A conflict (113) carries the room's current `version` and `state` in `details`; a refused
    connection carries its `close_code`.
    """

    def __init__(self, code: int, message: str = "", **details: Any) -> None:
        super().__init__(message or f"error {code}")
        self.code = code
        self.message = message or f"error {code}"
        self.details = details

    def __repr__(self) -> str:
        return f"SwitchboardError({self.code}, {self.message!r})"

    @property
    def temporary(self) -> bool:
        """Worth retrying as it is (108 not available, 111 too many requests, lost replies)."""
        return bool(self.details.get("temporary")) or self.code == ErrorCode.CONNECTION_LOST

    @property
    def version(self) -> int | None:
        """The room's current version, on a conflict (113)."""
        value = self.details.get("version")
        return value if isinstance(value, int) else None

    @property
    def state(self) -> Any:
        """The room's current state, on a conflict (113)."""
        return self.details.get("state")

    @classmethod
    def from_reply(cls, error: Any) -> "SwitchboardError":
        body = dict(error) if isinstance(error, dict) else {}
        code = body.pop("code", ErrorCode.INTERNAL)
        message = body.pop("message", "")
        return cls(int(code) if isinstance(code, int) else ErrorCode.INTERNAL, str(message), **body)
