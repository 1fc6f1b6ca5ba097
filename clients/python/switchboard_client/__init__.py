"""Switchboard's Python client: asyncio and aiohttp, the native WebSocket protocol.

async with Switchboard("ws://localhost:5001/ws", token=jwt) as sb:
    sub = await sb.subscribe("chat:lobby")
    async for pub in sub:
        print(pub.offset, pub.data)
"""

from .client import Switchboard
from .errors import CloseCode, ErrorCode, SwitchboardError, is_terminal_close
from .room import Room, RoomChange, merge_patch
from .subscription import Publication, Subscribed, Subscription, compare_offsets

__all__ = [
    "CloseCode",
    "ErrorCode",
    "Publication",
    "Room",
    "RoomChange",
    "Subscribed",
    "Subscription",
    "Switchboard",
    "SwitchboardError",
    "compare_offsets",
    "is_terminal_close",
    "merge_patch",
]
