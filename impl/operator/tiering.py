"""Predictive tiering: which cold keys to pre-warm this cycle, and what tiers cost.

Why this module exists: the seeds claim that forecasting access and promoting
keys into hot before they are read cuts storage cost by 50-70 %. That is a
claim to test, so the decision rule and the cost model are explicit, with
defaults in spec/OPERATOR.md (``TieringPolicy.spec.cost``):

* per tenant, :func:`flk.impl.operator.forecast.forecast` predicts
  ``lam``, the cold-key accesses of the next cycle, from the per-cycle
  history of cold accesses the store saw;
* a candidate cold key with access weight ``w`` (its past accesses + 1) gets
  ``p = 1 - exp(-lam * w / W)`` (``W`` the tenant's total weight): the chance
  of at least one access if the tenant's accesses fall on its keys in
  proportion to their weight (Zipf re-reads concentrate ``w``);
* expected benefit (the seeds' rule) ``p * latency_saving - (1 - p) * promotion_cost``
  with ``latency_saving = (cold_read_ms - hot_read_ms) / 1000 * latency_cost_per_s``;
* keys with benefit > 0 and ``p >= min_probability``, best first (ties by
  key), at most ``max_promotions_per_cycle``.

:func:`monthly_cost` prices bytes held per tier, cold requests and promotions.
Pure functions; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .forecast import forecast

GB = 1 << 30
MONTH_S = 30 * 86400.0


def latency_saving(cost: Mapping) -> float:
    return (float(cost["cold_read_ms"]) - float(cost["hot_read_ms"])) / 1000.0 * float(cost["latency_cost_per_s"])


def plan_prewarm(spec: Mapping, history: Mapping[str, Sequence[float]],
                 candidates: Sequence[Sequence]) -> tuple[list[list[str]], dict]:
    """``([[tenant, pcs_id], ...], report)``: the keys to pre-warm this cycle.
    ``candidates`` are ``[tenant, pcs_id, weight]`` of cold keys."""
    cost = spec["cost"]
    budget = int(spec["max_promotions_per_cycle"])
    if spec["forecaster"] == "none" or budget == 0 or not candidates:
        return [], {"forecast": {}, "chosen": 0, "considered": len(candidates)}
    lam = {t: forecast(spec["forecaster"], list(h), spec) for t, h in sorted(history.items())}
    total: dict[str, float] = {}
    for t, _p, w in candidates:
        total[t] = total.get(t, 0.0) + float(w)
    gain, loss = latency_saving(cost), float(cost["per_promotion"])
    scored = []
    for t, p_id, w in candidates:
        rate = lam.get(t, 0.0) * float(w) / total[t] if total[t] > 0 else 0.0
        p = 1.0 - math.exp(-rate)
        benefit = p * gain - (1.0 - p) * loss
        if benefit > 0 and p >= float(spec["min_probability"]):
            scored.append((-benefit, t, p_id))
    scored.sort()
    keys = [[t, p_id] for _b, t, p_id in scored[:budget]]
    return keys, {"forecast": {t: round(v, 4) for t, v in lam.items()}, "chosen": len(keys),
                  "considered": len(candidates)}


def monthly_cost(cost: Mapping, byte_seconds: Mapping[str, float], span_s: float, cold_requests: int,
                 promotions: int) -> dict:
    """Cost of a run scaled to a month: ``byte_seconds`` per tier (bytes held x seconds,
    summed over the run of ``span_s`` seconds), requests and promotions made in the run."""
    scale = MONTH_S / span_s if span_s > 0 else 0.0
    storage = {t: byte_seconds.get(t, 0.0) / span_s / GB * float(cost[f"{t}_gb_month"]) if span_s > 0 else 0.0
               for t in ("hot", "warm", "cold")}
    req = (cold_requests * float(cost["per_cold_request"]) + promotions * float(cost["per_promotion"])) * scale
    total = sum(storage.values()) + req
    return {"storage": sum(storage.values()), "by_tier": storage, "requests": req, "total": total}
