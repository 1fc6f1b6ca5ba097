"""What a push or pull socket is told before it is closed for bad input.

The codes are the common ones (services/common/errors.py `CloseCode`): 45xx means "do not
reconnect with the same request", as everywhere in Switchboard.

Every refusal is one text frame `{"error": {"code": <ErrorCode>, "message": "...", "close":
<close code>}}` and then the close frame; PTG closed such sockets without a word (or silently
dropped the last entry). Entries acknowledged before the bad message stay stored.

| close | ErrorCode | when                                                                  |
|-------|-----------|-----------------------------------------------------------------------|
| 1000  | -         | pull `timeout` elapsed without data (PTG's end of stream)             |
| 1009  | -         | a message over `STREAMS_MAX_MESSAGE_BYTES` (aiohttp's reader)          |
| 1011  | 100 / 108 | server error / Redis unavailable: reconnect and resume                |
| 1012  | -         | the service is shutting down: reconnect and resume                    |
| 4501  | 107       | malformed header: not JSON, wrong shape, text where binary is due     |
| 4503  | 103       | the token may not write (push) or read (pull) a stream named in a header |
| 4505  | 102       | pull of a stream that does not exist                                  |
| 4506  | 107       | an explicit entry id not above the stream's top (or not increasing)   |
| 4507  | 106       | an entry over the stream's maximum entry size                         |
| 4508  | 107       | offsets out of range: decreasing, past the data, or not ending at it  |
"""

from enum import IntEnum
from typing import ClassVar

from services.common.errors import CloseCode, ErrorCode, ServiceError


class StreamClose(IntEnum):
    NORMAL = CloseCode.NORMAL
    INTERNAL_ERROR = CloseCode.INTERNAL_ERROR
    SERVICE_RESTART = CloseCode.SERVICE_RESTART
    BAD_HEADER = CloseCode.BAD_FRAME
    FORBIDDEN = CloseCode.FORBIDDEN
    UNKNOWN_STREAM = CloseCode.UNKNOWN_STREAM
    ID_NOT_ABOVE_TOP = CloseCode.ID_NOT_ABOVE_TOP
    ENTRY_TOO_LARGE = CloseCode.ENTRY_TOO_LARGE
    OFFSETS_OUT_OF_RANGE = CloseCode.OFFSETS_OUT_OF_RANGE


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
