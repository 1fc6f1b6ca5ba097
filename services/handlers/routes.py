"""Operator REST views (admin scope): what is loaded, and the dead-letter stream."""

from typing import Any

from aiohttp import web

from services.common.auth import require_scope
from services.common.errors import (
    BadRequest,
    ErrorCode,
    ServiceError,
)
from services.common.web import json_errors

from .dlq import check_id
from .keys import (
    cluster_key,
    dispatcher_key,
    dlq_key,
    events_key,
    ledger_key,
    reloader_key,
    revocations_key,
    rpc_key,
    settings_key,
    task_ledger_key,
    verifier_key,
)

routes = web.RouteTableDef()
MAX_LIST = 1000


class DeadLetterNotFound(ServiceError):
    code = ErrorCode.METHOD_NOT_FOUND
    http_status = 404


async def _require_admin(request: web.Request) -> None:
    app = request.app
    await require_scope(request, app[verifier_key], app[revocations_key], "admin")


@routes.get("/handlers")
@json_errors
async def list_handlers(request: web.Request) -> web.Response:
    await _require_admin(request)
    app = request.app
    settings, registry, ledger = app[settings_key], app[reloader_key].registry, app[ledger_key]
    handlers = [{**h.describe(), **ledger.get(h.id).describe()} for h in registry.handlers]
    task_ledger = app[task_ledger_key]
    tasks = [
        {**t.describe(), **task_ledger.get(t.name).describe()} for t in registry.tasks.values()
    ]
    ran = handlers + tasks
    failed = [r for r in ran if r["last_error_at"] is not None]
    last = max(failed, key=lambda r: r["last_error_at"]) if failed else None
    body: dict[str, Any] = {
        "generation": registry.generation,
        "loaded_at": registry.loaded_at,
        "isolation": settings.isolation.value,
        "folders": {"handlers": str(settings.handlers_folder), "tasks": str(settings.tasks_folder)},
        "handlers": handlers,
        "tasks": tasks,
        "errors": [e.describe() for e in registry.errors],
        "subscriptions": app[cluster_key].subscriptions(),
        "counts": {
            "handlers": len(handlers),
            "tasks": len(tasks),
            "errors": len(registry.errors),
            "runs": sum(r["runs"] for r in ran),
            "failures": sum(r["failures"] for r in ran),
            "dead_lettered": sum(r["dead_lettered"] for r in handlers),
            "events_in_flight": app[events_key].in_flight,
            "rpc_in_flight": app[rpc_key].in_flight,
        },
        "last_error": None
        if last is None
        else {
            "name": last.get("id", last.get("name")),
            "error": last["last_error"],
            "at": last["last_error_at"],
        },
    }
    return web.json_response(body)


@routes.get("/dlq")
@json_errors
async def list_dead_letters(request: web.Request) -> web.Response:
    await _require_admin(request)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 0 < limit <= MAX_LIST:
        raise BadRequest(f"limit must be 1-{MAX_LIST}")
    after = request.query.get("after")
    if after is not None:
        check_id(after)
    dlq = request.app[dlq_key]
    entries = await dlq.list(limit, after)
    return web.json_response({"entries": entries, "total": await dlq.size()})


@routes.post("/dlq/{id}/retry")
@json_errors
async def retry_dead_letter(request: web.Request) -> web.Response:
    await _require_admin(request)
    entry_id = check_id(request.match_info["id"])
    entry = await request.app[dlq_key].get(entry_id)
    if entry is None:
        raise DeadLetterNotFound(f"no dead letter {entry_id}")
    return web.json_response(await request.app[dispatcher_key].retry_dead(entry))


@routes.delete("/dlq/{id}")
@json_errors
async def delete_dead_letter(request: web.Request) -> web.Response:
    await _require_admin(request)
    entry_id = check_id(request.match_info["id"])
    if not await request.app[dlq_key].delete(entry_id):
        raise DeadLetterNotFound(f"no dead letter {entry_id}")
    return web.json_response({"id": entry_id, "deleted": True})
