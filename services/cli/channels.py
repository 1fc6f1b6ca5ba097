"""`switchboard subscribe|history|presence`: the native protocol through the Python client.

Each command connects to the gateway (`SWITCHBOARD_URL`, default http://127.0.0.1:5001) with a
token minted from the local key (`--as USER`), like `publish`. `subscribe` prints one JSON line
per publication until interrupted (or `--count` of them), resuming across reconnects.
"""

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .output import CliError, gateway_url, out

CLI_USER = "switchboard-cli"


def add_parsers(commands: Any) -> None:
    subscribe = commands.add_parser("subscribe", help="print a channel's publications (JSON lines)")
    subscribe.add_argument("channel")
    subscribe.add_argument("--count", type=int, default=0, help="exit after this many (0: never)")
    subscribe.add_argument(
        "--since", metavar="OFFSET:EPOCH", help="start after this position (what history prints)"
    )
    history = commands.add_parser("history", help="print a channel's history (oldest first)")
    history.add_argument("channel")
    history.add_argument("--limit", type=int, help="the last N publications")
    presence = commands.add_parser("presence", help="who is subscribed to a channel")
    presence.add_argument("channel")
    for parser in (subscribe, history, presence):
        parser.add_argument("--as", dest="user", default=CLI_USER, help="the token's user (sub)")
        parser.add_argument("--json", action="store_true", help="print raw JSON")


def run(args: argparse.Namespace, environ: Mapping[str, str], mint: Callable[..., str]) -> None:
    """Run one of the three commands; a Switchboard error becomes a CliError line."""
    from switchboard_client import Switchboard, SwitchboardError

    url = gateway_url(environ).replace("http", "ws", 1) + "/ws"
    token = mint(environ, {"sub": args.user}, 3600.0)
    commands: dict[str, Callable[[Switchboard, argparse.Namespace], Awaitable[None]]] = {
        "subscribe": _subscribe,
        "history": _history,
        "presence": _presence,
    }

    async def main() -> None:
        sb = Switchboard(url, token=token, max_reconnect_delay_s=5.0)
        try:
            await sb.connect()
            await commands[args.command](sb, args)
        finally:
            await sb.close()  # also when the connect was refused: no unclosed session

    try:
        asyncio.run(main())
    except SwitchboardError as exc:
        raise CliError(f"{exc.message} (code {exc.code})") from None
    except OSError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    except KeyboardInterrupt:
        pass


async def _subscribe(sb: Any, args: argparse.Namespace) -> None:
    since = None
    if args.since:
        offset, sep, epoch = args.since.rpartition(":")
        if not sep or not offset:
            raise CliError(f"--since {args.since!r}: expected OFFSET:EPOCH")
        since = {"offset": offset, "epoch": epoch}
    sub = await sb.subscribe(
        args.channel,
        since=since,
        on_recovery_failed=lambda info: sys.stderr.write(
            f"switchboard subscribe: publications were lost while disconnected ({info.channel})\n"
        ),
    )
    seen = 0
    async for pub in sub:
        line: dict[str, Any] = {"channel": pub.channel, "offset": pub.offset, "data": pub.data}
        if pub.event:
            line["event"] = pub.event
        out(json.dumps(line, ensure_ascii=False))
        seen += 1
        if args.count and seen >= args.count:
            return


async def _history(sb: Any, args: argparse.Namespace) -> None:
    result = await sb.history(args.channel, limit=args.limit)
    if args.json:
        out(json.dumps(result, ensure_ascii=False))
        return
    for pub in result["publications"]:
        out(json.dumps({"offset": pub["offset"], "data": pub["data"]}, ensure_ascii=False))
    sys.stderr.write(f"position {result['offset']}:{result['epoch']}\n")


async def _presence(sb: Any, args: argparse.Namespace) -> None:
    clients = await sb.presence(args.channel)
    if args.json:
        out(json.dumps(clients, ensure_ascii=False))
        return
    for client, info in sorted(clients.items(), key=lambda item: item[1].get("user", "")):
        name = f"  {info['name']}" if info.get("name") else ""
        out(f"{info.get('user', '?')}  {client}{name}")
