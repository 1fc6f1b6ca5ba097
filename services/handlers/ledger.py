"""Per-handler and per-task counts for `GET /handlers` (Prometheus has the same as metrics;
this keeps the last error, which a metric cannot)."""

import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Counts:
    runs: int = 0  # attempts that ended, whatever the outcome
    failures: int = 0  # attempts that raised or timed out
    dead_lettered: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "failures": self.failures,
            "dead_lettered": self.dead_lettered,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


class Ledger:
    """Counts by handler id or task name; they survive reloads (an id names the same code)."""

    def __init__(self) -> None:
        self._counts: dict[str, Counts] = {}

    def get(self, name: str) -> Counts:
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = Counts()
        return counts

    def ok(self, name: str) -> None:
        self.get(name).runs += 1

    def failed(self, name: str, error: str) -> None:
        counts = self.get(name)
        counts.runs += 1
        counts.failures += 1
        counts.last_error = error
        counts.last_error_at = time.time()

    def dead_lettered(self, name: str) -> None:
        self.get(name).dead_lettered += 1
