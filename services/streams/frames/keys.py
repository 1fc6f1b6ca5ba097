"""Typed application-state keys of the frames API."""

from aiohttp import web

from .hub import FrameHub
from .metrics import FramesMetrics
from .ratelimit import RateLimiter
from .store import FrameStore

store_key = web.AppKey("frames_store", FrameStore)
hub_key = web.AppKey("frames_hub", FrameHub)
limiter_key = web.AppKey("frames_limiter", RateLimiter)
metrics_key = web.AppKey("frames_metrics", FramesMetrics)
# Open frames sockets, closed with 1012 on shutdown.
sockets_key: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("frames_sockets")
