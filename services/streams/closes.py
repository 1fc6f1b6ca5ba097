"""What a push or pull socket is told before it is closed for bad input.

Every refusal is one text frame `{"error": {"code": <ErrorCode>, "message": "...", "close":
<close code>}}` and then the close frame; PTG closed such sockets without a word (or silently
dropped the last entry). Entries acknowledged before the bad message stay stored.

| close | ErrorCode | when                                                                  |
|-------|-----------|-----------------------------------------------------------------------|
| 1000  | -         | pull `timeout` elapsed without data (PTG's end of stream)             |
| 1009  | -         | a message over `STREAMS_MAX_MESSAGE_BYTES` (aiohttp's reader)          |
| 1011  | 100 / 108 | server error / Redis unavailable: reconnect and resume                |
| 1012  | -         | the service is shutting down: reconnect and resume                    |
| 4400  | 107       | malformed header: not JSON, wrong shape, text where binary is due     |
| 4403  | 103       | the token may not write (push) or read (pull) a stream named in a header |
| 4404  | 102       | pull of a stream that does not exist                                  |
| 4409  | 107       | an explicit entry id not above the stream's top (or not increasing)   |
| 4413  | 106       | an entry over the stream's maximum entry size                         |
| 4416  | 107       | offsets out of range: decreasing, past the data, or not ending at it  |
"""

from enum import IntEnum
from typing import ClassVar

from services.common.errors import ErrorCode, ServiceError


class StreamClose(IntEnum):
    NORMAL = 1000
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    BAD_HEADER = 4400
    FORBIDDEN = 4403
    UNKNOWN_STREAM = 4404
    ID_NOT_ABOVE_TOP = 4409
    ENTRY_TOO_LARGE = 4413
    OFFSETS_OUT_OF_RANGE = 4416


class StreamError(ServiceError):
    """Bad input on a push or pull socket (or a REST call): refused with a code and close code."""

    close: ClassVar[StreamClose] = StreamClose.BAD_HEADER
    code = ErrorCode.BAD_REQUEST
    http_status = 400

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "close": int(self.close)}


class BadHeader(StreamError):
    pass


class OffsetsOutOfRange(StreamError):
    close = StreamClose.OFFSETS_OUT_OF_RANGE


class IdNotAboveTop(StreamError):
    close = StreamClose.ID_NOT_ABOVE_TOP
    http_status = 409


class EntryTooLarge(StreamError):
    close = StreamClose.ENTRY_TOO_LARGE
    code = ErrorCode.LIMIT_EXCEEDED
    http_status = 413


class UnknownStream(StreamError):
    close = StreamClose.UNKNOWN_STREAM
    code = ErrorCode.UNKNOWN_CHANNEL
    http_status = 404


class StreamForbidden(StreamError):
    close = StreamClose.FORBIDDEN
    code = ErrorCode.PERMISSION_DENIED
    http_status = 403
