"""The run history: one JSON object per line, in simulated-time order.

Why: a history is the single source of truth for checkers, metrics, plots and
determinism. Each event is serialised canonically (sorted keys, no spaces) as
soon as it is recorded, and folded into a running SHA-256, so two runs are
identical exactly when their digests are. Times are integer microseconds of
simulated time (``t_us``) so no float formatting can differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path


def _dumps(event: dict) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class History:
    """Append-only list of events with a running digest."""

    def __init__(self, keep: bool = True) -> None:
        self._lines: list[str] = []
        self._events: list[dict] = []
        self._sha = hashlib.sha256()
        self.keep = keep
        self.count = 0

    def record(self, t: float, type: str, **fields) -> dict:  # noqa: A002 - "type" is the field name
        event = {"t_us": int(round(t * 1_000_000)), "type": type, **fields}
        line = _dumps(event)
        self._sha.update(line.encode("utf-8"))
        self._sha.update(b"\n")
        self.count += 1
        if self.keep:
            self._lines.append(line)
            self._events.append(event)
        return event

    @property
    def digest(self) -> str:
        return self._sha.hexdigest()

    @property
    def events(self) -> list[dict]:
        return self._events

    def write(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for line in self._lines:
                f.write(line)
                f.write("\n")

    def of_type(self, *types: str) -> Iterator[dict]:
        wanted = set(types)
        return (e for e in self._events if e["type"] in wanted)


def read_history(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def digest_of(events: Iterable[dict]) -> str:
    sha = hashlib.sha256()
    for e in events:
        sha.update(_dumps(e).encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()
