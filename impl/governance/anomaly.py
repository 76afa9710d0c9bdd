"""Sanity checks and an anomaly score in [0, 1] for a PCS.

Why this module exists: the verifier's signal checks answer "does the claim
match the recomputation within tolerance?". Some PCS are wrong in ways that
are cheap to see and that tolerance checks do not weigh -- counts that fall as
the grid gets finer, coherence below what a histogram can produce, a shard
that suddenly escalates half its traffic. This module turns such signs into
named features in [0, 1] and one score, with an alert threshold (0.5: accept,
but report) and a reject threshold (0.8: reason ``anomaly_reject``, HTTP 400).

Everything is a pure function of its inputs. The one piece of history -- the
per-shard escalation rate -- lives in an explicit :class:`EscalationWindow`
that the caller owns, passes in and updates; time is passed in.

Features (documented in spec/GOVERNANCE.md; weight in brackets):

* ``nj_monotonicity`` [1.0] -- share of adjacent scale pairs where N_j decreases
  (a finer grid can never have fewer occupied cells);
* ``nj_growth`` [0.8] -- 1 if some step grows faster than ``(s_{j+1}/s_j)^MAX_DIM``
  (more new cells than the finest grid allows), else 0;
* ``scale_range`` [1.0] -- 1 if a scale is outside [2, 65536] or scales are
  not strictly increasing; 0.5 if fewer than three scales; else 0;
* ``d_hat_range`` [0.5] -- distance of D-hat outside [0, MAX_DIM], capped at 1;
* ``d_hat_consistency`` [0.5] -- 0 while |claimed - recomputed D-hat| <= tol_d, rising
  linearly to 1 at 2 tol_d (the verifier escalates beyond tol_d; this weighs by how far);
* ``coherence_bounds`` [1.0] -- 1 if coh-star is outside [1/bins, 1 + tol_coh]
  (a histogram of ``bins`` bins always holds at least 1/bins of the points in one bin);
* ``compressibility_bounds`` [1.0] -- 1 if r is outside [0, 1];
* ``budget_consistency`` [0.5] -- the same with the budget and tol_budget;
* ``regime_consistency`` [0.6] -- 1 if the claimed regime differs from the recomputed one;
* ``escalation_rate`` [0.6] -- the shard's share of escalated outcomes in the
  window (0 until ``min_events`` outcomes were seen).

Score: ``1 - prod(1 - w_i * f_i)`` (a noisy-OR): 0 when every feature is 0,
monotone in every feature, and a single full violation of a weight-1 feature
gives 1.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..core.errors import InvalidInput
from ..core.signals import (
    COH_BINS,
    DEFAULT_BUDGET,
    DEFAULT_REGIME,
    MAX_DIM,
    BudgetParams,
    RegimeThresholds,
)
from ..core.signals import budget as budget_fn
from ..core.signals import d_hat as d_hat_fn
from ..core.signals import regime as regime_fn

ALERT_THRESHOLD = 0.5
REJECT_THRESHOLD = 0.8
REASON_ANOMALY = "anomaly_reject"
HTTP_STATUS = {REASON_ANOMALY: 400}
SCALE_MAX = 65536

WEIGHTS: Mapping[str, float] = {
    "nj_monotonicity": 1.0,
    "nj_growth": 0.8,
    "scale_range": 1.0,
    "d_hat_range": 0.5,
    "d_hat_consistency": 0.5,
    "coherence_bounds": 1.0,
    "compressibility_bounds": 1.0,
    "budget_consistency": 0.5,
    "regime_consistency": 0.6,
    "escalation_rate": 0.6,
}
FEATURES = tuple(WEIGHTS)


@dataclass(frozen=True)
class AnomalyParams:
    tol_d: float = 0.15
    tol_coh: float = 0.05
    tol_budget: float = 0.01
    budget: BudgetParams = DEFAULT_BUDGET
    regime: RegimeThresholds = DEFAULT_REGIME
    bins: int = COH_BINS
    alert: float = ALERT_THRESHOLD
    reject: float = REJECT_THRESHOLD

    @classmethod
    def from_policy(cls, policy, alert: float = ALERT_THRESHOLD, reject: float = REJECT_THRESHOLD) -> AnomalyParams:
        """From a ``flk.impl.verifier.pipeline.Policy`` (duck-typed: tol_d, tol_coh, tol_budget, budget, regime)."""
        return cls(policy.tol_d, policy.tol_coh, policy.tol_budget, policy.budget, policy.regime,
                   alert=alert, reject=reject)


@dataclass
class EscalationWindow:
    """The last ``size`` outcomes of each shard: the only state of the score.

    A count-based window, so no clock is involved: ``record(shard, escalated)``
    after each outcome; ``rate(shard)`` is the escalated share of the shard's
    last ``size`` outcomes (0 until ``min_events`` were seen). Owned by the
    caller and passed in explicitly -- there is no module-level state.
    """

    size: int = 100
    min_events: int = 10
    events: dict[str, deque] = field(default_factory=dict)

    def record(self, shard: str, escalated: bool) -> None:
        q = self.events.get(shard)
        if q is None:
            q = self.events[shard] = deque(maxlen=self.size)
        q.append(bool(escalated))

    def rate(self, shard: str) -> float:
        q = self.events.get(shard)
        if q is None or len(q) < self.min_events:
            return 0.0
        return sum(q) / len(q)


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _cap(x: float) -> float:
    return 0.0 if x <= 0 else 1.0 if x >= 1 else x


def _excess(diff: float, tol: float) -> float:
    """0 within the tolerance, rising linearly to 1 at twice the tolerance."""
    if tol <= 0:
        return 0.0 if diff <= 1e-9 else 1.0
    return _cap((diff - tol) / tol)


def features(pcs: Mapping, params: AnomalyParams = AnomalyParams(), escalation_rate: float = 0.0) -> dict[str, float]:
    """Every feature of :data:`FEATURES` in [0, 1] (malformed inputs score 1 on their feature)."""
    f = dict.fromkeys(FEATURES, 0.0)
    scales = pcs.get("scales")
    nj = pcs.get("N_j")
    counts: list[int] | None = None
    ok_scales = isinstance(scales, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in scales)
    if not ok_scales or not scales:
        f["scale_range"] = 1.0
    else:
        if any(s < 2 or s > SCALE_MAX for s in scales) or any(b <= a for a, b in zip(scales, scales[1:], strict=False)):
            f["scale_range"] = 1.0
        elif len(scales) < 3:
            f["scale_range"] = 0.5
        if isinstance(nj, Mapping):
            raw = [nj.get(str(s)) for s in scales]
            if all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in raw):
                counts = raw  # type: ignore[assignment]
    if counts is None:
        f["nj_monotonicity"] = 1.0
    elif len(counts) >= 2:
        pairs = list(zip(counts, counts[1:], strict=False))
        f["nj_monotonicity"] = sum(1 for a, b in pairs if b < a) / len(pairs)
        for (a, b), (s0, s1) in zip(pairs, zip(scales, scales[1:], strict=False), strict=False):
            if s1 > s0 and b > a * (s1 / s0) ** MAX_DIM:
                f["nj_growth"] = 1.0
    dh, coh, r, b = (_num(pcs.get(k)) for k in ("D_hat", "coh_star", "r", "budget"))
    if dh is None:
        f["d_hat_range"] = 1.0
    else:
        f["d_hat_range"] = _cap(max(0.0 - dh, dh - MAX_DIM))
    recomputed_d = None
    if counts is not None and f["scale_range"] < 1.0 and len(counts) >= 2:
        recomputed_d = d_hat_fn(scales, counts)
        if dh is not None:
            f["d_hat_consistency"] = _excess(abs(dh - recomputed_d), params.tol_d)
    if coh is None or not (1.0 / params.bins - 1e-12 <= coh <= 1.0 + params.tol_coh):
        f["coherence_bounds"] = 1.0
    if r is None or not 0.0 <= r <= 1.0:
        f["compressibility_bounds"] = 1.0
    d_for = recomputed_d if recomputed_d is not None else dh
    if d_for is not None and coh is not None and r is not None:
        try:
            want = budget_fn(d_for, coh, r, params.budget)
            want_regime = regime_fn(d_for, coh, params.regime)
        except InvalidInput:  # out-of-range inputs are already scored by the bounds features
            return f | {"escalation_rate": _cap(float(escalation_rate))}
        if b is None:
            f["budget_consistency"] = 1.0
        else:
            f["budget_consistency"] = _excess(abs(b - want), params.tol_budget)
        if pcs.get("regime") != want_regime:
            f["regime_consistency"] = 1.0
    f["escalation_rate"] = _cap(float(escalation_rate))
    return f


def score(feats: Mapping[str, float], weights: Mapping[str, float] = WEIGHTS) -> float:
    """Noisy-OR of the weighted features, in [0, 1]."""
    keep = 1.0
    for name in sorted(feats):
        w = weights.get(name)
        if w is None:
            raise InvalidInput(f"features.{name}", "unknown anomaly feature")
        keep *= 1.0 - _cap(w) * _cap(feats[name])
    return _cap(1.0 - keep)


@dataclass(frozen=True)
class Assessment:
    score: float
    level: str  # "ok" | "alert" | "reject"
    features: Mapping[str, float]
    reasons: tuple[str, ...]


def assess(pcs: Mapping, params: AnomalyParams = AnomalyParams(), escalation_rate: float = 0.0) -> Assessment:
    if not 0.0 <= params.alert <= params.reject <= 1.0:
        raise InvalidInput("anomaly", "thresholds must satisfy 0 <= alert <= reject <= 1")
    feats = features(pcs, params, escalation_rate)
    s = score(feats)
    if s >= params.reject:
        return Assessment(s, "reject", feats, (REASON_ANOMALY,))
    return Assessment(s, "alert" if s >= params.alert else "ok", feats, ())


class AnomalyGate:
    """The anomaly hook plus its explicit state, for one pipeline.

    ``gate.hook`` is the pipeline hook ``(pcs, tenant) -> [reason]``: it scores
    the PCS with the shard's escalation rate *before* this PCS, reports alerts
    to ``on_alert(tenant, shard_id, assessment)`` (alerts never reject) and
    returns ``anomaly_reject`` at or above ``params.reject``. ``gate.sink`` is
    an ``Emit`` sink: accepted / escalated outcomes update the window (events
    carry ``pcs_id``, so the hook remembers the shard of the last
    ``remember`` PCS it saw).
    """

    def __init__(
        self,
        params: AnomalyParams = AnomalyParams(),
        window: EscalationWindow | None = None,
        on_alert: Callable[[str, str, Assessment], None] | None = None,
        remember: int = 10_000,
    ) -> None:
        self.params = params
        self.window = window if window is not None else EscalationWindow()
        self.on_alert = on_alert
        self.remember = remember
        self._shard: dict[tuple[str, str], str] = {}
        self._order: deque = deque()

    def hook(self, pcs: dict, tenant: str) -> list[str]:
        shard = str(pcs.get("shard_id", ""))
        pid = pcs.get("pcs_id")
        if isinstance(pid, str) and (tenant, pid) not in self._shard:
            self._shard[(tenant, pid)] = shard
            self._order.append((tenant, pid))
            while len(self._order) > self.remember:
                self._shard.pop(self._order.popleft(), None)
        a = assess(pcs, self.params, self.window.rate(f"{tenant}/{shard}"))
        if a.level != "ok" and self.on_alert is not None:
            self.on_alert(tenant, shard, a)
        return list(a.reasons)

    def sink(self, event: Mapping) -> None:
        kind = event.get("kind")
        if kind not in ("accepted", "escalated"):
            return
        key = (str(event.get("tenant")), str(event.get("pcs_id")))
        shard = self._shard.get(key)
        if shard is not None:
            self.window.record(f"{key[0]}/{shard}", kind == "escalated")
