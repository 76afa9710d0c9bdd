"""Exponential backoff with optional equal jitter: one rule for every retry loop
that is not a client submit (replication shipping/reading, audit workers).

Pure: the random generator is passed in, no clock is read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base_s * factor**(failures-1)`` capped at ``cap_s``;
    with an ``rng`` (a seeded ``random.Random`` passed in) "equal jitter": half
    fixed, half uniformly random."""

    base_s: float = 0.5
    cap_s: float = 30.0
    factor: float = 2.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        if failures <= 0:
            return 0.0
        d = min(self.cap_s, self.base_s * self.factor ** min(failures - 1, 64))
        if rng is not None:
            d = d / 2 + rng.random() * d / 2
        return d
