"""The rpc contract between gateways and the handlers service.

A call is one entry of the stream `sb:rpc` (consumer group `handlers`) with one field `c`, the JSON
of `RpcCall`. The handlers service answers by PUBLISHing the JSON of a reply on the call's
`reply` channel (`sb:rpc:reply:<node>`, which the calling gateway subscribes to for good):
`{"req": ..., "result": ...}` or `{"req": ..., "error": {"code", "message"}}` with the codes of
services/common/errors.py (104 unknown method, 103 forbidden by `requires`, 114 timeout,
115 the task raised). A call whose `deadline` (ms since the epoch) has passed is not run: nobody
waits for its answer any more.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .compact_json import dumps
from .errors import ServiceError

CONSUMER_GROUP: Final = "handlers"
STREAM_MAXLEN: Final = 100_000


@dataclass(frozen=True, slots=True)
class RpcCall:
    req: str  # unique per calling gateway; echoed in the reply
    reply: str  # pub/sub channel for the answer
    method: str
    data: Any
    user: str
    client: str
    deadline: int  # ms since the epoch
    room: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)  # the caller's token claims

    def encode(self) -> str:
        return dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> "RpcCall":
        """Raise ValueError for an entry that is not a call (it is then dead-lettered)."""
        try:
            body = json.loads(raw)
            return cls(**body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed rpc call: {exc}") from None


def reply_ok(req: str, result: Any) -> str:
    return dumps({"req": req, "result": result})


def reply_error(req: str, error: ServiceError) -> str:
    return dumps({"req": req, "error": error.to_dict()})
