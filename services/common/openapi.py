"""OpenAPI 3.1 documents of the services' REST surfaces, served with a readable reference page.

Each service keeps its document as data (`services/<name>/openapi.py`); this module builds the
parts they share (info, servers, the bearer scheme, the `{"error": {"code", "message"}}` body,
health routes) and serves `GET /openapi.json` and `GET /reference`. The page is rendered on the
server from the document, with no script and no CDN: deployments are often offline.

The routes are plain views, no middleware: the gateway's app must stay middleware-free.
"""

import html
import json
import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from aiohttp import web

from .errors import ErrorCode

OPENAPI_VERSION = "3.1.0"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ERROR_REF = "#/components/schemas/Error"
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

Schema = dict[str, Any]


def _version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0"


def info(title: str, description: str) -> dict[str, Any]:
    return {
        "title": title,
        "version": _version(),
        "description": description,
        "license": {"name": "MIT", "identifier": "MIT"},
    }


def servers(port: int) -> list[dict[str, str]]:
    return [
        {"url": "/", "description": "the server that served this document"},
        {"url": f"http://localhost:{port}", "description": "local (`switchboard run`)"},
    ]


def security_schemes() -> dict[str, Any]:
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "A JWT signed with `SECRET_KEY` (HS256) or the configured public key; `sub` is "
                "the user, `exp` is enforced, a revoked `jti` is refused. The `scope` claim "
                "(space-separated) grants `publish` or `admin` where a route needs them."
            ),
        }
    }


def cookie_scheme(name: str, description: str) -> dict[str, Any]:
    return {"type": "apiKey", "in": "cookie", "name": name, "description": description}


def error_schema() -> Schema:
    codes = "; ".join(f"{int(c)} {c.name.lower().replace('_', ' ')}" for c in ErrorCode)
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "integer",
                        "enum": [int(c) for c in ErrorCode],
                        "description": f"The protocol's error code: {codes}.",
                    },
                    "message": {"type": "string"},
                    "temporary": {
                        "type": "boolean",
                        "description": "Present and true when retrying later may succeed.",
                    },
                    "close": {
                        "type": "integer",
                        "description": "Streams service: the close code a WebSocket sending "
                        "the same input gets.",
                    },
                    "version": {"type": "integer", "description": "Conflict (113): current."},
                    "state": {"description": "Conflict (113): the current room state."},
                },
            }
        },
        "example": {"error": {"code": 101, "message": "Authorization: Bearer <token> required"}},
    }


def json_content(schema: Schema, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def ok(description: str, schema: Schema, example: Any = None) -> dict[str, Any]:
    """A JSON success response."""
    return {"description": description, "content": json_content(schema, example)}


def errors(**by_status: str) -> dict[str, Any]:
    """Error responses: `errors(s400="107: bad limit", s401="101 / 109")`."""
    return {
        status.removeprefix("s"): {
            "description": text,
            "content": json_content({"$ref": ERROR_REF}),
        }
        for status, text in sorted(by_status.items())
    }


AUTH_ERRORS = {
    "s401": "101: no token, forged, malformed or revoked; 109: token expired",
    "s503": "108: Redis (or the revocation list) unreachable; retry",
}
ADMIN_ERRORS = {**AUTH_ERRORS, "s403": "103: the token's `scope` does not include `admin`"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def path_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
        "example": example,
    }


def query_param(
    name: str, description: str, schema: Schema, *, required: bool = False
) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "description": description}
    param["schema"] = schema
    if required:
        param["required"] = True
    return param


def common_paths() -> dict[str, Any]:
    """The routes every service serves: health, readiness, metrics, this document, its page."""
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    ready = {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    }
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {
                "tags": ["health"],
                "summary": "Liveness: the event loop answers",
                "operationId": "healthz",
                "responses": {"200": ok("alive", status, {"status": "ok"})},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["health"],
                "summary": "Readiness: every check passes (Redis reachable, consumers running)",
                "operationId": "readyz",
                "responses": {
                    "200": ok("ready", ready, {"status": "ok", "checks": {"redis": True}}),
                    "503": ok(
                        "not ready: the failing checks are false",
                        ready,
                        {"status": "unavailable", "checks": {"redis": False}},
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["health"],
                "summary": "Prometheus metrics (text exposition format)",
                "operationId": "metrics",
                "responses": {"200": {"description": "the metrics", "content": text}},
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["reference"],
                "summary": "This OpenAPI 3.1 document",
                "operationId": "openapi",
                "responses": {
                    "200": ok("the document", {"type": "object", "required": ["openapi"]})
                },
            }
        },
        "/reference": {
            "get": {
                "tags": ["reference"],
                "summary": "This document as a readable HTML page",
                "operationId": "reference",
                "responses": {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def build(
    *,
    title: str,
    description: str,
    port: int,
    tags: Iterable[tuple[str, str]],
    paths: Mapping[str, Any],
    schemas: Mapping[str, Schema],
    schemes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole document: the service's paths and schemas plus the shared parts."""
    tag_list = [{"name": name, "description": text} for name, text in tags]
    tag_list += [
        {"name": "health", "description": "Probes and metrics; no token."},
        {"name": "reference", "description": "This reference; no token."},
    ]
    return {
        "openapi": OPENAPI_VERSION,
        "info": info(title, description),
        "servers": servers(port),
        "tags": tag_list,
        "paths": {**paths, **common_paths()},
        "components": {
            "securitySchemes": {**security_schemes(), **(schemes or {})},
            "schemas": {"Error": error_schema(), **schemas},
        },
    }


def add_openapi_routes(app: web.Application, document: Mapping[str, Any]) -> None:
    """Serve `document` at `GET /openapi.json` and its rendering at `GET /reference`."""
    body = json.dumps(document, indent=2).encode()
    page = render_html(document).encode()

    async def openapi_json(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def reference(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/reference", reference)


# -- the reference page -----------------------------------------------------------------------

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:980px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:40px;border-bottom:1px solid #d8dee4;padding-bottom:4px}
code,pre{font:13px/1.45 ui-monospace,monospace;background:#eef1f4;border-radius:4px}
code{padding:1px 4px}pre{padding:10px;overflow:auto}
table{border-collapse:collapse;margin:8px 0;width:100%}
th,td{border:1px solid #d8dee4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
.op{background:#fff;border:1px solid #d8dee4;border-radius:6px;margin:16px 0;padding:12px 16px}
.op h3{margin:0;font-size:16px}.method{display:inline-block;min-width:64px;color:#fff;
border-radius:4px;padding:1px 6px;margin-right:8px;text-align:center;font-size:13px}
.get{background:#1f6feb}.post{background:#1a7f37}.put{background:#9a6700}
.delete{background:#cf222e}.lock{font-size:13px;color:#57606a}
nav a{margin-right:12px}
"""


def render_html(document: Mapping[str, Any]) -> str:
    """The document as one self-contained HTML page (no script, no external resource)."""
    doc_info = document.get("info", {})
    title = str(doc_info.get("title", "API"))
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>",
        f"<h1>{_e(title)}</h1><p>version {_e(str(doc_info.get('version', '')))} · "
        '<a href="openapi.json">openapi.json</a></p>',
        _markdown(str(doc_info.get("description", ""))),
    ]
    servers_ = document.get("servers", [])
    if servers_:
        out.append("<p>Servers: " + ", ".join(f"<code>{_e(s['url'])}</code>" for s in servers_))
    schemes = document.get("components", {}).get("securitySchemes", {})
    if schemes:
        out.append("<p>Authentication (any one of):</p><ul>")
        for name, scheme in schemes.items():
            where = _scheme_where(scheme)
            text = _markdown_inline(scheme.get("description", ""))
            out.append(f"<li><b>{_e(name)}</b> ({where}): {text}")
        out.append("</ul>")
    tags = [t["name"] for t in document.get("tags", [])]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                # Parameters of the path item apply to each of its operations.
                params = [*item.get("parameters", []), *item[method].get("parameters", [])]
                op = {**item[method], "parameters": params}
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, op))
                if tag not in tags:
                    tags.append(tag)
    out.append(
        "<nav>" + "".join(f'<a href="#tag-{_e(t)}">{_e(t)}</a>' for t in tags if t in by_tag)
    )
    out.append('<a href="#schemas">schemas</a></nav>')
    descriptions = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    for tag in tags:
        if tag not in by_tag:
            continue
        out.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>{_markdown(descriptions.get(tag, ""))}')
        for method, path, op in by_tag[tag]:
            out.append(_operation(method, path, op, document))
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        out.append(f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>{_schema(schema)}')
    out.append("</main></body></html>")
    return "\n".join(out)


def _operation(method: str, path: str, op: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    secured = op.get("security", document.get("security", []))
    names = " · ".join(_e(name) for requirement in secured for name in requirement)
    lock = f" <span class=lock>auth: {names}</span>" if secured else ""
    parts = [
        f'<div class=op id="op-{_e(op.get("operationId", method + path))}">',
        f"<h3><span class='method {method}'>{method.upper()}</span><code>{_e(path)}</code>"
        f"{lock}</h3>",
        f"<p><b>{_e(op.get('summary', ''))}</b></p>",
        _markdown(op.get("description", "")),
    ]
    params = op.get("parameters", [])
    if params:
        rows = "".join(
            f"<tr><td><code>{_e(p['name'])}</code>{' *' if p.get('required') else ''}</td>"
            f"<td>{_e(p['in'])}</td><td>{_schema_inline(p.get('schema', {}))}</td>"
            f"<td>{_markdown_inline(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(
            "<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>"
            f"{rows}</table>"
        )
    body = op.get("requestBody")
    if body:
        parts.append(f"<p>Request body: {_markdown_inline(body.get('description', ''))}</p>")
        for media, content in body.get("content", {}).items():
            schema = content.get("schema", {})
            if "$ref" in schema:
                parts.append(f"<p><code>{_e(media)}</code> {_schema_inline(schema)}</p>")
            else:
                parts.append(f"<p><code>{_e(media)}</code></p>{_schema(schema)}")
    response_rows: list[str] = []
    for status, response in op.get("responses", {}).items():
        media = ", ".join(
            f"<code>{_e(m)}</code> {_schema_inline(c.get('schema', {}))}"
            for m, c in response.get("content", {}).items()
        )
        response_rows.append(
            f"<tr><td>{_e(status)}</td><td>{_markdown_inline(response.get('description', ''))}"
            f"</td><td>{media}</td></tr>"
        )
    parts.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    parts.append("".join(response_rows) + "</table>")
    for response in op.get("responses", {}).values():
        for content in response.get("content", {}).values():
            if "example" in content:
                example = json.dumps(content["example"], indent=2)
                parts.append(f"<details><summary>example</summary><pre>{_e(example)}</pre>")
                parts.append("</details>")
    parts.append("</div>")
    return "\n".join(parts)


def _scheme_where(scheme: Mapping[str, Any]) -> str:
    if scheme.get("type") == "http":
        return f"<code>Authorization: {_e(str(scheme.get('scheme', '')).title())} …</code>"
    if scheme.get("in") == "query":
        return f"<code>?{_e(scheme.get('name', ''))}=…</code>"
    return f"{_e(scheme.get('in', ''))} <code>{_e(scheme.get('name', ''))}</code>"


def _schema_inline(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_schema_inline(schema.get('items', {}))}"
    return f"<code>{_e(str(kind or 'any'))}</code>"


def _schema(schema: Mapping[str, Any]) -> str:
    text = _e(json.dumps(schema, indent=2, ensure_ascii=False))
    # Link every $ref to the schema it names.
    linked = re.sub(
        r"&quot;#/components/schemas/([A-Za-z0-9_]+)&quot;",
        r'&quot;<a href="#schema-\1">#/components/schemas/\1</a>&quot;',
        text,
    )
    return f"<pre>{linked}</pre>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _markdown_inline(text: str) -> str:
    """Escape, then `code` and **bold**: what the documents' descriptions use."""
    escaped = _e(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _markdown(text: str) -> str:
    """Paragraphs, `- ` lists and `|` tables: the subset the descriptions are written in."""
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if not lines:
            continue
        if all(line.startswith("|") for line in lines):
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
            rows = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]
            head, *rest = rows
            html_rows = "<tr>" + "".join(f"<th>{_markdown_inline(c)}</th>" for c in head)
            for row in rest:
                html_rows += "<tr>" + "".join(f"<td>{_markdown_inline(c)}</td>" for c in row)
            blocks.append(f"<table>{html_rows}</table>")
        elif lines[0].startswith("- "):
            items, current = [], ""
            for line in lines:
                if line.startswith("- "):
                    if current:
                        items.append(current)
                    current = line[2:]
                else:
                    current += " " + line.strip()
            items.append(current)
            blocks.append("<ul>" + "".join(f"<li>{_markdown_inline(i)}" for i in items) + "</ul>")
        elif lines[0].startswith("    "):
            blocks.append(f"<pre>{_e(chr(10).join(line[4:] for line in lines))}</pre>")
        else:
            blocks.append(f"<p>{_markdown_inline(' '.join(lines))}</p>")
    return "\n".join(blocks)
