"""The service as a real process: restarted while a producer pushes with ack, nothing acked lost."""

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import websockets
from redis.asyncio import Redis

from tests.conftest import ServiceProcess
from tests.helpers import free_port, wait_until
from tests.streams.conftest import stored


async def _produce(
    url: str,
    token: str,
    acked: dict[str, bytes],
    stop: asyncio.Event,
    counter: list[int],
    closes: list[int | None],
) -> None:
    """Push batches of 3 with ack; reconnect after every close; record what was acknowledged."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(
                    url, headers={"Authorization": f"Bearer {token}"}
                ) as ws:
                    while not stop.is_set():
                        n = counter[0]
                        counter[0] += 3
                        datas = [b"entry-%d" % (n + k) for k in range(3)]
                        await ws.send_str(json.dumps([["cam", 7], ["cam", 14], ["cam", 21]]))
                        await ws.send_bytes(b"".join(d[:7].ljust(7, b".") for d in datas))
                        msg = await ws.receive(timeout=5)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            closes.append(ws.close_code)
                            break
                        for entry_id, data in zip(msg.data.split(","), datas, strict=True):
                            acked[entry_id] = data[:7].ljust(7, b".")
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                await asyncio.sleep(0.05)


async def _more_acks(acked: dict[str, bytes], n: int) -> None:
    target = len(acked) + n
    await wait_until(lambda: len(acked) >= target, timeout_s=20, what=f"{n} more acks")


async def test_restart_while_pushing_keeps_every_acked_entry(
    streams_process: Callable[..., Any], redis: Redis, make_token: Callable[..., str]
) -> None:
    port = free_port()
    service: ServiceProcess = await streams_process(port=port)
    url = f"ws://127.0.0.1:{port}/data/*/push?batch=true&ack=true"
    acked: dict[str, bytes] = {}
    stop, counter = asyncio.Event(), [0]
    closes: list[int | None] = []
    producer = asyncio.create_task(_produce(url, make_token("alice"), acked, stop, counter, closes))
    try:
        for how in ("term", "kill"):
            await _more_acks(acked, 60)
            if how == "term":
                service.proc.send_signal(signal.SIGTERM)
                # A graceful stop tells the producer to come back (1012) after its last ack.
                await wait_until(lambda: bool(closes), timeout_s=10, what="the producer closed")
                assert closes[0] == 1012, closes
            else:
                service.kill()
            await asyncio.to_thread(service.proc.wait, 15)
            service = await streams_process(port=port)
        await _more_acks(acked, 60)
    finally:
        stop.set()
        await asyncio.wait_for(producer, 10)
    in_redis = dict(await stored(redis, "cam"))
    assert len(acked) >= 180
    missing = {i: d for i, d in acked.items() if in_redis.get(i) != d}
    assert missing == {}


async def test_two_processes_share_streams_through_redis(
    streams_process: Callable[..., Any], redis: Redis, make_token: Callable[..., str]
) -> None:
    """A reader on one process gets what a producer pushes through another."""
    first: ServiceProcess = await streams_process()
    second: ServiceProcess = await streams_process()
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    before = (await redis.xadd("sb:data:cam", {"d": b"before"})).decode()
    pull = f"ws://127.0.0.1:{second.port}/data/cam/pull?last_entry_id={before}&count=10"
    push = f"ws://127.0.0.1:{first.port}/data/cam/push?ack=true"
    async with websockets.connect(pull, additional_headers=headers) as reader:
        async with websockets.connect(push, additional_headers=headers) as producer:
            await producer.send(b"across")
            entry_id = await producer.recv()
        header = json.loads(await asyncio.wait_for(reader.recv(), 5))
        assert header == [["cam", entry_id, 0]]
        assert await asyncio.wait_for(reader.recv(), 5) == b"across"
