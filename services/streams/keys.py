"""Typed application-state keys for the streams service."""

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.common.auth import RevocationList, TokenVerifier

from .settings import StreamsSettings

settings_key = web.AppKey("settings", StreamsSettings)
redis_key = web.AppKey("redis", Redis)
registry_key = web.AppKey("registry", CollectorRegistry)
verifier_key = web.AppKey("verifier", TokenVerifier)
revocations_key = web.AppKey("revocations", RevocationList)
