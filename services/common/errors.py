"""Error vocabulary shared by all services: protocol error codes, HTTP errors and close codes.

`ErrorCode` values are an API (clients branch on them): never renumber one, only add. They follow
Centrifugo's numbering so that its client habits carry over. The table is documented in
docs/protocol.md.
"""

from enum import IntEnum
from typing import Any, ClassVar


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
    CONFLICT = 113  # room update with a stale `version`; the body carries the current ones
    TIMEOUT = 114  # an rpc task did not finish within its timeout
    TASK_FAILED = 115  # an rpc task raised; the message is the task's, details in the server log


class ServiceError(Exception):
    """An error whose code and message are safe to return to the caller."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    http_status: ClassVar[int] = 500
    temporary: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        self.message = message or self.code.name.lower().replace("_", " ")
        super().__init__(self.message)

    def details(self) -> dict[str, Any]:
        """Fields the error body carries besides `code` and `message` (none by default)."""
        return {}

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": int(self.code), "message": self.message}
        if self.temporary:
            body["temporary"] = True
        body.update(self.details())
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


class Conflict(ServiceError):
    """A room update named a version that is no longer current: here are the current ones."""

    code = ErrorCode.CONFLICT
    http_status = 409

    def __init__(self, message: str = "", *, version: int, state: Any) -> None:
        super().__init__(message)
        self.version = version
        self.state = state

    def details(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state}


class RpcTimeout(ServiceError):
    code = ErrorCode.TIMEOUT
    http_status = 504
    temporary = True


class TaskFailed(ServiceError):
    code = ErrorCode.TASK_FAILED
    http_status = 500


_BY_CODE: dict[int, type[ServiceError]] = {
    int(cls.code): cls
    for cls in (
        InternalError,
        Unauthorized,
        UnknownChannel,
        PermissionDenied,
        MethodNotFound,
        AlreadySubscribed,
        LimitExceeded,
        BadRequest,
        NotAvailable,
        TokenExpired,
        NotSubscribed,
        TooManyRequests,
        UnrecoverablePosition,
        RpcTimeout,
        TaskFailed,
    )
}


def error_from(body: dict[str, Any]) -> ServiceError:
    """Rebuild an error another service sent as `{"code", "message", ...}`."""
    code, message = body.get("code"), str(body.get("message", ""))
    if code == ErrorCode.CONFLICT:
        return Conflict(message, version=int(body.get("version", 0)), state=body.get("state"))
    known = _BY_CODE.get(code) if isinstance(code, int) else None
    return known(message) if known is not None else InternalError(message)


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
    # Data streams (services/streams): bad input that the same request would repeat.
    UNKNOWN_STREAM = 4505  # pull of a stream that does not exist
    ID_NOT_ABOVE_TOP = 4506  # an explicit entry id not above the stream's top
    ENTRY_TOO_LARGE = 4507  # an entry over the stream's maximum entry size
    OFFSETS_OUT_OF_RANGE = 4508  # push offsets decreasing, past the data, or not ending at it

    @property
    def reconnect(self) -> bool:
        return self < 4500
