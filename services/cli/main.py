"""The `switchboard` command: run the supervisor, talk to it, mint tokens, and use every service
(publish, subscribe, history, presence, rooms, streams, users).

Output goes to stdout (`--json` for scripts); any failure is one line on stderr and a non-zero
exit code (2 for usage).
"""

import argparse
import json
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.common.settings import Env, JwtSettings, SettingsError
from services.common.supervisor import (
    LOCK_FILE,
    SECRET_FILE,
    SOCKET_FILE,
    USERS_FILE,
    is_locked,
    run,
    state_dir_from_env,
)

from . import channels, rooms, streams
from .output import CliError, gateway_url, http_json, out

_TTL_RE = re.compile(r"^(\d+)([smhd]?)$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RESERVED_CLAIMS = frozenset({"sub", "scope", "exp", "iat"})


def parse_ttl(raw: str) -> float | None:
    """`30s`, `15m`, `1h`, `7d` or plain seconds; `0` or `never` means the token never expires."""
    value = raw.strip().lower()
    if value == "never":
        return None
    match = _TTL_RE.match(value)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid TTL {raw!r}: use 30s, 15m, 1h, 7d, 0 or never")
    seconds = int(match[1]) * _TTL_UNITS[match[2]]
    return None if seconds == 0 else float(seconds)


def parse_claim(raw: str) -> tuple[str, Any]:
    """`key=value`; the value is JSON when it parses as JSON (42, true, ["a"]), else a string."""
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid claim {raw!r}: expected key=value")
    if key in _RESERVED_CLAIMS:
        raise argparse.ArgumentTypeError(f"claim {key!r} is set by --sub, --scope or --ttl")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Switchboard real-time event server."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="start the supervisor in the foreground")

    ctl = commands.add_parser("ctl", help="talk to the running supervisor")
    ctl.add_argument("--json", action="store_true", help="print the raw JSON answer")
    ctl.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for an answer")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="state, pid, restarts and uptime of every process")
    stop = actions.add_parser("stop", help="stop the services, then Redis, then the supervisor")
    stop.add_argument("--no-wait", action="store_true", help="do not wait for the exit")
    restart = actions.add_parser("restart", help="restart one service")
    restart.add_argument("service")
    actions.add_parser("reload-handlers", help="make the handlers service reload its folder")

    token = commands.add_parser("token", help="print a JWT signed with the configured key")
    token.add_argument("--sub", required=True, help="the user (claim sub)")
    token.add_argument("--scope", action="append", default=[], help="publish, admin… (repeat)")
    token.add_argument("--ttl", type=parse_ttl, default=3600.0, help="30s, 15m, 1h, 7d, never")
    token.add_argument(
        "--claim", type=parse_claim, action="append", default=[], metavar="KEY=VALUE"
    )

    publish = commands.add_parser("publish", help="publish an event through the gateway API")
    publish.add_argument("channel")
    publish.add_argument("data", metavar="JSON", help="the event payload, as JSON")
    publish.add_argument("--event", help="the event name (handlers and Socket.IO use it)")
    channels.add_parsers(commands)
    rooms.add_parsers(commands)
    streams.add_parsers(commands)
    users = commands.add_parser(
        "users", help="users who may log in to the streams service (add, remove, list)"
    )
    users.add_argument("rest", nargs=argparse.REMAINDER, metavar="ACTION ...")
    return parser


# --- ctl -----------------------------------------------------------------------------------------


def control(state_dir: Path, request: dict[str, Any], *, timeout_s: float) -> Any:
    """Send one request on the control socket; return the `result` or raise CliError."""
    path = state_dir / SOCKET_FILE
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise CliError(f"no supervisor running (no control socket at {path})") from None
        except OSError as exc:
            raise CliError(f"cannot reach the supervisor at {path}: {exc.strerror}") from None
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline()
        except TimeoutError:
            raise CliError(f"the supervisor did not answer within {timeout_s:.0f}s") from None
        except OSError as exc:
            raise CliError(f"control socket error: {exc}") from None
    try:
        answer = json.loads(line)
    except ValueError:
        raise CliError("the supervisor closed the connection without an answer") from None
    if not answer.get("ok"):
        raise CliError(str(answer.get("error", "unknown error")))
    return answer.get("result")


def _format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def format_status(status: Mapping[str, Any]) -> str:
    redis = status["redis"]
    kind = "private" if redis.get("private") else "external"
    rows = dict(status["services"])
    if redis.get("private"):
        rows = {"redis": redis, **rows}
    width = max([len("SERVICE"), *map(len, rows)]) + 2
    lines = [
        f"supervisor pid {status['pid']}  state {status['state_dir']}"
        + ("  (stopping)" if status.get("stopping") else ""),
        f"redis {redis.get('url')} ({kind})",
        f"{'SERVICE':<{width}}{'STATE':<12}{'PID':<9}{'RESTARTS':<10}UPTIME",
    ]
    for name, row in rows.items():
        pid = row.get("pid") or "-"
        uptime = _format_uptime(row.get("uptime_s"))
        lines.append(f"{name:<{width}}{row['state']:<12}{pid!s:<9}{row['restarts']!s:<10}{uptime}")
    return "\n".join(lines)


def _wait_until_unlocked(state_dir: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while is_locked(state_dir / LOCK_FILE):
        if time.monotonic() > deadline:
            raise CliError(f"the supervisor is still running after {timeout_s:.0f}s")
        time.sleep(0.05)


def cmd_ctl(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    state_dir = state_dir_from_env(environ)
    request: dict[str, Any] = {"cmd": args.action}
    if args.action == "restart":
        request["service"] = args.service
    result = control(state_dir, request, timeout_s=args.timeout)
    if args.json:
        out(json.dumps(result))
    elif args.action == "status":
        out(format_status(result))
    elif args.action == "stop":
        out(f"stopping supervisor (pid {result['pid']})")
    elif args.action == "restart":
        out(f"restarted {result['service']} (pid {result['pid']})")
    else:
        out(f"sent SIGHUP to {result['service']} (pid {result['pid']})")
    if args.action == "stop" and not args.no_wait:
        # Children get `grace_s` each (in parallel), then Redis gets as long again.
        _wait_until_unlocked(state_dir, 2 * float(result["grace_s"]) + 10.0)
        if not args.json:
            out("stopped")


# --- token and publish ---------------------------------------------------------------------------


def jwt_settings(environ: Mapping[str, str]) -> JwtSettings:
    """JwtSettings from the environment; without SECRET_KEY, the key the supervisor generated."""
    env = dict(environ)
    secret_path = state_dir_from_env(environ) / SECRET_FILE
    if not env.get("SECRET_KEY") and secret_path.is_file():
        env["SECRET_KEY"] = secret_path.read_text().strip()
    try:
        return JwtSettings.from_env(Env(env))
    except SettingsError as exc:
        hint = ""
        if "SECRET_KEY" in str(exc) and not env.get("SECRET_KEY"):
            hint = f" (or run `switchboard run` once: it generates {secret_path})"
        raise CliError(f"configuration error: {exc}{hint}") from None


def mint(environ: Mapping[str, str], claims: Mapping[str, Any], ttl_s: float | None) -> str:
    # Imported here: it pulls in redis, which `ctl` does not need.
    from services.common.auth import mint_token

    try:
        return mint_token(jwt_settings(environ), claims, ttl_s=ttl_s)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_token(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    claims: dict[str, Any] = dict(args.claim)
    claims["sub"] = args.sub
    if args.scope:
        claims["scope"] = " ".join(args.scope)
    out(mint(environ, claims, args.ttl))


def cmd_publish(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise CliError(f"JSON argument is not valid JSON: {exc}") from None
    body: dict[str, Any] = {"channel": args.channel, "data": data}
    if args.event:
        body["event"] = args.event
    token = mint(environ, {"sub": "switchboard-cli", "scope": "publish"}, 60.0)
    answer = http_json("POST", gateway_url(environ) + "/api/publish", token, body, what="publish")
    out(json.dumps(answer))


def cmd_channels(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    channels.run(args, environ, mint)


def cmd_rooms(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    rooms.run(args, environ, mint)


def cmd_streams(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    streams.run(args, environ, mint)


def cmd_users(rest: Sequence[str], environ: Mapping[str, str]) -> int:
    """`switchboard users ...` is the streams service's own command line (its options included,
    which argparse would not pass through), on the file `switchboard run` gives the service
    unless STREAMS_USERS_FILE says otherwise."""
    from services.streams.users import main as users_main

    env = dict(environ)
    env.setdefault("STREAMS_USERS_FILE", str(state_dir_from_env(environ) / USERS_FILE))
    return users_main(list(rest), env)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["users"]:
        return cmd_users(argv[1:], environ)
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(environ)
    handlers = {
        "ctl": cmd_ctl,
        "token": cmd_token,
        "publish": cmd_publish,
        "subscribe": cmd_channels,
        "history": cmd_channels,
        "presence": cmd_channels,
        "rooms": cmd_rooms,
        "streams": cmd_streams,
    }
    try:
        handlers[args.command](args, environ)
    except CliError as exc:
        sys.stderr.write(f"switchboard {args.command}: {exc}\n")
        return 1
    return 0
