"""Redis away: /readyz says so, a push gets error 108 and close 1011; back: everything works."""

import json
from collections.abc import Callable

from aiohttp.test_utils import TestClient, TestServer

from services.streams.app import create_app
from services.streams.settings import StreamsSettings
from tests.conftest import RedisProcess
from tests.helpers import wait_until
from tests.streams.conftest import expect_refusal, streams_env


async def test_readiness_and_pushes_follow_redis(
    spare_redis: RedisProcess, make_token: Callable[..., str]
) -> None:
    settings = StreamsSettings.from_env(
        streams_env(spare_redis.url, REDIS_SOCKET_TIMEOUT_S="1", REDIS_CONNECT_TIMEOUT_S="1")
    )
    client: TestClient = TestClient(TestServer(create_app(settings)))  # type: ignore[type-arg]
    await client.start_server()
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    try:

        async def ready_is(status: int) -> bool:
            async with client.get("/readyz") as r:
                return r.status == status

        await wait_until(lambda: ready_is(200), what="ready")
        ws = await client.session.ws_connect(
            str(client.make_url("/data/cam/push?batch=true&ack=true")), headers=headers
        )
        await ws.send_str("[1]")
        await ws.send_bytes(b"a")
        assert await ws.receive_str(timeout=5)
        spare_redis.stop()
        await wait_until(lambda: ready_is(503), what="not ready")
        async with client.get("/readyz") as r:
            assert (await r.json())["checks"] == {"redis": False}
        await ws.send_str(json.dumps([1]))
        await ws.send_bytes(b"b")
        await expect_refusal(ws, 108, 1011)
        spare_redis.start()
        await wait_until(lambda: ready_is(200), timeout_s=10, what="ready again")
        url = str(client.make_url("/data/cam/push?ack=true"))
        async with client.session.ws_connect(url, headers=headers) as again:
            await again.send_bytes(b"c")
            assert await again.receive_str(timeout=5)
    finally:
        await client.close()
