"""What every CLI command shares: the one-line error, stdout, and JSON over HTTP."""

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

DEFAULT_GATEWAY_URL = "http://127.0.0.1:5001"
DEFAULT_ROOMS_URL = "http://127.0.0.1:5002"
DEFAULT_STREAMS_URL = "http://127.0.0.1:7890"


class CliError(Exception):
    """A failure reported as one line on stderr."""


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def gateway_url(environ: Mapping[str, str]) -> str:
    return (environ.get("SWITCHBOARD_URL") or DEFAULT_GATEWAY_URL).rstrip("/")


def rooms_url(environ: Mapping[str, str]) -> str:
    return (environ.get("SWITCHBOARD_ROOMS_URL") or DEFAULT_ROOMS_URL).rstrip("/")


def streams_url(environ: Mapping[str, str]) -> str:
    return (environ.get("SWITCHBOARD_STREAMS_URL") or DEFAULT_STREAMS_URL).rstrip("/")


def http_json(
    method: str, url: str, token: str, body: Any = None, *, what: str, timeout_s: float = 10.0
) -> Any:
    """One JSON request; any failure is a CliError naming `what` and the server's message."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = _message(exc.read()) or exc.reason
        raise CliError(f"{what} failed: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"{what} failed: cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"{what} failed: {url}: {exc}") from None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise CliError(f"{what} failed: {url} answered something that is not JSON") from None


def _message(raw: bytes) -> str:
    """The `message` of an error body, or the body itself."""
    text = raw.decode(errors="replace").strip()
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict) and "message" in error:
            return f"{error['message']} (code {error.get('code')})"
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return text
