"""Each service's `/openapi.json`: valid OpenAPI 3.1, served by the real app, rendered at
`/reference`, and true to the app: the same routes, and the answers the document promises."""

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from services.common.redis import Keys
from services.common.rooms import RoomCommand
from services.gateway import openapi as gateway_openapi
from services.gateway.app import create_app as gateway_app
from services.gateway.settings import GatewaySettings
from services.handlers import openapi as handlers_openapi
from services.handlers.app import create_app as handlers_app
from services.handlers.settings import HandlersSettings
from services.rooms import openapi as rooms_openapi
from services.rooms.app import create_app as rooms_app
from services.rooms.settings import RoomsSettings
from services.streams import openapi as streams_openapi
from services.streams.app import create_app as streams_app
from services.streams.settings import StreamsSettings
from tests.conftest import gateway_env
from tests.helpers import wait_until

METHODS = ("get", "put", "post", "delete", "patch", "options")

# Routes an app serves that the document leaves out on purpose: WebSocket endpoints (OpenAPI has
# no WebSocket operations; the document's description names each one), Socket.IO's own
# transport, and the gateway's demo page (off by default, not an API).
NOT_REST: dict[str, set[tuple[str, str]]] = {
    "gateway": {("GET", "/ws"), ("GET", "/zeph"), ("*", "/socket.io/"), ("*", "/demo")},
    "rooms": set(),
    "streams": {
        ("GET", "/data/{ids}/push"),
        ("GET", "/data/{ids}/pull"),
        ("GET", "/ws/frames"),
        ("GET", "/ws/labels/{label}"),
        ("GET", "/ws/stream/{label}/{key}"),
    },
    "handlers": set(),
}
WEBSOCKETS = {
    "gateway": ["/ws", "/zeph", "/socket.io/"],
    "streams": [path for _, path in NOT_REST["streams"]],
}


@dataclass
class Service:
    name: str
    document: dict[str, Any]
    make_app: Callable[[], web.Application]


@pytest.fixture
def services(redis_server: Any, tmp_path: Path) -> dict[str, Service]:
    env = gateway_env(redis_server.url)
    handlers, tasks = tmp_path / "handlers", tmp_path / "tasks"
    handlers.mkdir()
    tasks.mkdir()
    # One handler, one task and one file that fails to load: every list of GET /handlers is
    # filled, so its schema is checked on real entries.
    (handlers / "on_task_new.py").write_text("def handle_event(data):\n    pass\n")
    (handlers / "on_broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    (tasks / "task_echo.py").write_text("def run(request):\n    return request.data\n")
    handlers_env = {**env, "EVENT_HANDLERS_FOLDER": str(handlers), "TASKS_FOLDER": str(tasks)}
    return {
        "gateway": Service(
            "gateway",
            gateway_openapi.document(),
            lambda: gateway_app(GatewaySettings.from_env(env)),
        ),
        "rooms": Service(
            "rooms", rooms_openapi.document(), lambda: rooms_app(RoomsSettings.from_env(env))
        ),
        "streams": Service(
            "streams",
            streams_openapi.document(),
            lambda: streams_app(StreamsSettings.from_env(env)),
        ),
        "handlers": Service(
            "handlers",
            handlers_openapi.document(),
            lambda: handlers_app(HandlersSettings.from_env(handlers_env)),
        ),
    }


NAMES = ["gateway", "rooms", "streams", "handlers"]


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    }


def registered(app: web.Application, skip: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The app's (method, path) pairs, without HEAD (aiohttp adds it to every GET), the
    trailing-slash twins of documented paths, and the routes in `skip`."""
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or any(
            (m in (route.method, "*")) and (path == p or path.startswith(p + "/")) for m, p in skip
        ):
            continue
        routes.add((route.method, path))
    return {(m, p) for m, p in routes if not (p.endswith("/") and (m, p[:-1]) in routes)}


@pytest.mark.parametrize("name", NAMES)
def test_document_is_valid_openapi_3_1(services: dict[str, Service], name: str) -> None:
    document = services[name].document
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    json.dumps(document)  # plain JSON data, nothing else
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                assert op.get("operationId"), f"{method} {path} has no operationId"
                # /readyz's 503 is its own body; every API error is the common one.
                errors = [s for s in op["responses"] if s[0] in "45" and path != "/readyz"]
                for status in errors:
                    schema = op["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
                if op.get("security"):
                    assert "401" in op["responses"], f"{method} {path}: no 401 documented"


@pytest.mark.parametrize("name", NAMES)
def test_every_route_is_documented_and_every_documented_route_exists(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    routes = registered(service.make_app(), NOT_REST[name])
    paths = documented(service.document)
    assert routes - paths == set(), "routes missing from the document"
    assert paths - routes == set(), "documented routes the app does not serve"
    # The WebSocket endpoints left out of the paths are named in the description.
    for path in WEBSOCKETS.get(name, []):
        assert f"`{path}`" in service.document["info"]["description"], path


def test_the_drift_check_sees_an_undocumented_route(services: dict[str, Service]) -> None:
    app = services["rooms"].make_app()

    async def extra(_: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/rooms/{room}/extra", extra)
    routes = registered(app, NOT_REST["rooms"])
    assert routes - documented(services["rooms"].document) == {("GET", "/rooms/{room}/extra")}


# -- the real apps serve it, and answer as it says -----------------------------------------------


@pytest.fixture
async def serve(services: dict[str, Service], redis: Any) -> AsyncIterator[Callable[[str], Any]]:
    started: list[TestClient] = []

    async def start(name: str) -> TestClient:
        client = TestClient(TestServer(services[name].make_app()))
        await client.start_server()
        started.append(client)

        async def ready() -> bool:
            async with client.session.get(client.make_url("/readyz")) as resp:
                return resp.status == 200

        await wait_until(ready, what=f"{name} ready", timeout_s=10)
        return client

    yield start
    for client in reversed(started):
        await client.close()


@pytest.mark.parametrize("name", NAMES)
async def test_served_at_openapi_json_and_rendered_at_reference(
    services: dict[str, Service], serve: Callable[[str], Any], name: str
) -> None:
    client = await serve(name)
    document = services[name].document
    async with client.get("/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == document
    async with client.get("/reference") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert f"<title>{document['info']['title']}</title>" in page
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                assert f"<span class='method {method}'>{method.upper()}</span>" in page
                assert f"<code>{path}</code>" in page, path
                for param in [*item.get("parameters", []), *item[method].get("parameters", [])]:
                    assert f"<code>{param['name']}</code>" in page, (path, param["name"])
    for schema in document["components"]["schemas"]:
        assert f'id="schema-{schema}"' in page
    # Self-contained: no script, nothing fetched from elsewhere.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": document["components"]})


def _fill(path: str, params: list[dict[str, Any]]) -> str:
    for param in params:
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", param["example"])
    return path


async def check(
    client: TestClient,
    document: dict[str, Any],
    method: str,
    path: str,
    token: str | None,
    *,
    url: str | None = None,
    expect: int | None = None,
    **kw: Any,
) -> Any:
    """Call a documented operation; its status and body must be among the documented ones."""
    op = document["paths"][path][method.lower()]
    params = [*document["paths"][path].get("parameters", []), *op.get("parameters", [])]
    query = {
        p["name"]: p["schema"].get("example", "news")
        for p in params
        if p["in"] == "query" and p.get("required")
    }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = url or _fill(path, params)
    async with client.request(method, target, params=query, headers=headers, **kw) as resp:
        status = str(resp.status)
        assert status in op["responses"], f"{method} {target}: undocumented {status}"
        if expect is not None:
            assert resp.status == expect, await resp.text()
        response = op["responses"][status]
        media = resp.content_type
        documented_media = list(response.get("content", {}))
        assert any(media.startswith(m.split(";")[0]) for m in documented_media), (
            f"{method} {target}: {media} not in {documented_media}"
        )
        for header in response.get("headers", {}):
            assert header in resp.headers, f"{method} {target}: no {header} header"
        if media != "application/json":
            return await resp.read()
        body = await resp.json()
    schema = response["content"]["application/json"]["schema"]
    _validator(document, schema).validate(body)
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]


@pytest.mark.parametrize("name", NAMES)
async def test_every_secured_operation_refuses_no_token_as_documented(
    services: dict[str, Service], serve: Callable[[str], Any], name: str
) -> None:
    client = await serve(name)
    document = services[name].document
    secured = [(m, p) for m, p, op in operations(document) if op.get("security")]
    assert secured
    for method, path in secured:
        body = await check(client, document, method, path, None, expect=401)
        assert body["error"]["code"] == 101


@pytest.mark.parametrize("name", NAMES)
async def test_public_operations_answer_as_documented(
    services: dict[str, Service], serve: Callable[[str], Any], name: str
) -> None:
    client = await serve(name)
    document = services[name].document
    public = [(m, p) for m, p, op in operations(document) if not op.get("security")]
    for method, path in public:
        if (method, path) == ("POST", "/token"):
            continue  # a login form: its own test below
        await check(client, document, method, path, None, expect=200)


async def test_gateway_answers_as_documented(
    services: dict[str, Service], serve: Callable[[str], Any], make_token: Callable[..., str]
) -> None:
    client, doc = await serve("gateway"), services["gateway"].document
    admin, user = make_token("ops", scope="admin"), make_token("alice")
    body = {"channel": "news", "data": {"text": "hi"}, "event": "news:new"}
    published = await check(client, doc, "POST", "/api/publish", admin, json=body, expect=200)
    history = await check(client, doc, "GET", "/api/history", admin, expect=200)
    assert history["epoch"] == published["epoch"]
    offset = published["offset"]
    assert history["publications"] == [
        {"offset": offset, "data": {"text": "hi"}, "event": "news:new"}
    ]
    broadcast = {"channels": ["news", "nope:x"], "data": 1}
    result = await check(client, doc, "POST", "/api/broadcast", admin, json=broadcast)
    assert result["results"][1]["error"]["code"] == 102
    async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {user}"}) as ws:
        await ws.send_json({"id": 1, "op": "subscribe", "channel": "news"})
        assert "result" in await ws.receive_json()
        presence = await check(client, doc, "GET", "/api/presence", admin, expect=200)
        assert [c["user"] for c in presence["clients"].values()] == ["alice"]
    await check(client, doc, "POST", "/api/publish", user, json=body, expect=403)
    await check(client, doc, "POST", "/api/publish", admin, json={"channel": "news"}, expect=400)
    await check(
        client, doc, "POST", "/api/publish", admin, json={**body, "channel": "a:"}, expect=404
    )
    await check(
        client,
        doc,
        "GET",
        "/api/history",
        admin,
        url="/api/history?channel=news&since=1-0&epoch=old",
        expect=410,
    )
    await check(client, doc, "POST", "/api/disconnect", admin, json={"user": "bob"}, expect=200)
    await check(client, doc, "POST", "/api/disconnect", user, json={"user": "bob"}, expect=403)
    await check(client, doc, "POST", "/api/revoke", admin, json={"jti": "j1"}, expect=200)
    await check(client, doc, "POST", "/api/revoke", admin, json={"jti": ""}, expect=400)


async def test_rooms_answer_as_documented(
    services: dict[str, Service],
    serve: Callable[[str], Any],
    make_token: Callable[..., str],
    redis: Any,
) -> None:
    client, doc = await serve("rooms"), services["rooms"].document
    admin, user = make_token("ops", scope="admin"), make_token("alice")
    listed = await check(client, doc, "GET", "/rooms", admin, expect=200)
    assert listed == {"rooms": [], "total": 0}
    # A join as a gateway sends it (services/common/rooms.py), so the room schemas see a room.
    join = RoomCommand(
        op="join", room="review-42", conn="c1", user="alice", gw="g1", state={"frame": 0}
    )
    await redis.xadd(Keys().rooms_cmd, {"c": join.encode()})

    async def joined() -> bool:
        return (await check(client, doc, "GET", "/rooms", admin))["total"] == 1

    await wait_until(joined, what="the join applied")
    room = await check(client, doc, "GET", "/rooms/{room}", admin, expect=200)
    assert room["state"] == {"frame": 0} and room["people"] == ["alice"]
    await check(client, doc, "DELETE", "/rooms/{room}", admin, expect=200)
    await check(client, doc, "GET", "/rooms", admin, url="/rooms?limit=0", expect=400)
    await check(client, doc, "GET", "/rooms", user, expect=403)
    await check(client, doc, "GET", "/rooms/{room}", admin, expect=404)
    await check(client, doc, "DELETE", "/rooms/{room}", admin, expect=404)
    await check(client, doc, "GET", "/rooms/{room}", admin, url="/rooms/a%20b", expect=400)


async def test_handlers_answer_as_documented(
    services: dict[str, Service],
    serve: Callable[[str], Any],
    make_token: Callable[..., str],
    redis: Any,
) -> None:
    client, doc = await serve("handlers"), services["handlers"].document
    admin, user = make_token("ops", scope="admin"), make_token("alice")
    loaded = await check(client, doc, "GET", "/handlers", admin, expect=200)
    assert [h["id"] for h in loaded["handlers"]] == ["on_task_new"]
    assert [t["name"] for t in loaded["tasks"]] == ["echo"]
    assert len(loaded["errors"]) == 1
    await check(client, doc, "GET", "/handlers", user, expect=403)
    # A dead letter as the dispatcher writes it (docs/handlers.md), for the handler above.
    fields = {
        "event": "task:new",
        "data": '{"task_id": "t1"}',
        "source": "api",
        "channel": "",
        "ts": "1732222000000",
        "kind": "event",
        "entry": "1732222000000-0",
        "handler": "on_task_new",
        "error": "TimeoutError: timed out after 30 s",
        "traceback": "",
        "attempts": "3",
        "failed_at": "1732222000500",
    }
    dead = (await redis.xadd(Keys().dlq, fields)).decode()
    letters = await check(client, doc, "GET", "/dlq", admin, expect=200)
    assert [e["id"] for e in letters["entries"]] == [dead] and letters["total"] == 1
    retried = await check(client, doc, "POST", "/dlq/{id}/retry", admin, url=f"/dlq/{dead}/retry")
    assert retried == {"id": dead, "ok": True}
    await check(client, doc, "GET", "/dlq", admin, url="/dlq?after=nope", expect=400)
    await check(client, doc, "POST", "/dlq/{id}/retry", admin, expect=404)
    await check(client, doc, "DELETE", "/dlq/{id}", admin, expect=404)
    await check(client, doc, "DELETE", "/dlq/{id}", admin, url="/dlq/x", expect=400)


async def test_streams_answer_as_documented(
    services: dict[str, Service],
    serve: Callable[[str], Any],
    make_token: Callable[..., str],
    tmp_path: Path,
) -> None:
    client, doc = await serve("streams"), services["streams"].document
    token = make_token("cam", streams={"read": ["*"], "write": ["main"]})
    meta = {"maxlen": 10, "fps": 30}
    await check(client, doc, "PUT", "/streams/{id}", token, json=meta, expect=200)
    await check(client, doc, "PUT", "/streams/{id}", token, url="/streams/other", expect=403)
    form = aiohttp.FormData()
    form.add_field("entries", b"\xff\xd8jpeg", filename="main")
    ids = await check(client, doc, "POST", "/data/{ids}", token, url="/data/main", data=form)
    assert len(ids) == 1
    await check(client, doc, "GET", "/ping", token, expect=200)
    assert await check(client, doc, "GET", "/streams", token, expect=200) == ["main"]
    infos = await check(client, doc, "GET", "/streams", token, url="/streams?info=true")
    assert infos[0]["sid"] == "main"
    info = await check(client, doc, "GET", "/streams/{id}", token, expect=200)
    assert info["meta"] == meta and info["last-entry"] == ids[0]
    await check(client, doc, "GET", "/streams/{id}", token, url="/streams/nope", expect=404)
    data = await check(client, doc, "GET", "/data/{ids}", token, url="/data/main", expect=200)
    assert data == b"\xff\xd8jpeg"
    await check(client, doc, "GET", "/data/{ids}", token, url="/data/main?count=0", expect=400)
    await check(client, doc, "GET", "/mjpeg/{id}", token, url="/mjpeg/nope", expect=404)
    frame = aiohttp.FormData()
    frame.add_field("label", "site-a")
    frame.add_field("key", "cam1")
    frame.add_field("file", b"frame", filename="f.jpg")
    await check(client, doc, "POST", "/frames", token, data=frame, expect=200)
    labels = await check(client, doc, "GET", "/labels", token, expect=200)
    assert labels == {"labels": ["site-a"]}
    await check(client, doc, "DELETE", "/streams/{id}", token, url="/streams/main", expect=200)
    # No users file: every login is refused as documented.
    login = {"username": "ptg", "password": "secret"}
    await check(client, doc, "POST", "/token", None, data=login, expect=401)
    await check(client, doc, "POST", "/token", None, data={"username": "ptg"}, expect=400)
