"""Gateway settings, read once from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.channels import Namespaces
from services.common.settings import (
    Env,
    JwtSettings,
    RedisSettings,
    SettingsError,
    parse_bool,
    parse_port,
    positive,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may use; each overflow has its own error or close code."""

    max_message_bytes: int = 1024 * 1024
    max_subscriptions: int = 128
    max_connections_per_user: int = 64
    max_rpc_in_flight: int = 16  # rpc calls one connection may await at once (error 106)
    commands_per_s: float = 50.0
    command_burst: int = 100
    outbox_max_bytes: int = 4 * 1024 * 1024
    outbox_max_frames: int = 100_000
    connect_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Env) -> "Limits":
        return cls(
            max_message_bytes=env.get("GATEWAY_MAX_MESSAGE_BYTES", positive(int), 1024 * 1024),
            max_subscriptions=env.get("GATEWAY_MAX_SUBSCRIPTIONS", positive(int), 128),
            max_connections_per_user=env.get("GATEWAY_MAX_CONNECTIONS_PER_USER", positive(int), 64),
            max_rpc_in_flight=env.get("GATEWAY_MAX_RPC_IN_FLIGHT", positive(int), 16),
            commands_per_s=env.get("GATEWAY_COMMANDS_PER_S", positive(float), 50.0),
            command_burst=env.get("GATEWAY_COMMAND_BURST", positive(int), 100),
            outbox_max_bytes=env.get("GATEWAY_OUTBOX_MAX_BYTES", positive(int), 4 * 1024 * 1024),
            outbox_max_frames=env.get("GATEWAY_OUTBOX_MAX_FRAMES", positive(int), 100_000),
            connect_timeout_s=env.get("GATEWAY_CONNECT_TIMEOUT_S", positive(float), 10.0),
        )


@dataclass(frozen=True, slots=True)
class ZouSettings:
    """The Socket.IO endpoint for Kitsu and gazu, and the bridge from Zou's publisher."""

    bridge: bool = True  # read Zou's emits from Redis pub/sub (ZOU_BRIDGE)
    bridge_channel: str = "flask-socketio"  # Flask-SocketIO's default channel
    # Zou sends every event to every user; with this on, a token listing `projects` only
    # receives the events of those projects (and events without a project).
    project_scoping: bool = False
    # Preview rooms: when set, Zou's REST API (`GET {url}/data/playlists/{id}` with the user's
    # token) says who may open or join a room; else every authenticated user may.
    room_access_url: str = ""

    @classmethod
    def from_env(cls, env: Env) -> "ZouSettings":
        return cls(
            bridge=env.get("ZOU_BRIDGE", parse_bool, True),
            bridge_channel=env.get("ZOU_BRIDGE_CHANNEL", str, "flask-socketio"),
            project_scoping=env.get("ZOU_PROJECT_SCOPING", parse_bool, False),
            room_access_url=env.get("ROOM_ACCESS_URL", str, ""),
        )


@dataclass(frozen=True, slots=True)
class RoomLinkSettings:
    """How the gateway talks to the rooms service (`room.*` ops)."""

    timeout_s: float = 5.0  # a room command unanswered this long gets error 108
    heartbeat_s: float = 3.0  # how often this gateway renews its members' deadlines
    member_ttl_s: float = 10.0  # a member not renewed this long is removed (gateway died)
    max_rooms: int = 32  # rooms one connection may be in (error 106)

    @classmethod
    def from_env(cls, env: Env) -> "RoomLinkSettings":
        settings = cls(
            timeout_s=env.get("GATEWAY_ROOM_TIMEOUT_S", positive(float), 5.0),
            heartbeat_s=env.get("GATEWAY_ROOM_HEARTBEAT_S", positive(float), 3.0),
            member_ttl_s=env.get("GATEWAY_ROOM_MEMBER_TTL_S", positive(float), 10.0),
            max_rooms=env.get("GATEWAY_MAX_ROOMS", positive(int), 32),
        )
        if settings.member_ttl_s < 2 * settings.heartbeat_s:
            raise SettingsError(
                "GATEWAY_ROOM_MEMBER_TTL_S is invalid: use at least twice GATEWAY_ROOM_HEARTBEAT_S"
            )
        return settings


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str
    port: int
    redis: RedisSettings
    jwt: JwtSettings
    namespaces: Namespaces
    limits: Limits
    heartbeat_s: float
    shutdown_timeout_s: float
    node_report_s: float
    rpc_timeout_s: float
    log_level: str
    log_json: bool
    zou: ZouSettings = ZouSettings()
    rooms: RoomLinkSettings = RoomLinkSettings()
    demo: bool = False  # /demo and POST /demo/token (docs/demo.md): never on a public deployment

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "GatewaySettings":
        env = Env(environ)
        # Zou names the event stream's address EVENT_STREAM_HOST/PORT; ours win when both are set.
        host = env.get("EVENT_STREAM_HOST", str, "0.0.0.0")
        port = env.get("EVENT_STREAM_PORT", parse_port, 5001)
        return cls(
            host=env.get("GATEWAY_HOST", str, host),
            port=env.get("GATEWAY_PORT", parse_port, port),
            redis=RedisSettings.from_env(env),
            jwt=JwtSettings.from_env(env),
            namespaces=Namespaces.load(env.raw("SWITCHBOARD_CHANNELS")),
            limits=Limits.from_env(env),
            heartbeat_s=env.get("GATEWAY_HEARTBEAT_S", positive(float), 25.0),
            shutdown_timeout_s=env.get("GATEWAY_SHUTDOWN_TIMEOUT_S", positive(float), 20.0),
            node_report_s=env.get("GATEWAY_NODE_REPORT_S", positive(float), 2.0),
            rpc_timeout_s=env.get("GATEWAY_RPC_TIMEOUT_S", positive(float), 10.0),
            log_level=env.get("LOG_LEVEL", str, "INFO"),
            log_json=env.get("LOG_JSON", parse_bool, True),
            zou=ZouSettings.from_env(env),
            rooms=RoomLinkSettings.from_env(env),
            demo=env.get("GATEWAY_DEMO", parse_bool, False),
        )
