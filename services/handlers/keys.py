"""Typed application-state keys for the handlers service."""

from aiohttp import web
from redis.asyncio import Redis

from services.common.auth import RevocationList, TokenVerifier

from .cluster import Cluster
from .consumer import StreamConsumer
from .dispatch import EventDispatcher
from .dlq import DeadLetters
from .ledger import Ledger
from .metrics import HandlersMetrics
from .reload import Reloader
from .rpc import RpcServer
from .runner import Runner
from .settings import HandlersSettings

settings_key = web.AppKey("settings", HandlersSettings)
redis_key = web.AppKey("redis", Redis)
metrics_key = web.AppKey("metrics", HandlersMetrics)
verifier_key = web.AppKey("verifier", TokenVerifier)
revocations_key = web.AppKey("revocations", RevocationList)
ledger_key = web.AppKey("ledger", Ledger)  # handlers, by id
task_ledger_key = web.AppKey("task_ledger", Ledger)  # tasks, by name
reloader_key = web.AppKey("reloader", Reloader)
runner_key = web.AppKey("runner", Runner)
dlq_key = web.AppKey("dlq", DeadLetters)
dispatcher_key = web.AppKey("dispatcher", EventDispatcher)
cluster_key = web.AppKey("cluster", Cluster)
events_key = web.AppKey("events", StreamConsumer)
rpc_key = web.AppKey("rpc", StreamConsumer)
rpc_server_key = web.AppKey("rpc_server", RpcServer)
