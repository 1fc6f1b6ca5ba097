"""`switchboard rooms list|get ID|delete ID`: the rooms service's operator API (admin token)."""

import argparse
import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from .output import http_json, out, rooms_url


def add_parsers(commands: Any) -> None:
    rooms = commands.add_parser("rooms", help="list, read or delete shared rooms")
    rooms.add_argument("--json", action="store_true", help="print raw JSON")
    actions = rooms.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every room with its version and member count")
    get = actions.add_parser("get", help="a room's state, people and members")
    get.add_argument("room")
    delete = actions.add_parser("delete", help="delete a room; its members are told")
    delete.add_argument("room")


def run(args: argparse.Namespace, environ: Mapping[str, str], mint: Callable[..., str]) -> None:
    token = mint(environ, {"sub": "switchboard-cli", "scope": "admin"}, 60.0)
    base = rooms_url(environ) + "/rooms"
    if args.action == "list":
        answer = http_json("GET", base, token, what="rooms list")
        if args.json:
            out(json.dumps(answer, ensure_ascii=False))
            return
        out(f"{'ROOM':<40}{'VERSION':>8}{'MEMBERS':>9}")
        for room in answer["rooms"]:
            out(f"{room['room']:<40}{room['version']:>8}{room['members']:>9}")
        return
    url = f"{base}/{urllib.parse.quote(args.room, safe='')}"
    if args.action == "delete":
        answer = http_json("DELETE", url, token, what="rooms delete")
        out(
            json.dumps(answer)
            if args.json
            else f"deleted {args.room} at version {answer['version']}"
        )
        return
    room = http_json("GET", url, token, what="rooms get")
    if args.json:
        out(json.dumps(room, ensure_ascii=False))
        return
    out(f"room {room['room']}  version {room['version']}  people {', '.join(room['people'])}")
    out(json.dumps(room["state"], ensure_ascii=False, indent=2))
    for member in room["members"]:
        out(f"  {member['user']}  {member['conn']}")
