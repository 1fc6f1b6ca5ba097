"""Error vocabulary shared by all services: protocol error codes, HTTP errors and close codes.

`ErrorCode` values are an API (clients branch on them): never renumber one, only add. They follow
Centrifugo's numbering so that its client habits carry over. The table is documented in
docs/protocol.md.
"""

from enum import IntEnum
from typing import ClassVar


class ErrorCode(IntEnum):
    """Codes carried in `{"error": {"code", "message"}}` replies and HTTP error bodies."""

    INTERNAL = 100  # server bug or unexpected failure; details are in the server log
    UNAUTHORIZED = 101  # missing, malformed, forged or revoked token
    UNKNOWN_CHANNEL = 102  # channel name in no configured namespace, or malformed
    PERMISSION_DENIED = 103  # the user may not do this on this channel
    METHOD_NOT_FOUND = 104  # unknown op, rpc method or API route
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106  # subscriptions per connection, connections per user, message size
    BAD_REQUEST = 107  # malformed JSON, missing field, wrong type
    NOT_AVAILABLE = 108  # feature off for this namespace (history, presence) or Redis down
    TOKEN_EXPIRED = 109  # refresh the token and retry
    NOT_SUBSCRIBED = 110
    TOO_MANY_REQUESTS = 111  # command rate limit
    UNRECOVERABLE_POSITION = 112  # `since` is not covered by history (history op only)


class ServiceError(Exception):
    """An error whose code and message are safe to return to the caller."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    http_status: ClassVar[int] = 500
    temporary: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        self.message = message or self.code.name.lower().replace("_", " ")
        super().__init__(self.message)

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": int(self.code), "message": self.message}
        if self.temporary:
            body["temporary"] = True
        return body


class InternalError(ServiceError):
    pass


class Unauthorized(ServiceError):
    code = ErrorCode.UNAUTHORIZED
    http_status = 401


class TokenExpired(Unauthorized):
    code = ErrorCode.TOKEN_EXPIRED


class UnknownChannel(ServiceError):
    code = ErrorCode.UNKNOWN_CHANNEL
    http_status = 404


class PermissionDenied(ServiceError):
    code = ErrorCode.PERMISSION_DENIED
    http_status = 403


class MethodNotFound(ServiceError):
    code = ErrorCode.METHOD_NOT_FOUND
    http_status = 404


class AlreadySubscribed(ServiceError):
    code = ErrorCode.ALREADY_SUBSCRIBED
    http_status = 409


class LimitExceeded(ServiceError):
    code = ErrorCode.LIMIT_EXCEEDED
    http_status = 413


class BadRequest(ServiceError):
    code = ErrorCode.BAD_REQUEST
    http_status = 400


class NotAvailable(ServiceError):
    code = ErrorCode.NOT_AVAILABLE
    http_status = 503
    temporary = True


class NotSubscribed(ServiceError):
    code = ErrorCode.NOT_SUBSCRIBED
    http_status = 409


class TooManyRequests(ServiceError):
    code = ErrorCode.TOO_MANY_REQUESTS
    http_status = 429
    temporary = True


class UnrecoverablePosition(ServiceError):
    code = ErrorCode.UNRECOVERABLE_POSITION
    http_status = 410


class CloseCode(IntEnum):
    """WebSocket close codes the gateway sends.

    1000-1999 are RFC 6455 codes. 4000-4499: the client should reconnect with backoff.
    4500-4999: terminal, the client must not reconnect with the same credentials.
    """

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit (sent by aiohttp's reader)
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # process shutting down; reconnect (to another process)
    TOKEN_EXPIRED = 4001  # refresh the token, then reconnect
    SLOW_CONSUMER = 4002  # outbound buffer overflowed
    RATE_LIMITED = 4003  # far over the command rate limit
    CONNECTION_LIMIT = 4004  # too many connections for this user
    CONNECT_TIMEOUT = 4005  # no `connect` command within the deadline
    NO_PONG = 4006  # the client answered no ping for two heartbeat intervals
    INSUFFICIENT_STATE = 4007  # publications were lost and history cannot fill the gap
    INVALID_TOKEN = 4500  # forged, malformed or wrong algorithm
    BAD_FRAME = 4501  # not JSON, not an object, or binary where text is expected
    TOKEN_REVOKED = 4502  # the token's jti was revoked
    FORBIDDEN = 4503
    DISCONNECTED = 4504  # an operator disconnected this user through the server API

    @property
    def reconnect(self) -> bool:
        return self < 4500
