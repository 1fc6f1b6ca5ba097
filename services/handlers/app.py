"""Application factory for the handlers service."""

import asyncio
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from redis.asyncio import Redis

from services.common import events, rpc
from services.common.auth import RevocationList, TokenVerifier
from services.common.metrics import install_metrics
from services.common.openapi import add_openapi_routes
from services.common.redis import Keys, make_client, redis_ctx
from services.common.tasks import supervised
from services.common.web import add_health_routes

from . import api
from .cluster import Cluster
from .consumer import ConsumerSettings, StreamConsumer
from .dispatch import EventDispatcher, RetryPolicy
from .dlq import DeadLetters
from .keys import (
    cluster_key,
    dispatcher_key,
    dlq_key,
    events_key,
    ledger_key,
    metrics_key,
    redis_key,
    reloader_key,
    revocations_key,
    rpc_key,
    rpc_server_key,
    runner_key,
    settings_key,
    task_ledger_key,
    verifier_key,
)
from .ledger import Ledger
from .metrics import HandlersMetrics
from .openapi import document
from .procpool import ProcessPool
from .procworker import ROOM_MARK, WorkerInit
from .registry import Registry
from .reload import Reloader
from .routes import routes
from .rpc import RpcServer
from .runner import Runner
from .settings import HandlersSettings, Isolation


def create_app(
    settings: HandlersSettings, *, redis: Redis | None = None, reload_on_sighup: bool = False
) -> web.Application:
    """Build the handlers app; `redis` lets tests inject a client they own."""
    app = web.Application()
    app[settings_key] = settings
    app[metrics_key] = HandlersMetrics(install_metrics(app))
    app[verifier_key] = TokenVerifier(settings.jwt)
    app[ledger_key] = Ledger()
    app[task_ledger_key] = Ledger()

    # Order matters: each context uses what the previous ones stored; teardown is reversed.
    app.cleanup_ctx.append(redis_ctx(redis_key, settings.redis, client=redis))
    app.cleanup_ctx.append(_core_ctx)
    app.cleanup_ctx.append(supervised("say-subscriber", lambda a: a[cluster_key].subscriber.run()))
    app.cleanup_ctx.append(supervised("say-pump", lambda a: a[cluster_key].pump()))
    app.cleanup_ctx.append(supervised("event-consumer", lambda a: a[events_key].run()))
    app.cleanup_ctx.append(supervised("rpc-consumer", lambda a: a[rpc_key].run()))
    app.cleanup_ctx.append(supervised("handlers-watch", _watch))
    app.cleanup_ctx.append(supervised("handlers-stats", _stats))
    if reload_on_sighup:
        app.cleanup_ctx.append(_sighup_ctx)
    app.on_shutdown.append(_stop_consuming)

    app.add_routes(routes)
    add_health_routes(app, _ready)
    add_openapi_routes(app, document())
    return app


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, metrics, redis = app[settings_key], app[metrics_key], app[redis_key]
    keys = Keys(settings.redis.key_prefix)
    threads = ThreadPoolExecutor(settings.threads, thread_name_prefix="handler")
    cluster = Cluster(redis, settings.redis.url, keys, settings.consumer, threads)
    cluster.bind(asyncio.get_running_loop())
    app[cluster_key] = cluster
    api.install(cluster)

    def loaded(registry: Registry) -> None:
        metrics.reloads.inc()
        metrics.load_errors.set(len(registry.errors))

    reloader = Reloader(
        settings.handlers_folder,
        settings.tasks_folder,
        before_load=cluster.clear,
        after_load=loaded,
    )
    app[reloader_key] = reloader
    pool = None
    if settings.isolation is Isolation.PROCESS:
        pool = ProcessPool(
            settings.processes,
            WorkerInit(settings.redis.url, keys.say, keys.zeph_room(ROOM_MARK), settings.consumer),
            on_replace=lambda reason: metrics.workers_replaced.inc(),
        )
        pool.start()
    runner = Runner(threads, pool, settings.handlers_folder)
    app[runner_key] = runner
    dlq = DeadLetters(redis, keys.dlq, settings.dlq_maxlen)
    app[dlq_key] = dlq
    ledger = app[ledger_key]
    policy = RetryPolicy(
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        backoff_max_s=settings.backoff_max_s,
        timeout_s=settings.handler_timeout_s,
    )
    dispatcher = EventDispatcher(reloader.current, runner, dlq, policy, metrics, ledger)
    app[dispatcher_key] = dispatcher
    server = RpcServer(
        redis,
        keys.rpc,
        rpc.CONSUMER_GROUP,
        reloader.current,
        runner,
        dlq,
        settings.task_timeout_s,
        metrics,
        app[task_ledger_key],
    )

    def consumer(stream: str, group: str) -> ConsumerSettings:
        return ConsumerSettings(
            stream=stream,
            group=group,
            consumer=settings.consumer,
            batch=settings.batch,
            block_ms=settings.block_ms,
            claim_idle_ms=settings.claim_idle_ms,
            concurrency=settings.concurrency,
        )

    app[rpc_server_key] = server
    app[events_key] = StreamConsumer(
        redis, consumer(keys.events, events.CONSUMER_GROUP), dispatcher.process
    )
    app[rpc_key] = StreamConsumer(redis, consumer(keys.rpc, rpc.CONSUMER_GROUP), server.process)
    zou_redis = None
    if settings.jwt.revocation_db is not None:
        zou_redis = make_client(settings.redis, db=settings.jwt.revocation_db)
    app[revocations_key] = RevocationList(redis, keys, zou_redis=zou_redis)
    await reloader.reload("start")
    try:
        yield
    finally:
        api.install(None)
        if pool is not None:
            await pool.close()
        # A hung sync handler cannot be interrupted: do not wait for it.
        threads.shutdown(wait=False, cancel_futures=True)
        if zou_redis is not None:
            await zou_redis.aclose()


async def _watch(app: web.Application) -> None:
    await app[reloader_key].watch(app[settings_key].watch_interval_s)


async def _stats(app: web.Application) -> None:
    metrics = app[metrics_key]
    while True:
        metrics.dlq_size.set(await app[dlq_key].size())
        for name, key in (("events", events_key), ("rpc", rpc_key)):
            consumer = app[key]
            if consumer.ready:
                lag, pending = await consumer.lag()
                if lag is not None:
                    metrics.lag.labels(name).set(lag)
                if pending is not None:
                    metrics.pending.labels(name).set(pending)
        await asyncio.sleep(app[settings_key].stats_interval_s)


async def _sighup_ctx(app: web.Application) -> AsyncIterator[None]:
    """`switchboard ctl reload-handlers` sends SIGHUP: reload the folders now."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[Registry]] = set()

    def reload() -> None:
        task = loop.create_task(app[reloader_key].reload("SIGHUP"), name="reload-handlers")
        running.add(task)
        task.add_done_callback(running.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def _stop_consuming(app: web.Application) -> None:
    # Before cleanup cancels the tasks: the entries in hand finish and are acked, or are
    # released for another replica.
    timeout = app[settings_key].shutdown_timeout_s / 2
    await asyncio.gather(app[events_key].stop(timeout), app[rpc_key].stop(timeout))
    await app[rpc_server_key].drain()


async def _ready(app: web.Application) -> dict[str, bool]:
    try:
        redis_ok = bool(await app[redis_key].ping())
    except Exception:  # readiness reports any failure as "not ready"
        redis_ok = False
    return {
        "redis": redis_ok,
        "events": app[events_key].ready,
        "rpc": app[rpc_key].ready,
        "say": app[cluster_key].subscriber.connected,
    }
