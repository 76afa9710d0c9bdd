"""Health gates over a window of observed samples.

Why this module exists: a single bad sample must not roll a migration back,
and a window with no data (a partition cut the metrics off, no load) must not
either -- unknown is not a breach. A gate's verdict is ``ok``, ``breach`` or
``unknown``:

* the window holds the samples with ``now - window_s < t <= now``;
* fewer than ``min_samples`` of them carry the gate's metric: ``unknown``;
* at least ``breach_fraction`` of them violate the limit: ``breach``;
* otherwise ``ok``.

A sample is a dict ``{"t": seconds, "latency_p95_ms": .., "error_rate": ..,
"dedup_hit_ratio": .., "replication_lag_s": ..}`` (missing or None metrics are
skipped). Pure functions; time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# gate key -> (sample metric, "max" | "min")
GATES = {
    "max_latency_p95_ms": ("latency_p95_ms", "max"),
    "max_error_rate": ("error_rate", "max"),
    "min_dedup_hit_ratio": ("dedup_hit_ratio", "min"),
    "max_replication_lag_s": ("replication_lag_s", "max"),
}


def window(samples: Sequence[Mapping], now: float, window_s: float) -> list[Mapping]:
    return [s for s in samples if now - window_s < float(s["t"]) <= now]


def evaluate(gates: Mapping, samples: Sequence[Mapping], now: float) -> dict[str, dict]:
    """``{gate: {"verdict", "value", "limit", "n", "violations"}}`` for every gate that is set."""
    out = {}
    win = window(samples, now, float(gates["window_s"]))
    for key, (metric, sense) in GATES.items():
        limit = gates.get(key)
        if limit is None:
            continue
        vals = [float(s[metric]) for s in win if s.get(metric) is not None and math.isfinite(float(s[metric]))]
        bad = [v for v in vals if (v > limit if sense == "max" else v < limit)]
        if len(vals) < int(gates["min_samples"]):
            verdict = "unknown"
        elif len(bad) >= max(1, math.ceil(float(gates["breach_fraction"]) * len(vals))):
            verdict = "breach"
        else:
            verdict = "ok"
        worst = (max(vals) if sense == "max" else min(vals)) if vals else None
        out[key] = {"verdict": verdict, "value": worst, "limit": limit, "n": len(vals), "violations": len(bad)}
    return out


def overall(report: Mapping[str, Mapping]) -> str:
    """``breach`` if any gate breaches, else ``unknown`` if any is unknown, else ``ok`` (no gate: ok)."""
    verdicts = {g["verdict"] for g in report.values()}
    return "breach" if "breach" in verdicts else ("unknown" if "unknown" in verdicts else "ok")
