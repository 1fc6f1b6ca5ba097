"""Channel names, namespaces from the SWITCHBOARD_CHANNELS file, and who may subscribe."""

import json
from pathlib import Path
from typing import Any

import pytest

from services.common.channels import (
    DEFAULT_NAMESPACES,
    MAX_CHANNEL_LENGTH,
    Namespace,
    Namespaces,
    split_channel,
)
from services.common.errors import ErrorCode, PermissionDenied, UnknownChannel
from services.common.settings import SettingsError


def write_json(tmp_path: Path, namespaces: Any) -> str:
    path = tmp_path / "channels.json"
    path.write_text(json.dumps({"namespaces": namespaces}))
    return str(path)


def load_error(tmp_path: Path, namespaces: Any) -> str:
    with pytest.raises(SettingsError) as info:
        Namespaces.load(write_json(tmp_path, namespaces))
    message = str(info.value)
    assert message.startswith("SWITCHBOARD_CHANNELS is invalid"), message
    return message


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("news", ("", "news")),
        ("chat:room1", ("chat", "room1")),
        ("user:#alice,bob", ("user", "#alice,bob")),
        ("a:b:c", ("a", "b:c")),
        ("x" * MAX_CHANNEL_LENGTH, ("", "x" * MAX_CHANNEL_LENGTH)),
        ("chat:été", ("chat", "été")),
    ],
)
def test_valid_channel_names(channel: str, expected: tuple[str, str]) -> None:
    assert split_channel(channel) == expected


@pytest.mark.parametrize(
    "channel",
    [
        "",
        "x" * (MAX_CHANNEL_LENGTH + 1),
        "a b",
        "chat: room",
        "chat:room\n",
        "tab\there",
        "nbsp\u00a0here",
        "bell\x07",
        "{news}",
        "chat:{room}",
        "chat:",
        None,
        5,
        ["news"],
    ],
)
def test_invalid_channel_names_are_unknown_channels(channel: Any) -> None:
    with pytest.raises(UnknownChannel) as info:
        split_channel(channel)
    assert info.value.code == ErrorCode.UNKNOWN_CHANNEL
    with pytest.raises(UnknownChannel):
        Namespaces(DEFAULT_NAMESPACES).of(channel)


def test_unknown_namespace() -> None:
    with pytest.raises(UnknownChannel, match="'nope'"):
        Namespaces(DEFAULT_NAMESPACES).of("nope:x")


def test_default_namespaces() -> None:
    namespaces = Namespaces.load("")
    default = namespaces.of("news")
    assert (default.subscribe, default.history_size, default.history_ttl_s) == (("any",), 100, 600)
    assert default.presence is True and default.allow_publish is False
    assert namespaces.of("user:#alice").subscribe == ("owner", "claim", "token")
    assert namespaces.of("user:#alice").presence is False
    assert namespaces.of("zou:events").subscribe == ("any",)


# -- who may subscribe ------------------------------------------------------------------------


def allowed(namespace: Namespace, channel: str, user: str, **kw: Any) -> bool:
    options: dict[str, Any] = {"claimed": (), "channel_token_ok": False, **kw}
    try:
        Namespaces.check_subscribe(namespace, channel, user=user, **options)
    except PermissionDenied as exc:
        assert exc.code == ErrorCode.PERMISSION_DENIED
        return False
    return True


def test_owner_rule() -> None:
    owner = Namespace(name="user", subscribe=("owner",))
    assert allowed(owner, "user:#alice", "alice")
    assert not allowed(owner, "user:#alice", "bob")
    assert allowed(owner, "user:#alice,bob", "alice")
    assert allowed(owner, "user:#alice,bob", "bob")
    assert not allowed(owner, "user:#alice,bob", "carol")
    assert not allowed(owner, "user:#alice,bob", "alice,bob")
    assert not allowed(owner, "user:#alicex", "alice")
    assert not allowed(owner, "user:alice", "alice")  # no '#': nobody owns it
    assert not allowed(owner, "user:#", "alice")


def test_claim_rule_matches_names_and_patterns() -> None:
    claim = Namespace(name="secret", subscribe=("claim",))
    assert allowed(claim, "secret:a", "alice", claimed=("secret:a",))
    assert allowed(claim, "secret:a", "alice", claimed=("secret:*",))
    assert not allowed(claim, "secret:b", "alice", claimed=("secret:a",))
    assert not allowed(claim, "secret:a", "alice", claimed=("SECRET:*",))  # case matters
    assert not allowed(claim, "secret:a", "alice")


def test_token_rule_and_any_rule() -> None:
    token = Namespace(name="tok", subscribe=("token",))
    assert allowed(token, "tok:a", "alice", channel_token_ok=True)
    assert not allowed(token, "tok:a", "alice")
    # Rules are alternatives: a claim does not open a token-only namespace.
    assert not allowed(token, "tok:a", "alice", claimed=("tok:*",))
    assert allowed(Namespace(name="x"), "x:a", "anyone")


# -- the file ---------------------------------------------------------------------------------


def test_json_file_overrides_and_extends(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        {
            "chat": {
                "subscribe": ["any"],
                "history_size": 1000,
                "history_ttl_s": 3600.5,
                "presence": True,
                "join_leave": True,
                "allow_publish": True,
            },
            "user": {"history_size": 0},
            "secret": {"subscribe": "claim"},
        },
    )
    namespaces = Namespaces.load(path)
    chat = namespaces.of("chat:x")
    assert (chat.history_size, chat.history_ttl_ms, chat.join_leave) == (1000, 3600500, True)
    user = namespaces.of("user:#a")
    assert user.history_size == 0 and not user.has_history
    assert user.subscribe == ("owner", "claim", "token")  # other options keep the built-in
    assert namespaces.of("secret:x").subscribe == ("claim",)
    assert namespaces.of("news").history_size == 100


def test_toml_file_works(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text(
        "[namespaces.chat]\n"
        'subscribe = ["owner", "token"]\n'
        "history_size = 10\n"
        "presence = false\n"
        "allow_publish = true\n"
    )
    chat = Namespaces.load(str(path)).of("chat:#alice")
    assert (chat.subscribe, chat.history_size, chat.presence) == (("owner", "token"), 10, False)
    assert chat.allow_publish is True


def test_missing_file_names_its_path(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")
    with pytest.raises(SettingsError, match="SWITCHBOARD_CHANNELS is invalid") as info:
        Namespaces.load(path)
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [("bad.json", "{nope"), ("bad.toml", "[namespaces\n"), ("list.json", "[1]")],
)
def test_unreadable_file_is_refused(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SettingsError, match="SWITCHBOARD_CHANNELS is invalid"):
        Namespaces.load(str(path))


def test_namespaces_must_be_a_table(tmp_path: Path) -> None:
    message = load_error(tmp_path, ["chat"])
    assert "'namespaces'" in message


def test_unknown_option_names_namespace_and_option(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"chat": {"history": 10}})
    assert "namespace 'chat'" in message
    assert "unknown option 'history'" in message


def test_name_is_not_an_option(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"chat": {"name": "other"}})
    assert "namespace 'chat'" in message and "'name'" in message


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("history_size", "10"),
        ("history_size", 1.5),
        ("history_size", True),
        ("history_ttl_s", "60"),
        ("history_ttl_s", False),
        ("presence", 1),
        ("presence", "yes"),
        ("join_leave", None),
        ("allow_publish", "true"),
        ("presence_ttl_s", [60]),
    ],
)
def test_wrong_type_names_namespace_and_option(tmp_path: Path, option: str, value: Any) -> None:
    message = load_error(tmp_path, {"chat": {option: value}})
    assert "namespace 'chat'" in message
    assert f"{option} must be" in message


@pytest.mark.parametrize("option", ["history_size", "history_ttl_s", "presence_ttl_s"])
def test_negative_numbers_are_refused(tmp_path: Path, option: str) -> None:
    message = load_error(tmp_path, {"chat": {option: -1}})
    assert "namespace 'chat'" in message and option in message


@pytest.mark.parametrize(
    "rules", [["everyone"], ["any", "admins"], [], 5, [5], [["any"]], [None], {"any": True}]
)
def test_bad_subscribe_rules_name_namespace_and_option(tmp_path: Path, rules: Any) -> None:
    message = load_error(tmp_path, {"chat": {"subscribe": rules}})
    assert "namespace 'chat'" in message
    assert "subscribe must list some of" in message


def test_namespace_options_must_be_a_table(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"chat": True})
    assert "namespace 'chat'" in message
