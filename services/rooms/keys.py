"""Typed application-state keys for the rooms service."""

from aiohttp import web
from redis.asyncio import Redis

from services.common.auth import RevocationList, TokenVerifier

from .metrics import RoomsMetrics
from .settings import RoomsSettings
from .store import RoomStore
from .worker import CommandConsumer

settings_key = web.AppKey("settings", RoomsSettings)
redis_key = web.AppKey("redis", Redis)
store_key = web.AppKey("store", RoomStore)
consumer_key = web.AppKey("consumer", CommandConsumer)
metrics_key = web.AppKey("metrics", RoomsMetrics)
verifier_key = web.AppKey("verifier", TokenVerifier)
revocations_key = web.AppKey("revocations", RevocationList)
