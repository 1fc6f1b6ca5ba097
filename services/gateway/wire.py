"""Server-to-client WebSocket frames, encoded once and written as they are to every socket.

Frames from a server are not masked (RFC 6455 section 5.1), so one encoded frame is valid on
every connection: the hub encodes each publication once and queues the same bytes everywhere.
"""

import struct

_FIN_TEXT = 0x81
_FIN_CLOSE = 0x88
_FIN_PONG = 0x8A

PING_FRAME = b"\x89\x00"  # unmasked ping, no payload: the same bytes for every socket


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((opcode, length))
    if length < 65536:
        return struct.pack("!BBH", opcode, 126, length)
    return struct.pack("!BBQ", opcode, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame holding `payload` (UTF-8 JSON)."""
    return _header(_FIN_TEXT, len(payload)) + payload


def pong_frame(payload: bytes) -> bytes:
    """The answer to a client's ping, with its payload (at most 125 bytes, as the ping's)."""
    return _header(_FIN_PONG, len(payload)) + payload


def close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return _header(_FIN_CLOSE, len(payload)) + payload
