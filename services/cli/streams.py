"""`switchboard streams list|push|pull`: the streams service's data streams (PTG's protocol).

`push ID FILE...` sends each file as one entry over `/data/{ID}/push?batch=true&ack=true`, in
batches (a JSON list of start offsets, then the concatenated bytes) and waits for
every batch's ack. `pull ID` reads `/data/{ID}/pull` with credit flow control (`ack=true`) and
prints one JSON line per entry, writing the bytes under `--out` when given. Both show a
progress line on a terminal.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from .output import CliError, http_json, out, streams_url

BATCH_BYTES = 8 * 1024 * 1024  # per push batch, and at most this many files:
BATCH_FILES = 100


def add_parsers(commands: Any) -> None:
    streams = commands.add_parser("streams", help="list, push to and pull from data streams")
    streams.add_argument("--json", action="store_true", help="print raw JSON")
    actions = streams.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every stream with its length and last entry")
    push = actions.add_parser("push", help="push files to a stream, one entry each")
    push.add_argument("stream")
    push.add_argument("files", nargs="+", type=Path, metavar="FILE")
    pull = actions.add_parser("pull", help="read a stream's entries (JSON lines)")
    pull.add_argument("stream")
    pull.add_argument("--since", default="0", help="after this entry id: 0 (all), $ (new only)")
    pull.add_argument("--limit", type=int, default=0, help="stop after this many (0: never)")
    pull.add_argument("--timeout", type=float, default=0.0, help="stop after so long idle (s)")
    pull.add_argument("--out", type=Path, help="write each entry's bytes to OUT/<stream>/<id>")
    for parser in (push, pull):
        parser.add_argument("--as", dest="user", default="switchboard-cli", help="token user")


def run(args: argparse.Namespace, environ: Mapping[str, str], mint: Callable[..., str]) -> None:
    token = mint(environ, {"sub": getattr(args, "user", "switchboard-cli")}, 3600.0)
    base = streams_url(environ)
    if args.action == "list":
        _list(base, token, as_json=args.json)
        return
    job = _push(base, token, args) if args.action == "push" else _pull(base, token, args)
    try:
        asyncio.run(job)
    except aiohttp.ClientError as exc:
        raise CliError(f"cannot reach {base}: {exc}") from None
    except KeyboardInterrupt:
        pass


def _list(base: str, token: str, *, as_json: bool) -> None:
    streams = http_json("GET", f"{base}/streams?info=true", token, what="streams list")
    if as_json:
        out(json.dumps(streams, ensure_ascii=False))
        return
    out(f"{'STREAM':<32}{'ENTRIES':>10}  LAST ENTRY")
    for info in streams:
        if isinstance(info, str):
            out(info)
            continue
        last = info.get("last-entry") or "-"
        out(f"{info.get('sid', '?'):<32}{info.get('length', 0):>10}  {last}")


def _ws_url(base: str, path: str, token: str, **query: str) -> str:
    query["token"] = token
    return base.replace("http", "ws", 1) + path + "?" + urllib.parse.urlencode(query)


class Progress:
    """One line on stderr, rewritten at most ten times a second; silent when not a terminal."""

    def __init__(self, verb: str, total: int = 0) -> None:
        self.verb, self.total = verb, total
        self.count = self.bytes = 0
        self.started = self._shown = time.monotonic()
        self.live = sys.stderr.isatty()

    def add(self, entries: int, size: int) -> None:
        self.count += entries
        self.bytes += size
        if self.live and time.monotonic() - self._shown >= 0.1:
            self._shown = time.monotonic()
            self._show()

    def _show(self, end: str = "") -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        of = f"/{self.total}" if self.total else ""
        rate = self.bytes / elapsed / 1e6
        line = f"{self.verb} {self.count}{of} entries, {self.bytes / 1e6:.1f} MB, {rate:.1f} MB/s"
        sys.stderr.write(f"\r{line}{end}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.live:
            self._show("\n")


async def _push(base: str, token: str, args: argparse.Namespace) -> None:
    files: list[Path] = args.files
    for path in files:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    url = _ws_url(base, f"/data/{urllib.parse.quote(args.stream, safe='')}/push", token,
                  batch="true", ack="true")  # fmt: skip
    progress = Progress("pushed", len(files))
    ids: list[str] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for batch in _batches(files):
            blobs = [path.read_bytes() for path in batch]
            # Start offsets: they begin with 0, which tells them apart from end offsets even
            # when the first entry is empty (end offsets would then begin with 0 too).
            starts, total = [], 0
            for blob in blobs:
                starts.append(total)
                total += len(blob)
            await ws.send_str(json.dumps(starts))
            await ws.send_bytes(b"".join(blobs))
            ids += _ack(await ws.receive(), len(blobs))
            progress.add(len(blobs), total)
    progress.done()
    if args.json:
        out(json.dumps({"stream": args.stream, "ids": ids}))
    else:
        out(f"pushed {len(ids)} entries to {args.stream}: {ids[0]} .. {ids[-1]}")


def _batches(files: list[Path]) -> list[list[Path]]:
    batches: list[list[Path]] = [[]]
    size = 0
    for path in files:
        length = path.stat().st_size
        if batches[-1] and (size + length > BATCH_BYTES or len(batches[-1]) >= BATCH_FILES):
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += length
    return batches


def _ack(msg: aiohttp.WSMessage, expected: int) -> list[str]:
    """The comma-joined entry ids of an ack, or the server's error as a CliError."""
    if msg.type is aiohttp.WSMsgType.TEXT:
        text = msg.data
        if text.startswith("{"):
            raise CliError(_error_text(text))
        ids: list[str] = str(text).split(",")
        if len(ids) == expected:
            return ids
        raise CliError(f"the server acked {len(ids)} entries instead of {expected}")
    raise CliError(f"the server closed the push ({_close(msg)})")


async def _pull(base: str, token: str, args: argparse.Namespace) -> None:
    query = {"last_entry_id": args.since, "count": "100", "ack": "true", "latest": "false"}
    if args.timeout:
        query["timeout"] = str(int(args.timeout * 1000))
    url = _ws_url(base, f"/data/{urllib.parse.quote(args.stream, safe='')}/pull", token, **query)
    progress = Progress("pulled")
    seen = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        while not args.limit or seen < args.limit:
            header = await ws.receive()
            if header.type is not aiohttp.WSMsgType.TEXT:
                if header.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    if ws.close_code not in (1000, None):
                        raise CliError(f"the server closed the pull ({_close(header)})")
                    break  # the stream stayed idle for --timeout
                raise CliError(f"unexpected {header.type.name} frame")
            if header.data.startswith("{"):
                raise CliError(_error_text(header.data))
            body = await ws.receive_bytes()
            entries = json.loads(header.data)
            for index, (sid, entry_id, start) in enumerate(entries):
                end = entries[index + 1][2] if index + 1 < len(entries) else len(body)
                blob = body[start:end]
                if args.out is not None:
                    target = args.out / sid / entry_id
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(blob)
                out(json.dumps({"stream": sid, "id": entry_id, "size": len(blob)}))
                seen += 1
                if args.limit and seen >= args.limit:
                    break
            progress.add(len(entries), len(body))
            await ws.send_bytes(b"")  # credit for the next batch
    progress.done()


def _error_text(text: str) -> str:
    try:
        error = json.loads(text)["error"]
        return f"{error['message']} (code {error['code']})"
    except (ValueError, KeyError, TypeError):
        return text


def _close(msg: aiohttp.WSMessage) -> str:
    return f"close code {msg.data}" + (f": {msg.extra}" if msg.extra else "")
