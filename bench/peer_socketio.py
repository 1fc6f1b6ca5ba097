"""The peer under test: python-socketio's AsyncServer on aiohttp and uvloop, Redis manager.

This is how a python-socketio deployment fans out across processes: every server listens on the
manager's Redis channel, and backends publish with `AsyncRedisManager(write_only=True).emit()`.
WebSocket transport only, so both systems are measured on the same transport.

Run: python -m bench.peer_socketio --port 8000 --redis redis://127.0.0.1:6379/0
"""

import argparse
import asyncio
import signal

import socketio  # type: ignore[import-untyped]  # no type hints upstream
import uvloop
from aiohttp import web


def create_app(redis_url: str, channel: str = "socketio") -> web.Application:
    """An aiohttp app with the Socket.IO server attached at /socket.io/.

    Clients of "/" enter rooms with `subscribe`; every client of "/events" gets the events
    emitted to that namespace (Zou's event stream). `channel` is the manager's Redis channel:
    python-socketio's default, or "flask-socketio" where Zou's API publishes.
    """
    sio = socketio.AsyncServer(
        client_manager=socketio.AsyncRedisManager(redis_url, channel=channel),
        async_mode="aiohttp",
        transports=["websocket"],
    )

    @sio.on("subscribe")  # type: ignore[untyped-decorator]  # python-socketio has no hints
    async def subscribe(sid: str, room: str) -> bool:
        # The return value is the ack: the load client waits for it before publishing.
        await sio.enter_room(sid, room)
        return True

    @sio.on("connect", namespace="/events")  # type: ignore[untyped-decorator]
    async def connect_events(sid: str, environ: dict[str, object], auth: object = None) -> bool:
        return True

    app = web.Application()
    sio.attach(app)
    return app


async def serve(host: str, port: int, redis_url: str, channel: str) -> None:
    runner = web.AppRunner(create_app(redis_url, channel), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="Redis URL of the manager")
    parser.add_argument("--channel", default="socketio", help="Redis channel of the manager")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.redis, args.channel))


if __name__ == "__main__":
    main()
