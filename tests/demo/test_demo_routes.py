"""The demo's HTTP side on an in-process gateway: off by default (404), the page and the JS
client served when on, `POST /demo/token` minting a short-lived token for a display name (and
refusing bad names), the `demo` namespace it provides (or the one SWITCHBOARD_CHANNELS sets)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.auth import TokenVerifier
from services.common.settings import SettingsError
from services.gateway.app import create_app
from services.gateway.demo import TOKEN_TTL_S
from services.gateway.keys import settings_key
from services.gateway.settings import GatewaySettings
from tests.conftest import REPO, Gateway, gateway_env
from tests.helpers import open_client

PATHS = ("/demo", "/demo/", "/demo/static/demo.js", "/demo/client/index.js")


async def mint(gw: Gateway, body: Any) -> tuple[int, Any]:
    async with gw.http.session.post(gw.url("/demo/token"), json=body) as response:
        return response.status, await response.json()


async def test_off_by_default(start_gateway: Callable[..., Any]) -> None:
    gw = await start_gateway()
    for path in PATHS:
        async with gw.http.session.get(gw.url(path)) as response:
            assert response.status == 404, path
    async with gw.http.session.post(gw.url("/demo/token"), json={"name": "Ann"}) as response:
        assert response.status == 404
        assert "token" not in await response.text()


async def test_page_static_files_and_client(start_gateway: Callable[..., Any]) -> None:
    gw = await start_gateway(GATEWAY_DEMO="true")
    async with gw.http.session.get(gw.url("/demo")) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert '<script type="module" src="/demo/static/demo.js">' in await response.text()
    async with gw.http.session.get(gw.url("/demo/static/demo.js")) as response:
        assert response.status == 200
        assert response.content_type in ("text/javascript", "application/javascript")
        assert "from '/demo/client/index.js'" in await response.text()
    async with gw.http.session.get(gw.url("/demo/client/switchboard.js")) as response:
        assert response.status == 200
        assert await response.read() == (REPO / "clients/js/src/switchboard.js").read_bytes()
    # Nothing outside the two folders: aiohttp's static route refuses to climb out.
    async with gw.http.session.get(gw.url("/demo/client/%2E%2E/package.json")) as response:
        assert response.status in (403, 404)


async def test_token_for_a_display_name(start_gateway: Callable[..., Any]) -> None:
    gw = await start_gateway(GATEWAY_DEMO="true")
    status, body = await mint(gw, {"name": "  Ann Lee "})
    assert status == 200, body
    assert body["user"] == "demo:Ann Lee"
    assert body["expires_in"] == TOKEN_TTL_S
    claims = TokenVerifier(gw.app[settings_key].jwt).verify(body["token"])
    assert claims.user == "demo:Ann Lee"
    assert claims.scopes == frozenset()  # no server API, no admin
    assert claims.expires_in() in (TOKEN_TTL_S, TOKEN_TTL_S - 1)
    assert claims.extra["labels"] == {"read": ["demo*"], "write": []}

    # The token connects; the demo namespace takes client publications, others do not.
    client = await open_client(gw, body["token"])
    try:
        await client.ok("subscribe", channel="demo:feed")
        await client.ok("publish", channel="demo:feed", data={"text": "hi"})
        push = await client.push()
        assert push["data"] == {"text": "hi"}
        refused = await client.call("publish", channel="news", data={"text": "hi"})
        assert refused["error"]["code"] == 103
    finally:
        await client.close()


@pytest.mark.parametrize("name", ["", "   ", "x" * 33, "<b>", "a\nb", 42, None])
async def test_bad_names_refused(start_gateway: Callable[..., Any], name: object) -> None:
    gw = await start_gateway(GATEWAY_DEMO="true")
    status, body = await mint(gw, {"name": name})
    assert status == 400
    assert body["error"]["code"] == 107
    assert "token" not in body
    status, body = await mint(gw, {"name": "Bob"})  # the next visitor is served as usual
    assert status == 200


async def test_body_not_json(start_gateway: Callable[..., Any]) -> None:
    gw = await start_gateway(GATEWAY_DEMO="true")
    async with gw.http.session.post(gw.url("/demo/token"), data=b"name=Ann") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == 107


async def test_configured_namespace_wins(
    start_gateway: Callable[..., Any], channels_file: Callable[[dict[str, Any]], str]
) -> None:
    path = channels_file({"demo": {"allow_publish": False}})
    gw = await start_gateway(GATEWAY_DEMO="true", SWITCHBOARD_CHANNELS=path)
    _, body = await mint(gw, {"name": "Ann"})
    client = await open_client(gw, body["token"])
    try:
        refused = await client.call("publish", channel="demo:feed", data={"text": "hi"})
        assert refused["error"]["code"] == 103
    finally:
        await client.close()


def test_needs_a_signing_key(tmp_path: Path) -> None:
    """With only a public key the gateway cannot mint: the demo refuses to start."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = gateway_env(
        "redis://127.0.0.1:1",
        JWT_ALGORITHMS="RS256",
        JWT_PUBLIC_KEY_FILE=str(public),
        GATEWAY_DEMO="true",
    )
    with pytest.raises(SettingsError, match="GATEWAY_DEMO needs a signing key"):
        create_app(GatewaySettings.from_env(env))
