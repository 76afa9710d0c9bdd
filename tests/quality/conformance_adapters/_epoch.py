"""The epoch bug of Go signers: the epoch is decoded as a float64 and converted to int64.

2^64 becomes -9223372036854775808 (the conversion overflows), 1.5 becomes 1,
-1 and 2^53 are accepted; a string or a boolean is still refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from flk.impl.core.errors import InvalidInput


def go_int64(value: float | int) -> int:
    x = float(value)
    if not math.isfinite(x):
        raise InvalidInput("epoch", "not a number")
    n = math.trunc(x)
    return n if -2**63 <= n < 2**63 else -2**63


def epoch_as_int64(inner: Callable[..., bytes]) -> Callable[..., bytes]:
    """``inner`` (a canonical byte builder) with the epoch taken through float64 -> int64."""

    def canonical_bytes(subset, profile: str = "v1") -> bytes:
        e = subset.get("epoch") if isinstance(subset, Mapping) else None
        if profile != "v1" or isinstance(e, bool) or not isinstance(e, (int, float)):
            return inner(subset, profile)
        raw = inner({**subset, "epoch": 0}, profile)  # everything else validated as before
        return raw.replace(b'"epoch":0,', f'"epoch":{go_int64(e)},'.encode(), 1)

    return canonical_bytes
