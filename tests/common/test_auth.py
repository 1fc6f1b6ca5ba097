"""Token verification: every bad token is refused with its precise code, at upgrade time (HTTP)
and through the `connect` command (error reply, then a close code); expiry, refresh, revocation
and operator disconnects close exactly the sockets they concern."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from redis.asyncio import Redis

from services.common.auth import TokenVerifier
from services.common.errors import CloseCode, ErrorCode, TokenExpired, Unauthorized
from services.common.settings import JwtSettings, SettingsError
from services.gateway.keys import node_key
from services.gateway.settings import GatewaySettings
from tests.conftest import SECRET, Gateway
from tests.helpers import (
    Client,
    open_client,
    still_delivers,
    upgrade_headers,
    wait_until,
)

OTHER_SECRET = "another-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
REVOCATION_DB = 3  # the suite's Redis uses DB 0 for everything else


# -- keys and hand-made tokens ---------------------------------------------------------------


@dataclass(frozen=True)
class RsaKeys:
    private_pem: str
    public_pem: str
    public_file: str


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> RsaKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_text(public_pem)
    return RsaKeys(private_pem, public_pem, str(path))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segments(alg: str, payload: dict[str, Any]) -> str:
    header = json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode()
    body = json.dumps(payload, separators=(",", ":")).encode()
    return f"{_b64(header)}.{_b64(body)}"


def unsigned_token(payload: dict[str, Any]) -> str:
    """`alg: none`, no signature."""
    return _segments("none", payload) + "."


def hs256_with(secret: bytes, payload: dict[str, Any]) -> str:
    """HS256 signed by hand (pyjwt refuses a PEM as HMAC secret, an attacker does not)."""
    signing_input = _segments("HS256", payload)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def claims(sub: str = "alice", ttl: float = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + int(ttl), **extra}


# -- TokenVerifier on its own ----------------------------------------------------------------


def hs_verifier() -> TokenVerifier:
    return TokenVerifier(JwtSettings(key=SECRET, signing_key=SECRET))


def rs_verifier(keys: RsaKeys) -> TokenVerifier:
    return TokenVerifier(JwtSettings(key=keys.public_pem, signing_key="", algorithms=("RS256",)))


def test_verifier_accepts_a_good_token() -> None:
    token = jwt.encode(claims(jti="j1", scope="publish admin"), SECRET, algorithm="HS256")
    verified = hs_verifier().verify(token)
    assert verified.user == "alice"
    assert verified.jti == "j1"
    assert verified.scopes == {"publish", "admin"}
    assert 3590 <= (verified.expires_in() or 0) <= 3600


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("forged", Unauthorized),
        ("alg_none", Unauthorized),
        ("hs384_not_pinned", Unauthorized),
        ("expired", TokenExpired),
        ("not_yet_valid", Unauthorized),
        ("missing_sub", Unauthorized),
        ("missing_exp", Unauthorized),
        ("empty_sub", Unauthorized),
        ("garbage", Unauthorized),
    ],
)
def test_verifier_refuses_bad_hs_tokens(kind: str, expected: type[Exception]) -> None:
    now = int(time.time())
    token = {
        "forged": lambda: jwt.encode(claims(), OTHER_SECRET, algorithm="HS256"),
        "alg_none": lambda: unsigned_token(claims()),
        "hs384_not_pinned": lambda: jwt.encode(claims(), SECRET, algorithm="HS384"),
        "expired": lambda: jwt.encode(claims(ttl=-60), SECRET, algorithm="HS256"),
        "not_yet_valid": lambda: jwt.encode(claims(nbf=now + 300), SECRET, algorithm="HS256"),
        "missing_sub": lambda: jwt.encode({"exp": now + 60}, SECRET, algorithm="HS256"),
        "missing_exp": lambda: jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
        "empty_sub": lambda: jwt.encode(claims(sub=""), SECRET, algorithm="HS256"),
        "garbage": lambda: "not.a.token",
    }[kind]()
    with pytest.raises(Unauthorized) as info:
        hs_verifier().verify(token)
    assert type(info.value) is expected
    want = ErrorCode.TOKEN_EXPIRED if expected is TokenExpired else ErrorCode.UNAUTHORIZED
    assert info.value.code == want


def test_verifier_refuses_rs256_token_when_hs256_is_pinned(rsa_keys: RsaKeys) -> None:
    token = jwt.encode(claims(), rsa_keys.private_pem, algorithm="RS256")
    with pytest.raises(Unauthorized) as info:
        hs_verifier().verify(token)
    assert info.value.code == ErrorCode.UNAUTHORIZED


def test_verifier_refuses_hs256_signed_with_the_public_key(rsa_keys: RsaKeys) -> None:
    verifier = rs_verifier(rsa_keys)
    assert verifier.verify(jwt.encode(claims(), rsa_keys.private_pem, algorithm="RS256"))
    with pytest.raises(Unauthorized) as info:
        verifier.verify(hs256_with(rsa_keys.public_pem.encode(), claims()))
    assert info.value.code == ErrorCode.UNAUTHORIZED


def es256_token(payload: dict[str, Any]) -> str:
    """Signed with a fresh EC key: anyone can make one."""
    return jwt.encode(payload, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")


def test_verifier_refuses_a_token_that_does_not_fit_the_key(rsa_keys: RsaKeys) -> None:
    # RS256 and ES256 both allowed, the key is RSA: an ES256 token is invalid, not a crash.
    verifier = TokenVerifier(
        JwtSettings(key=rsa_keys.public_pem, signing_key="", algorithms=("RS256", "ES256"))
    )
    with pytest.raises(Unauthorized) as info:
        verifier.verify(es256_token(claims()))
    assert info.value.code == ErrorCode.UNAUTHORIZED


def test_channel_token_needs_exp_like_any_other_token() -> None:
    verifier = hs_verifier()
    good = jwt.encode(claims(channel="tok:a"), SECRET, algorithm="HS256")
    verifier.verify_channel_token(good, user="alice", channel="tok:a")
    endless = jwt.encode({"sub": "alice", "channel": "tok:a"}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        verifier.verify_channel_token(endless, user="alice", channel="tok:a")
    with pytest.raises(Unauthorized):
        verifier.verify_channel_token(good, user="bob", channel="tok:a")
    with pytest.raises(Unauthorized):
        verifier.verify_channel_token(good, user="alice", channel="tok:b")


# -- the gateway: helpers -----------------------------------------------------------------------


async def refused_upgrade(gw: Gateway, token: str) -> tuple[int, dict[str, Any]]:
    """Both a WebSocket client and a raw upgrade request are refused: (status, JSON body)."""
    headers = {"Authorization": f"Bearer {token}"}
    before = set(gw.app[node_key].connections)  # closing sockets of earlier steps may leave
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.http.session.ws_connect(gw.url("/ws"), headers=headers)
    status = info.value.status
    async with gw.http.session.get(gw.url("/ws"), headers=upgrade_headers(headers)) as resp:
        assert resp.status == status
        body = await resp.json()
    assert not set(gw.app[node_key].connections) - before  # no socket was registered
    return status, body


async def refused_connect(gw: Gateway, token: str) -> tuple[dict[str, Any], int | None]:
    """The error reply to `connect`, then the close code (after a `disconnect` push)."""
    client = await open_client(gw)
    reply = await client.call("connect", token=token)
    code = await client.closed()
    push = await client.push(kind="disconnect")
    assert push["code"] == code
    assert push["reconnect"] == CloseCode(code).reconnect
    return reply, code


async def witness(gw: Gateway, user: str = "carol", channel: str = "news") -> Client:
    client = await gw.connect(user)
    await client.ok("subscribe", channel=channel)
    return client


@pytest.fixture
async def revocation_db(redis_server: Any) -> Any:
    client = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{REVOCATION_DB}")
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def hs_gateway(start_gateway: Callable[..., Awaitable[Gateway]]) -> Gateway:
    return await start_gateway(JWT_REVOCATION_DB=str(REVOCATION_DB))


@pytest.fixture
async def rs_gateway(
    start_gateway: Callable[..., Awaitable[Gateway]], rsa_keys: RsaKeys
) -> Gateway:
    return await start_gateway(JWT_ALGORITHMS="RS256", JWT_PUBLIC_KEY_FILE=rsa_keys.public_file)


# -- bad tokens, at upgrade and through `connect` ----------------------------------------------

# kind -> (error code, close code after `connect`)
BAD_TOKENS: dict[str, tuple[ErrorCode, CloseCode]] = {
    "forged": (ErrorCode.UNAUTHORIZED, CloseCode.INVALID_TOKEN),
    "alg_none": (ErrorCode.UNAUTHORIZED, CloseCode.INVALID_TOKEN),
    "rs256_on_hs256": (ErrorCode.UNAUTHORIZED, CloseCode.INVALID_TOKEN),
    "expired": (ErrorCode.TOKEN_EXPIRED, CloseCode.TOKEN_EXPIRED),
    "not_yet_valid": (ErrorCode.UNAUTHORIZED, CloseCode.INVALID_TOKEN),
    "revoked_by_api": (ErrorCode.UNAUTHORIZED, CloseCode.TOKEN_REVOKED),
    "revoked_zou_style": (ErrorCode.UNAUTHORIZED, CloseCode.TOKEN_REVOKED),
    "missing_sub": (ErrorCode.UNAUTHORIZED, CloseCode.INVALID_TOKEN),
    "missing_exp": (ErrorCode.UNAUTHORIZED, CloseCode.INVALID_TOKEN),
}


async def bad_token(kind: str, gw: Gateway, make_token: Any, keys: RsaKeys, zou: Redis) -> str:
    jti = uuid.uuid4().hex
    if kind == "forged":
        return str(make_token("alice", key=OTHER_SECRET))
    if kind == "alg_none":
        return unsigned_token(claims())
    if kind == "rs256_on_hs256":
        return jwt.encode(claims(), keys.private_pem, algorithm="RS256")
    if kind == "expired":
        return str(make_token("alice", ttl=-60))
    if kind == "not_yet_valid":
        return str(make_token("alice", nbf=int(time.time()) + 300))
    if kind == "revoked_by_api":
        status, body = await gw.api("POST", "/api/revoke", scope="admin", json={"jti": jti})
        assert status == 200, body
        return str(make_token("alice", jti=jti))
    if kind == "revoked_zou_style":
        await zou.set(jti, "true")
        return str(make_token("alice", jti=jti))
    if kind == "missing_sub":
        return str(make_token(None))
    if kind == "missing_exp":
        return str(make_token("alice", ttl=None))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_bad_token_is_refused_before_the_upgrade(
    kind: str, hs_gateway: Gateway, make_token: Any, rsa_keys: RsaKeys, revocation_db: Redis
) -> None:
    bystander = await witness(hs_gateway)
    token = await bad_token(kind, hs_gateway, make_token, rsa_keys, revocation_db)
    status, body = await refused_upgrade(hs_gateway, token)
    assert status == 401
    assert body["error"]["code"] == BAD_TOKENS[kind][0]
    await still_delivers(hs_gateway, bystander)


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_bad_token_in_connect_gets_an_error_then_its_close_code(
    kind: str, hs_gateway: Gateway, make_token: Any, rsa_keys: RsaKeys, revocation_db: Redis
) -> None:
    bystander = await witness(hs_gateway)
    token = await bad_token(kind, hs_gateway, make_token, rsa_keys, revocation_db)
    reply, close_code = await refused_connect(hs_gateway, token)
    code, close = BAD_TOKENS[kind]
    assert reply["error"]["code"] == code, reply
    assert close_code == close
    await still_delivers(hs_gateway, bystander)


async def test_zou_revocation_is_read_from_the_configured_db_only(
    hs_gateway: Gateway, make_token: Any, redis: Redis
) -> None:
    # The same key in DB 0 (not the configured revocation DB) revokes nothing.
    await redis.set("j-db0", "true")
    client = await open_client(hs_gateway, make_token("alice", jti="j-db0"))
    assert await client.ok("ping") == {}


async def test_hs256_token_signed_with_the_rsa_public_key_is_refused(
    rs_gateway: Gateway, rsa_keys: RsaKeys
) -> None:
    good = jwt.encode(claims("carol"), rsa_keys.private_pem, algorithm="RS256")
    bystander = await open_client(rs_gateway, good)
    await bystander.ok("subscribe", channel="news")

    confused = hs256_with(rsa_keys.public_pem.encode(), claims())
    status, body = await refused_upgrade(rs_gateway, confused)
    assert (status, body["error"]["code"]) == (401, ErrorCode.UNAUTHORIZED)
    reply, close_code = await refused_connect(rs_gateway, confused)
    assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED
    assert close_code == CloseCode.INVALID_TOKEN

    # An HS256 token made with the configured SECRET_KEY is no better: RS256 is pinned.
    status, _ = await refused_upgrade(rs_gateway, jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert status == 401

    backend = jwt.encode(
        claims("backend", scope="publish"), rsa_keys.private_pem, algorithm="RS256"
    )
    async with rs_gateway.http.session.post(
        rs_gateway.url("/api/publish"),
        headers={"Authorization": f"Bearer {backend}"},
        json={"channel": "news", "data": {"n": 1}},
    ) as resp:
        assert resp.status == 200
    assert (await bystander.push())["data"] == {"n": 1}


async def test_token_that_does_not_fit_the_key_is_refused_not_a_crash(
    start_gateway: Callable[..., Awaitable[Gateway]], rsa_keys: RsaKeys
) -> None:
    gw = await start_gateway(JWT_ALGORITHMS="RS256,ES256", JWT_PUBLIC_KEY_FILE=rsa_keys.public_file)
    bystander = await open_client(
        gw, jwt.encode(claims("carol"), rsa_keys.private_pem, algorithm="RS256")
    )
    await bystander.ok("subscribe", channel="news")
    status, body = await refused_upgrade(gw, es256_token(claims()))
    assert (status, body["error"]["code"]) == (401, ErrorCode.UNAUTHORIZED)
    reply, close_code = await refused_connect(gw, es256_token(claims()))
    assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED
    assert close_code == CloseCode.INVALID_TOKEN
    assert await bystander.ok("ping") == {}


# -- ways in ------------------------------------------------------------------------------------


async def test_cookie_authenticates(gateway: Gateway, make_token: Any) -> None:
    client = await open_client(gateway, Cookie=f"access_token_cookie={make_token('alice')}")
    result = await client.ok("connect")  # no token: just says who this socket is
    assert result["user"] == "alice"
    await client.ok("subscribe", channel="news")
    await still_delivers(gateway, client)


async def test_bad_cookie_is_refused(gateway: Gateway, make_token: Any) -> None:
    cookie = f"access_token_cookie={make_token('alice', key=OTHER_SECRET)}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gateway.http.session.ws_connect(gateway.url("/ws"), headers={"Cookie": cookie})
    assert info.value.status == 401


async def test_connect_command_authenticates(gateway: Gateway, make_token: Any) -> None:
    client = await open_client(gateway)
    result = await client.ok("connect", token=make_token("alice"), name="laptop")
    assert result["user"] == "alice"
    assert 3590 <= result["expires_in"] <= 3600
    await client.ok("subscribe", channel="news")
    await still_delivers(gateway, client)


async def test_commands_before_connect_get_101_and_the_socket_stays_open(
    gateway: Gateway, make_token: Any
) -> None:
    client = await open_client(gateway)
    for op, fields in [("ping", {}), ("subscribe", {"channel": "news"}), ("refresh", {})]:
        reply = await client.call(op, **fields)
        assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED, (op, reply)
    reply = await client.call("connect")  # no token on an unauthenticated socket
    assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED
    await client.ok("connect", token=make_token("alice"))
    await client.ok("subscribe", channel="news")
    await still_delivers(gateway, client)


async def test_socket_without_connect_is_closed_with_4005(
    start_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await start_gateway(GATEWAY_CONNECT_TIMEOUT_S="0.3")
    authenticated = await gw.connect("carol")
    await authenticated.ok("subscribe", channel="news")
    silent = await open_client(gw)
    started = time.monotonic()
    assert await silent.closed(timeout_s=4.0) == CloseCode.CONNECT_TIMEOUT
    assert time.monotonic() - started >= 0.25
    push = await silent.push(kind="disconnect")
    assert (push["code"], push["reconnect"]) == (CloseCode.CONNECT_TIMEOUT, True)
    # A socket authenticated by header has no connect deadline.
    await still_delivers(gw, authenticated)


# -- expiry and refresh -------------------------------------------------------------------------


async def test_refresh_extends_the_connection_beyond_the_first_token(
    gateway: Gateway, make_token: Any
) -> None:
    refreshed = await open_client(gateway, make_token("alice", ttl=2))
    await refreshed.ok("subscribe", channel="news")
    # Same expiry, not refreshed: closing it marks the moment the first token ran out.
    control = await open_client(gateway, make_token("alice", ttl=2))

    result = await refreshed.ok("refresh", token=make_token("alice", ttl=3600))
    assert 3590 <= result["expires_in"] <= 3600
    assert await control.closed(timeout_s=6.0) == CloseCode.TOKEN_EXPIRED

    assert await refreshed.ok("ping") == {}
    await still_delivers(gateway, refreshed)
    assert refreshed.pushes.empty()  # no disconnect push came


async def test_refresh_is_refused_for_another_user_or_a_bad_token(
    gateway: Gateway, make_token: Any
) -> None:
    client = await gateway.connect("alice")
    await client.ok("subscribe", channel="news")
    reply = await client.call("refresh", token=make_token("bob"))
    assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED
    reply = await client.call("refresh", token=make_token("alice", ttl=-60))
    assert reply["error"]["code"] == ErrorCode.TOKEN_EXPIRED
    reply = await client.call("refresh", token=make_token("alice", key=OTHER_SECRET))
    assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED
    await still_delivers(gateway, client)


async def test_token_that_runs_out_closes_the_socket_with_4001(
    gateway: Gateway, make_token: Any
) -> None:
    bystander = await witness(gateway)
    by_header = await open_client(gateway, make_token("alice", ttl=2))
    by_connect = await open_client(gateway)
    await by_connect.ok("connect", token=make_token("bob", ttl=2))
    for client in (by_header, by_connect):
        assert await client.closed(timeout_s=6.0) == CloseCode.TOKEN_EXPIRED
        push = await client.push(kind="disconnect")
        assert (push["code"], push["reconnect"]) == (CloseCode.TOKEN_EXPIRED, True)
    await still_delivers(gateway, bystander)


# -- operator actions ---------------------------------------------------------------------------


async def test_revoking_a_live_token_closes_its_socket_only(
    gateway: Gateway, make_token: Any
) -> None:
    alice = await open_client(gateway, make_token("alice", jti="alice-1"))
    alice_other = await open_client(gateway, make_token("alice", jti="alice-2"))
    bob = await open_client(gateway, make_token("bob", jti="bob-1"))
    for client in (alice_other, bob):
        await client.ok("subscribe", channel="news")

    status, body = await gateway.api("POST", "/api/revoke", scope="admin", json={"jti": "alice-1"})
    assert status == 200, body
    assert await alice.closed() == CloseCode.TOKEN_REVOKED
    assert (await alice.push(kind="disconnect"))["reconnect"] is False

    await still_delivers(gateway, bob, alice_other)
    # The revoked token cannot come back.
    status, _ = await refused_upgrade(gateway, make_token("alice", jti="alice-1"))
    assert status == 401


async def test_disconnecting_a_user_closes_all_their_sockets_and_no_other(
    gateway: Gateway, make_token: Any
) -> None:
    alice_1 = await gateway.connect("alice")
    alice_2 = await open_client(gateway)
    await alice_2.ok("connect", token=make_token("alice"))
    bob = await witness(gateway, "bob")

    status, body = await gateway.api(
        "POST", "/api/disconnect", scope="admin", json={"user": "alice"}
    )
    assert status == 200, body
    for client in (alice_1, alice_2):
        assert await client.closed() == CloseCode.DISCONNECTED
        push = await client.push(kind="disconnect")
        assert (push["code"], push["reconnect"]) == (CloseCode.DISCONNECTED, False)
    await still_delivers(gateway, bob)
    await wait_until(lambda: "alice" not in gateway.app[node_key].by_user, what="alice detached")


# -- settings -------------------------------------------------------------------------------------


def env(**extra: str) -> dict[str, str]:
    return {"REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": SECRET, **extra}


@pytest.mark.parametrize("secret", ["mysecretkey", "MySecretKey", "changeme", "short-but-random"])
def test_weak_secret_is_refused(secret: str) -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        GatewaySettings.from_env(env(SECRET_KEY=secret))


@pytest.mark.parametrize("secret", ["mysecretkey", "short"])
def test_weak_secret_is_allowed_in_dev_mode(secret: str) -> None:
    settings = GatewaySettings.from_env(env(SECRET_KEY=secret, SWITCHBOARD_DEV="1"))
    assert settings.jwt.key == secret


def test_missing_secret_is_refused() -> None:
    environ = env()
    del environ["SECRET_KEY"]
    with pytest.raises(SettingsError, match="SECRET_KEY is required"):
        GatewaySettings.from_env(environ)


@pytest.mark.parametrize("algorithms", ["HS256,RS256", "RS256 HS512", "none", "HS256,foo"])
def test_bad_algorithm_lists_are_refused(algorithms: str) -> None:
    with pytest.raises(SettingsError, match="JWT_ALGORITHMS"):
        GatewaySettings.from_env(env(JWT_ALGORITHMS=algorithms))


def test_public_key_algorithms_need_a_readable_key_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_FILE"):
        GatewaySettings.from_env(env(JWT_ALGORITHMS="RS256"))
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_FILE"):
        GatewaySettings.from_env(env(JWT_ALGORITHMS="RS256", JWT_PUBLIC_KEY_FILE=missing))


def test_revocation_db_setting() -> None:
    assert GatewaySettings.from_env(env()).jwt.revocation_db == 0
    assert GatewaySettings.from_env(env(JWT_REVOCATION_DB="3")).jwt.revocation_db == 3
    assert GatewaySettings.from_env(env(JWT_REVOCATION_DB="off")).jwt.revocation_db is None
    with pytest.raises(SettingsError, match="JWT_REVOCATION_DB"):
        GatewaySettings.from_env(env(JWT_REVOCATION_DB="three"))
