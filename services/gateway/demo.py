"""The live demo page (`GATEWAY_DEMO=true`): `/demo`, its static files, the JS client, and
`POST /demo/token`, which gives any visitor a short-lived token for a display name.

Anyone who can reach the gateway can then connect, so the demo is for a developer's machine or a
private network only (docs/demo.md). With the setting off nothing here is registered: `/demo`
is a 404 like any unknown path.
"""

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Final

from aiohttp import web

from services.common.auth import mint_token
from services.common.channels import Namespace, Namespaces
from services.common.errors import BadRequest
from services.common.settings import SettingsError
from services.common.web import json_body, json_errors

from .keys import node_key, settings_key

log = logging.getLogger(__name__)

PAGE_DIR: Final = Path(__file__).resolve().parent / "demo"
# The JS client: copied next to the page when the package is built for an image (Dockerfile),
# else read from the repository's clients/js/src (a checkout, an editable install).
CLIENT_DIRS: Final = (PAGE_DIR / "client", Path(__file__).resolve().parents[2] / "clients/js/src")

TOKEN_TTL_S: Final = 600  # the page asks for a new one before it expires (the client's getToken)
NAME: Final = re.compile(r"[\w][\w .\-]{0,31}")  # what a visitor may call themselves
USER_PREFIX: Final = "demo:"  # never the `sub` of a real user (`user:#alice` stays alice's)
# The page's channel (`demo:feed`) needs client publish: given unless SWITCHBOARD_CHANNELS
# configures the namespace itself.
DEMO_NAMESPACE: Final = Namespace(
    name="demo", history_size=100, history_ttl_s=600.0, join_leave=True, allow_publish=True
)
# What a demo token may do on the streams service: read the cameras (frames API) of labels named
# demo*, nothing else (a token without the claim would get FRAMES_DEFAULT_ACCESS).
STREAMS_CLAIMS: Final = {"labels": {"read": ["demo*"], "write": []}}
# The page's only other origin may be the streams service's WebSocket (another port).
CSP: Final = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def setup_demo(app: web.Application) -> None:
    """Register the demo's routes when the gateway's `demo` setting is on."""
    settings = app[settings_key]
    if not settings.demo:
        return
    if not settings.jwt.signing_key:
        raise SettingsError("GATEWAY_DEMO needs a signing key (SECRET_KEY or JWT_PRIVATE_KEY_FILE)")
    names = {namespace.name for namespace in settings.namespaces}
    if DEMO_NAMESPACE.name not in names:
        namespaces = {namespace.name: namespace for namespace in settings.namespaces}
        namespaces[DEMO_NAMESPACE.name] = DEMO_NAMESPACE
        app[settings_key] = replace(settings, namespaces=Namespaces(namespaces))
    app.router.add_get("/demo", _page)
    app.router.add_get("/demo/", _page)
    app.router.add_post("/demo/token", _token)
    app.router.add_static("/demo/static", PAGE_DIR)
    client = next((path for path in CLIENT_DIRS if (path / "index.js").is_file()), None)
    if client is None:
        log.warning("demo: the JS client is missing", extra={"looked_in": [*map(str, CLIENT_DIRS)]})
    else:
        app.router.add_static("/demo/client", client)
    log.warning("demo mode on: /demo gives a token to anyone who asks")


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        PAGE_DIR / "index.html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


@json_errors
async def _token(request: web.Request) -> web.StreamResponse:
    """`{"name": "Ann"}` -> `{"token", "user", "expires_in", "gateway"}`."""
    body = await json_body(request, 4096)
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name.strip()):
        raise BadRequest("name: 1-32 letters, digits, spaces, '.', '-' or '_'")
    name = name.strip()
    user = USER_PREFIX + name
    claims = {"sub": user, "info": {"name": name}, **STREAMS_CLAIMS}
    token = mint_token(request.app[settings_key].jwt, claims, ttl_s=TOKEN_TTL_S)
    return web.json_response(
        {
            "token": token,
            "user": user,
            "expires_in": TOKEN_TTL_S,
            "gateway": request.app[node_key].id,
        },
        headers={"Cache-Control": "no-store"},
    )
