"""HTTP plumbing every service shares: JSON errors, health and readiness routes, the runner."""

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from .errors import BadRequest, InternalError, NotAvailable, ServiceError
from .logging import configure_logging
from .settings import load
from .tasks import cancel_until_done

log = logging.getLogger(__name__)

BACKLOG = 1024  # pending connections the kernel holds while a burst of clients reconnects

ReadyCheck = Callable[[web.Application], Awaitable[dict[str, bool]]]


View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_errors(view: View) -> View:
    """Render what a view raises: ServiceError -> `{"error": {"code", "message"}}` with its
    status, Redis down -> 503 (code 108), a bug -> 500 with the traceback in the log.

    A decorator rather than a middleware where an app must stay middleware-free: aiohttp keeps
    a middleware's frame suspended for as long as a WebSocket view runs, on every socket.
    """

    @functools.wraps(view)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await view(request)
        except ServiceError as exc:
            if exc.http_status >= 500:
                log.warning("request failed", extra={"path": request.path, "code": int(exc.code)})
            return web.json_response({"error": exc.to_dict()}, status=exc.http_status)
        except web.HTTPException:
            raise
        except RedisError as exc:
            log.warning("redis unavailable", extra={"path": request.path, "error": repr(exc)})
            body = NotAvailable("temporarily unavailable").to_dict()
            return web.json_response({"error": body}, status=NotAvailable.http_status)
        except Exception:
            log.exception("unhandled error", extra={"method": request.method, "path": request.path})
            return web.json_response({"error": InternalError().to_dict()}, status=500)

    return wrapped


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`json_errors` for every view of an app."""
    return await json_errors(handler)(request)


async def json_body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, or a BadRequest that says what is wrong with it."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadRequest(f"body larger than {max_bytes} bytes")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise BadRequest(f"body larger than {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def add_health_routes(app: web.Application, ready: ReadyCheck) -> None:
    """`/healthz`: the loop answers. `/readyz`: every check passes (503 with the failing ones)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        checks = await ready(request.app)
        ok = all(checks.values())
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


class ServiceSettings(Protocol):
    """What every service's settings carry for its entry point."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def shutdown_timeout_s(self) -> float: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_json(self) -> bool: ...


S = TypeVar("S", bound=ServiceSettings)


def serve(
    from_env: Callable[[Mapping[str, str]], S],
    create_app: Callable[[S], web.Application],
    runner: type[web.AppRunner] = web.AppRunner,
) -> None:
    """A service's `__main__`: settings (one line and exit on a bad one) -> logging -> serve."""
    settings = load(from_env)
    configure_logging(settings.log_level, json_output=settings.log_json)
    run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout_s=settings.shutdown_timeout_s,
        runner=runner,
    )


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout_s: float,
    runner: type[web.AppRunner] = web.AppRunner,
) -> None:
    """Serve `app` on uvloop until SIGTERM/SIGINT; aiohttp then runs on_shutdown and cleanup.

    `web.run_app` without its fixed runner class (the gateway brings its own)."""
    log.info("listening", extra={"host": host, "port": port})
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, runner, host, port, shutdown_timeout_s))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        loop.run_until_complete(cancel_until_done(asyncio.all_tasks(loop)))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


async def _serve(
    app: web.Application,
    runner_class: type[web.AppRunner],
    host: str,
    port: int,
    shutdown_timeout_s: float,
) -> None:
    runner = runner_class(
        app, handle_signals=True, shutdown_timeout=shutdown_timeout_s, access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()
