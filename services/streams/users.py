"""The users file behind `POST /token`, and `switchboard users add|remove|list`.

One user per line, `#` starts a comment:

    NAME:pbkdf2_sha256$ITERATIONS$SALT$HASH

SALT and HASH are unpadded URL-safe base64; HASH is PBKDF2-HMAC-SHA256 of the UTF-8 password
with that salt (16 random bytes) and iteration count. A name may not contain `:` or whitespace.
The file is read again when its modification time changes, so `users add` needs no restart.
"""

import argparse
import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
SALT_BYTES = 16
# Verified when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY = (
    f"{ALGORITHM}${ITERATIONS}$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)


class UsersFileError(ValueError):
    """The users file or a name in it is malformed."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, encoded: str) -> bool:
    """Constant-time comparison of `password` against a `pbkdf2_sha256$…` hash."""
    try:
        algorithm, iterations, salt, expected = encoded.split("$")
        if algorithm != ALGORITHM:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
        return hmac.compare_digest(digest, _unb64(expected))
    except ValueError:
        return False


def check_name(name: str) -> str:
    if not name or ":" in name or any(c.isspace() for c in name) or len(name) > 128:
        raise UsersFileError(f"invalid user name {name!r}: 1-128 characters, no ':' or spaces")
    return name


def parse(text: str) -> dict[str, str]:
    """Name -> encoded hash."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not encoded.startswith(ALGORITHM + "$") or encoded.count("$") != 3:
            raise UsersFileError(f"line {number}: expected NAME:{ALGORITHM}$ITER$SALT$HASH")
        users[check_name(name)] = encoded
    return users


def load(path: str | Path) -> dict[str, str]:
    try:
        return parse(Path(path).read_text())
    except FileNotFoundError:
        return {}


def save(path: str | Path, users: dict[str, str]) -> None:
    """Write atomically (temp file + rename), readable by the owner only."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{name}:{encoded}\n" for name, encoded in sorted(users.items()))
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write("# switchboard streams users: NAME:pbkdf2_sha256$ITER$SALT$HASH\n" + body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(path: str | Path, name: str, password: str, *, iterations: int = ITERATIONS) -> None:
    """Add `name` or replace its password."""
    if not password:
        raise UsersFileError("empty password")
    users = load(path)
    users[check_name(name)] = hash_password(password, iterations=iterations)
    save(path, users)


def remove_user(path: str | Path, name: str) -> bool:
    users = load(path)
    if users.pop(name, None) is None:
        return False
    save(path, users)
    return True


class UsersFile:
    """The users file as the service reads it: reloaded when its mtime or size changes."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, str] = {}

    def _current(self) -> dict[str, str]:
        if not self._path:
            return {}
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._users = None, {}
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._users = load(self._path)
            self._stamp = stamp
        return self._users

    def verify(self, name: str, password: str) -> bool:
        """True when the password is right; as slow for unknown names as for known ones."""
        encoded = self._current().get(name)
        ok = check_password(password, encoded or _DUMMY)
        return ok and encoded is not None


def _read_password(prompt: bool) -> str:
    if prompt and sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != first:
            raise UsersFileError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"switchboard users: {text}\n")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """`switchboard users [--file PATH] add NAME | remove NAME | list`.

    The file defaults to `STREAMS_USERS_FILE`. `add` reads the password from a prompt on a
    terminal, else the first line of stdin.
    """
    parser = argparse.ArgumentParser(prog="switchboard users", description=main.__doc__)
    parser.add_argument("--file", default=environ.get("STREAMS_USERS_FILE", ""))
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user or change its password")
    add.add_argument("name")
    remove = actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    actions.add_parser("list", help="print the user names")
    args = parser.parse_args(argv)
    if not args.file:
        _err("no users file: pass --file or set STREAMS_USERS_FILE")
        return 2
    try:
        if args.action == "add":
            check_name(args.name)
            add_user(args.file, args.name, _read_password(prompt=True))
            _out(f"user {args.name} saved in {args.file}")
        elif args.action == "remove":
            if not remove_user(args.file, args.name):
                _err(f"no user {args.name!r}")
                return 1
            _out(f"user {args.name} removed")
        else:
            for name in sorted(load(args.file)):
                _out(name)
    except (UsersFileError, OSError) as exc:
        _err(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
