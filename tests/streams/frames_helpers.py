"""The frames API under test: an in-process streams app on a real port, upload and parse helpers."""

import dataclasses
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from services.streams.app import create_app
from services.streams.settings import StreamsSettings
from tests.conftest import SECRET, serve_ready

DELIM = b"--IMG--"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"


def frames_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET,
        "LOG_JSON": "false",
        "FRAMES_READ_BLOCK_MS": "500",
        "FRAMES_LABEL_REFRESH_S": "0.1",
        "FRAMES_PULL_TIMEOUT_S": "2",
    }
    env.update(extra)
    return env


def message(header: dict[str, Any], frame: bytes) -> bytes:
    return json.dumps(header).encode() + DELIM + frame


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split an outgoing message at the first delimiter, as the backend's clients do."""
    head, _, frame = data.partition(DELIM)
    return json.loads(head), frame


def header(label: str = "site-a", key: str = "cam1", **extra: Any) -> dict[str, Any]:
    return {
        "label": label,
        "key": key,
        "warnings_json": "",
        "cone_polygons_json": "[]",
        "pole_polygons_json": "",
        "detection_items_json": "[]",
        "width": 640,
        "height": 480,
        **extra,
    }


def form(label: str = "site-a", key: str = "cam1", frame: bytes = JPEG, **extra: str) -> Any:
    data = aiohttp.FormData()
    data.add_field("label", label)
    data.add_field("key", key)
    for name, value in extra.items():
        data.add_field(name, value)
    # A file object, as a producer's HTTP client sends it (aiohttp warns about large raw bytes).
    data.add_field("file", io.BytesIO(frame), filename="frame.jpg", content_type="image/jpeg")
    return data


@dataclass
class Frames:
    """A streams app serving the frames API on a real port."""

    http: TestClient
    make_token: Callable[..., str]

    @property
    def app(self) -> Any:
        return self.http.app

    def url(self, path: str, scheme: str = "http") -> str:
        return str(self.http.make_url(path)).replace("http", scheme, 1)

    def auth(self, sub: str = "alice", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.make_token(sub, **claims)}"}

    async def post(self, data: Any, **claims: Any) -> tuple[int, Any]:
        headers = self.auth(**claims)
        async with self.http.session.post(self.url("/frames"), data=data, headers=headers) as r:
            return r.status, await r.json()

    async def upload(self, label: str = "site-a", key: str = "cam1", frame: bytes = JPEG) -> str:
        status, body = await self.post(form(label, key, frame, width="640", height="480"))
        assert status == 200, body
        return str(body["id"])

    async def ws(self, path: str, **claims: Any) -> aiohttp.ClientWebSocketResponse:
        return await self.http.session.ws_connect(self.url(path), headers=self.auth(**claims))


@pytest.fixture
async def start_frames(
    redis: Redis, redis_server: Any, make_token: Callable[..., str]
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_frames(FRAMES_LABELS_RATE="3")`: a streams app with these settings."""
    started: list[TestClient] = []

    async def start(key_prefix: str | None = None, **env: str) -> Frames:
        settings = StreamsSettings.from_env(frames_env(redis_server.url, **env))
        if key_prefix is not None:
            frames = dataclasses.replace(settings.frames, key_prefix=key_prefix)
            settings = dataclasses.replace(settings, frames=frames)
        client = await serve_ready(create_app(settings, redis=redis), started, "streams")
        return Frames(client, make_token)

    yield start
    for client in reversed(started):
        await client.close()


@pytest.fixture
async def frames(start_frames: Callable[..., Any]) -> Frames:
    return await start_frames()  # type: ignore[no-any-return]
