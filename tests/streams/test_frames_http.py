"""Frames API over HTTP: `POST /frames` and `GET /labels` against a real redis-server."""

import base64
import time

import pytest
from redis.asyncio import Redis

from services.common.settings import Env, SettingsError
from services.streams.frames.settings import FramesSettings
from tests.streams import frames_helpers
from tests.streams.frames_helpers import (
    JPEG,
    Frames,
    form,
)

# The fixtures live with the helpers (tests/streams/conftest.py belongs to the PTG tests).
start_frames = frames_helpers.start_frames
frames = frames_helpers.frames


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def test_post_frame_stores_the_backend_fields(frames: Frames, redis: Redis) -> None:
    data = form(
        "site é",
        "cam/1",
        warnings_json='["no helmet"]',
        cone_polygons_json="[[1,2],[3,4]]",
        pole_polygons_json="",
        detection_items_json='[{"class": 0}]',
        width="1280",
        height="720",
    )
    status, body = await frames.post(data)
    assert status == 200
    assert body["status"] == "ok" and body["message"] == "Frame stored successfully."
    entries = await redis.xrange(f"sb:stream_frame:{b64('site é')}|{b64('cam/1')}")
    assert [e[0].decode() for e in entries] == [body["id"]]
    assert entries[0][1] == {
        b"frame": JPEG,
        b"warnings": b'["no helmet"]',
        b"cone_polygons": b"[[1,2],[3,4]]",
        b"pole_polygons": b"",
        b"detection_items": b'[{"class": 0}]',
        b"width": b"1280",
        b"height": b"720",
    }
    assert 0 < await redis.pttl(f"sb:stream_frame:{b64('site é')}|{b64('cam/1')}") <= 86_400_000


async def test_empty_prefix_gives_the_backend_exact_keys(start_frames, redis: Redis) -> None:
    app = await start_frames(key_prefix="")
    await app.upload("site-a", "cam1")
    assert await redis.xlen(f"stream_frame:{b64('site-a')}|{b64('cam1')}") == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FRAMES_MAXLEN", "0"),
        ("FRAMES_TTL_S", "-1"),
        ("FRAMES_DEFAULT_ACCESS", "all"),
        ("FRAMES_LABELS_RATE", "many"),
        ("FRAMES_MAXLEN_EXACT", "maybe"),
    ],
)
def test_bad_frames_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} is invalid"):
        FramesSettings.from_env(Env({name: value}))


async def test_default_access_read_lets_a_plain_token_watch_but_not_upload(start_frames) -> None:
    app = await start_frames(FRAMES_DEFAULT_ACCESS="read")
    status, body = await app.post(form("site-a", "cam1"))
    assert (status, body["error"]["code"]) == (403, 103)
    status, _ = await app.post(form("site-a", "cam1"), labels=["site-a"])
    assert status == 200
    async with app.http.session.get(app.url("/labels"), headers=app.auth()) as resp:
        assert (await resp.json())["labels"] == ["site-a"]
    ws = await app.ws("/ws/stream/site-a/cam1")
    await ws.send_json({"action": "pull"})
    assert (await ws.receive(timeout=5)).data.endswith(JPEG)
    await ws.close()
    async with app.http.session.get(app.url("/metrics")) as resp:
        text = await resp.text()
    assert 'switchboard_streams_frames_stored_total{transport="http"} 1.0' in text
    assert 'switchboard_streams_frames_rejected_total{code="103"} 1.0' in text


def test_frames_key_prefix_set_but_empty_means_no_prefix() -> None:
    environ = {"FRAMES_KEY_PREFIX": ""}
    assert FramesSettings.from_env(Env(environ), environ).key_prefix == ""
    assert FramesSettings.from_env(Env({}), {}).key_prefix == "sb:"
    assert FramesSettings.from_env(Env({"REDIS_KEY_PREFIX": "x"})).key_prefix == "x:"


async def test_retention_trims_each_camera(start_frames, redis: Redis) -> None:
    app = await start_frames(FRAMES_MAXLEN="3", FRAMES_MAXLEN_EXACT="true")
    for n in range(6):
        await app.upload(frame=JPEG + bytes([n]))
    assert await redis.xlen(f"sb:stream_frame:{b64('site-a')}|{b64('cam1')}") == 3


BAD_FORMS = [
    ({"label": ""}, 400, 107, "missing field 'label'"),
    ({"key": ""}, 400, 107, "missing field 'key'"),
    ({"width": "wide"}, 400, 107, "field 'width' must be an integer"),
    ({"height": "-1"}, 400, 107, "field 'height' must be an integer >= 0"),
    ({"cone_polygons_json": "[1,"}, 400, 107, "field 'cone_polygons_json' is not valid JSON"),
    ({"frame": b""}, 400, 107, "the frame is empty"),
    ({"frame": b"x" * 2049}, 413, 106, "frame is over the 2048 byte limit"),
    ({"warnings_json": "w" * 1100}, 413, 106, "form fields are over the 1024 byte limit"),
]


@pytest.mark.parametrize(("change", "status", "code", "message"), BAD_FORMS)
async def test_post_frame_bad_input(
    start_frames, redis: Redis, change: dict, status: int, code: int, message: str
) -> None:
    app = await start_frames(FRAMES_MAX_FRAME_BYTES="2048", FRAMES_MAX_HEADER_BYTES="1024")
    first = await app.upload()
    fields = {"label": "site-a", "key": "cam1", "frame": JPEG[:100], **change}
    label, key, frame = fields.pop("label"), fields.pop("key"), fields.pop("frame")
    got_status, body = await app.post(form(label, key, frame, **fields))
    assert (got_status, body["error"]["code"], body["error"]["message"]) == (status, code, message)
    entries = await redis.xrange(f"sb:stream_frame:{b64('site-a')}|{b64('cam1')}")
    assert [e[0].decode() for e in entries] == [first]  # what was stored is untouched


async def test_post_frame_without_file_or_form(frames: Frames) -> None:
    data = form()
    data._fields = [f for f in data._fields if f[0]["name"] != "file"]
    status, body = await frames.post(data)
    assert (status, body["error"]) == (400, {"code": 107, "message": "missing field 'file'"})
    async with frames.http.session.post(
        frames.url("/frames"), json={"label": "a"}, headers=frames.auth()
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == "the body must be multipart/form-data"


async def test_labels_come_from_the_index_filtered_by_the_token(
    frames: Frames, redis: Redis
) -> None:
    await frames.upload("site-a", "cam1")
    await frames.upload("site-a", "cam2")
    await frames.upload("site-b", "cam1")
    await frames.upload("test-site", "cam1")  # the backend hid labels containing "test"
    # A stream written behind the API's back is not in the index, so it is not listed:
    # listing reads the index, it does not scan the keyspace.
    await redis.xadd(f"sb:stream_frame:{b64('hidden')}|{b64('cam')}", {"frame": b"x"})

    async def labels(**claims: object) -> list[str]:
        headers = frames.auth("u" + str(len(claims)) + str(time.monotonic()), **claims)
        async with frames.http.session.get(frames.url("/labels"), headers=headers) as resp:
            assert resp.status == 200
            return list((await resp.json())["labels"])

    assert await labels() == ["site-a", "site-b", "test-site"]
    assert await labels(labels=["site-a"]) == ["site-a"]
    assert await labels(labels={"read": ["site-b|cam*"], "write": []}) == ["site-b"]
    assert await labels(labels=[], scope="admin") == ["site-a", "site-b", "test-site"]
    assert await labels(labels=[]) == []


async def test_labels_index_forgets_expired_cameras(start_frames, redis: Redis) -> None:
    app = await start_frames(FRAMES_TTL_S="0.2")
    await app.upload("site-a", "cam1")
    await redis.zadd("sb:frames:labels", {"old-site": 1})  # written long ago: its stream expired
    async with app.http.session.get(app.url("/labels"), headers=app.auth()) as resp:
        assert (await resp.json())["labels"] == ["site-a"]
    assert await redis.zscore("sb:frames:labels", "old-site") is None


async def test_labels_is_rate_limited_per_user(start_frames) -> None:
    app = await start_frames(FRAMES_LABELS_RATE="3", FRAMES_LABELS_RATE_WINDOW_S="3600")
    alice = app.auth("alice")
    for _ in range(3):
        async with app.http.session.get(app.url("/labels"), headers=alice) as resp:
            assert resp.status == 200
    async with app.http.session.get(app.url("/labels"), headers=alice) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 3600
        body = await resp.json()
    assert body["error"]["code"] == 111
    assert body["error"]["message"].startswith("too many /labels requests")
    async with app.http.session.get(app.url("/labels"), headers=app.auth("bob")) as resp:
        assert resp.status == 200  # another user has a budget of their own


async def test_http_auth_and_permission_errors(frames: Frames) -> None:
    session = frames.http.session
    async with session.get(frames.url("/labels")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == 101
    expired = {"Authorization": f"Bearer {frames.make_token('alice', ttl=-60)}"}
    async with session.post(frames.url("/frames"), data=form(), headers=expired) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == 109
    status, body = await frames.post(form("site-b", "cam1"), labels=["site-a"])
    assert (status, body["error"]["code"]) == (403, 103)
    assert body["error"]["message"] == "token may not write 'site-b'/'cam1'"
    status, body = await frames.post(form("site-a", "cam1"), labels={"read": ["*"], "write": []})
    assert (status, body["error"]["code"]) == (403, 103)
    status, _ = await frames.post(form("site-a", "cam1"), labels=["site-a|cam1"])
    assert status == 200
    status, _ = await frames.post(form("site-a", "cam1"), labels=[], scope="admin")
    assert status == 200
    token = frames.make_token("alice", labels=["site-a"])
    async with session.post(frames.url(f"/frames?token={token}"), data=form()) as resp:
        assert resp.status == 200  # ?token= works as on the backend's sockets


async def test_a_frame_larger_than_aiohttps_default_body_limit_is_stored(
    frames: Frames, redis: Redis
) -> None:
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB: past aiohttp's 1 MiB client_max_size
    entry_id = await frames.upload("site-a", "cam1", big)
    entries = await redis.xrange(f"sb:stream_frame:{b64('site-a')}|{b64('cam1')}")
    assert entries[0][0].decode() == entry_id and entries[0][1][b"frame"] == big
