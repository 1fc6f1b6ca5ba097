"""Typed application-state keys for the streams service."""

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.common.auth import RevocationList, TokenVerifier

from .settings import StreamsSettings

settings_key = web.AppKey("settings", StreamsSettings)
redis_key = web.AppKey("redis", Redis)
registry_key = web.AppKey("registry", CollectorRegistry)
verifier_key = web.AppKey("verifier", TokenVerifier)
revocations_key = web.AppKey("revocations", RevocationList)


class StreamKeys:
    """Redis keys of the data streams: `<prefix><id>` and `<prefix>XMETA:<id>`, as on PTG.

    With the default prefix `sb:data:` a stream `main` lives at `sb:data:main` and its metadata
    at `sb:data:XMETA:main`; with an empty prefix the keys are PTG's own (`main`, `XMETA:main`).
    `<prefix>XINDEX` is a set of the stream ids written through this service (`GET /streams`).
    """

    __slots__ = ("index", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.index = f"{prefix}XINDEX"

    def data(self, stream: str) -> str:
        return f"{self.prefix}{stream}"

    def meta(self, stream: str) -> str:
        return f"{self.prefix}XMETA:{stream}"

    def wake(self, node: str) -> str:
        """A per-process stream the shared read loop also reads, so that it can be woken."""
        return f"{self.prefix}XWAKE:{node}"

    def stream_of(self, key: str) -> str:
        return key[len(self.prefix) :]
