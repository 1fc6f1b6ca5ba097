"""Typed application-state keys for the gateway."""

from aiohttp import web
from redis.asyncio import Redis

from .commands import Commands
from .metrics import GatewayMetrics
from .node import GatewayNode
from .settings import GatewaySettings

settings_key = web.AppKey("settings", GatewaySettings)
redis_key = web.AppKey("redis", Redis)
node_key = web.AppKey("node", GatewayNode)
commands_key = web.AppKey("commands", Commands)
metrics_key = web.AppKey("metrics", GatewayMetrics)
