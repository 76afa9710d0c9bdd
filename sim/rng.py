"""Named, seeded random streams for the simulator.

Why: determinism. Every consumer of randomness (network latency, a client's
jitter, the nemesis) draws from its own stream derived from the run seed and a
stable name, so adding a draw in one place never shifts another component's
sequence. No global RNG is ever touched.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping


def derive_seed(seed: int, name: str) -> int:
    h = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(h[:8], "big")


class Streams:
    """A factory of independent ``random.Random`` streams keyed by name."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def get(self, name: str) -> random.Random:
        rng = self._streams.get(name)
        if rng is None:
            rng = random.Random(derive_seed(self.seed, name))
            self._streams[name] = rng
        return rng

    def fork(self, label: int | str) -> None:
        """Fresh randomness from here on (``flk sim causality``): every stream, those already
        handed out (reseeded in place: their holders keep the same object) and those made later,
        now derives from ``(seed, "fork/<label>")``. What was drawn before stays as it was, so a
        run forked at simulated time t has the same prefix as the unforked run up to t."""
        self.seed = derive_seed(self.seed, f"fork/{label}")
        for name, rng in self._streams.items():
            rng.seed(derive_seed(self.seed, name))


def sample(dist: Mapping | float | int | None, rng: random.Random, default: float = 0.0) -> float:
    """Draw from a distribution given as data.

    Forms: a number (constant); ``{dist="constant", value}``; ``{dist="uniform", lo, hi}``;
    ``{dist="exponential", mean}``; ``{dist="lognormal", median, sigma}``;
    ``{dist="normal", mean, sd}`` (clamped at 0); ``{dist="pareto", scale, alpha}``.
    """
    if dist is None:
        return default
    if isinstance(dist, (int, float)) and not isinstance(dist, bool):
        return float(dist)
    kind = dist.get("dist", "constant")
    if kind == "constant":
        return float(dist["value"])
    if kind == "uniform":
        return rng.uniform(float(dist["lo"]), float(dist["hi"]))
    if kind == "exponential":
        return rng.expovariate(1.0 / float(dist["mean"]))
    if kind == "lognormal":
        return float(dist["median"]) * math.exp(rng.gauss(0.0, float(dist["sigma"])))
    if kind == "normal":
        return max(0.0, rng.gauss(float(dist["mean"]), float(dist["sd"])))
    if kind == "pareto":
        return float(dist["scale"]) * rng.paretovariate(float(dist["alpha"]))
    raise ValueError(f"unknown distribution {kind!r}")


DIST_KINDS = ("constant", "uniform", "exponential", "lognormal", "normal", "pareto")


def sampler(dist: Mapping | float | int | None, default: float = 0.0):
    """``lambda rng: sample(dist, rng, default)`` with the distribution's parameters read once
    (the same draws from ``rng``, the same floats): for the per-message and per-batch hot paths."""
    if dist is None or (isinstance(dist, (int, float)) and not isinstance(dist, bool)):
        value = default if dist is None else float(dist)
        return lambda rng: value
    kind = dist.get("dist", "constant")
    if kind == "constant":
        value = float(dist["value"])
        return lambda rng: value
    if kind == "uniform":
        lo, width = float(dist["lo"]), float(dist["hi"]) - float(dist["lo"])
        return lambda rng: lo + width * rng.random()  # random.Random.uniform's own formula, one frame less
    if kind == "exponential":
        lam = 1.0 / float(dist["mean"])
        return lambda rng: rng.expovariate(lam)
    if kind == "lognormal":
        median, sigma, exp = float(dist["median"]), float(dist["sigma"]), math.exp
        return lambda rng: median * exp(rng.gauss(0.0, sigma))
    if kind == "normal":
        mean, sd = float(dist["mean"]), float(dist["sd"])
        return lambda rng: max(0.0, rng.gauss(mean, sd))
    if kind == "pareto":
        scale, alpha = float(dist["scale"]), float(dist["alpha"])
        return lambda rng: scale * rng.paretovariate(alpha)
    raise ValueError(f"unknown distribution {kind!r}")
