"""Which load client is lighter: the raw-asyncio `WsClient` or aiohttp's WebSocket client?

A blaster process sends fixed text frames as fast as the clients read them, either many frames
per write (how a coalescing server sends) or one frame per write (how python-socketio sends);
this process counts them with each client in turn and reports its own CPU time per frame.

Run: python -m bench.client_cost
"""

import argparse
import asyncio
import base64
import hashlib
import os

import aiohttp
import uvloop

from .harness import ServerProcess, free_port, python_argv, sample
from .wsclient import WS_GUID, Tally, WsClient, open_client

FRAME_DATA = b'{"push":"pub","channel":"bench:room0","offset":"","data":{"ts":0,"pad":"' + b"x" * 84
FRAME_DATA += b'"}}'


class _Counting(WsClient):
    marker = b'{"push":"pub"'
    probe_at, probe = 10, ord("u")


class _Blaster(asyncio.Protocol):
    """Answers one upgrade, then writes `frames` frames, `per_write` per write, flow-controlled."""

    def __init__(self, frames: int, per_write: int) -> None:
        self.frames, self.per_write = frames, per_write
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transport

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        if self.buf is None:
            return  # frames from the client after the upgrade: ignored
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in self.buf.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        self.buf = None  # type: ignore[assignment]  # upgraded
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        frame = bytes((0x81, 126)) + len(FRAME_DATA).to_bytes(2, "big") + FRAME_DATA
        chunk = frame * self.per_write
        assert self.transport is not None
        for _ in range(self.frames // self.per_write):
            await self.can_write.wait()
            self.transport.write(chunk)


async def _serve(port: int, frames: int, per_write: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Blaster(frames, per_write), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _raw(port: int, connections: int, frames: int) -> float:
    tally = Tally()
    clients = [_Counting(tally, "/") for _ in range(connections)]
    t0 = sample(os.getpid()).cpu_s
    await asyncio.gather(*(open_client(c, "127.0.0.1", port, "127.0.0.1") for c in clients))
    await tally.wait_for(connections * frames, timeout_s=120)
    cpu = sample(os.getpid()).cpu_s - t0
    for c in clients:
        c.close()
    return cpu


async def _aiohttp(port: int, connections: int, frames: int) -> float:
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.ws_connect(f"http://127.0.0.1:{port}/") as ws:
                seen = 0
                while seen < frames:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        seen += 1

        t0 = sample(os.getpid()).cpu_s
        await asyncio.gather(*(one() for _ in range(connections)))
        return sample(os.getpid()).cpu_s - t0


def measure(per_write: int, connections: int = 100, frames: int = 20_000) -> dict[str, float]:
    """Client CPU microseconds per frame for each client, against a fresh blaster process."""
    out = {}
    for name, run in (("raw", _raw), ("aiohttp", _aiohttp)):
        port = free_port()
        args = ["--serve", str(port), "--frames", str(frames), "--per-write", str(per_write)]
        server = ServerProcess("blaster", python_argv("-m", "bench.client_cost", *args), port)
        server.start()
        try:
            cpu_s = uvloop.run(run(port, connections, frames))
        finally:
            server.stop()
        out[name] = 1e6 * cpu_s / (connections * frames)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--per-write", type=int, default=100)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve(args.serve, args.frames, args.per_write))
        return
    print("client CPU per received frame, us (100 connections):")
    for per_write in (100, 1):
        frames = 20_000 if per_write > 1 else 2_000
        got = measure(per_write, frames=frames)
        print(
            f"  {per_write:>3} frame(s) per server write: "
            + ", ".join(f"{name} {us:.2f}" for name, us in got.items())
        )


if __name__ == "__main__":
    main()
