"""Differential-privacy budget ledger for aggregate metrics (seed 004).

Why this module exists: aggregate metrics released per tenant (counts of
escalations, mean budgets, regime shares...) leak information about single
PCS when queried often enough. Each release here adds Laplace noise of scale
``sensitivity / epsilon`` and spends ``epsilon`` from two budgets at once: the
metric set's budget within the tenant and the tenant's total budget (sequential
composition: the epsilons of all releases add up). When either would go
negative the release is refused (:class:`BudgetExhausted`, reason
``dp_budget_exhausted``) and nothing is spent.

Sans-I/O and deterministic: the noise generator is passed in (a seeded
``numpy.random.Generator``), there is no clock, and budgets are kept as exact
fractions (``Fraction(str(epsilon))``) so ten releases of 0.1 spend exactly 1.0.
The ledger state round-trips through :meth:`DpLedger.to_dict` /
:meth:`DpLedger.from_dict` so a driver can persist it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..core.errors import InvalidInput

REASON_DP = "dp_budget_exhausted"


class BudgetExhausted(Exception):
    """The release would overspend a budget; nothing was spent."""

    def __init__(self, scope: str, requested: float, remaining: float) -> None:
        self.scope = scope
        self.requested = requested
        self.remaining = remaining
        self.reason = REASON_DP
        super().__init__(f"{REASON_DP}: {scope} has {remaining:.6g} epsilon left, release needs {requested:.6g}")


def _eps(v: object, field: str) -> Fraction:
    if isinstance(v, bool) or not isinstance(v, (int, float, str, Fraction)):
        raise InvalidInput(field, "must be a positive finite number")
    try:
        f = Fraction(str(v)) if not isinstance(v, Fraction) else v
    except (ValueError, ZeroDivisionError):
        raise InvalidInput(field, "must be a positive finite number") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise InvalidInput(field, "must be a positive finite number")
    if f <= 0:
        raise InvalidInput(field, "must be > 0")
    return f


@dataclass(frozen=True)
class Release:
    tenant: str
    metric_set: str
    value: float  # the noisy aggregate: the only number that leaves the ledger
    epsilon: float
    scale: float  # Laplace scale b = sensitivity / epsilon
    remaining_metric_set: float
    remaining_tenant: float


class DpLedger:
    """Epsilon budgets per (tenant, metric set) and per tenant.

    ``metric_budgets`` maps a metric-set name to its epsilon budget (the same
    for every tenant unless ``overrides[(tenant, metric_set)]`` says otherwise);
    ``tenant_budget`` caps a tenant's spend over all metric sets
    (``tenant_overrides[tenant]`` per tenant). Unknown metric sets are refused.
    """

    def __init__(
        self,
        metric_budgets: Mapping[str, float],
        tenant_budget: float,
        overrides: Mapping[tuple[str, str], float] | None = None,
        tenant_overrides: Mapping[str, float] | None = None,
    ) -> None:
        if not metric_budgets:
            raise InvalidInput("metric_budgets", "needs at least one metric set")
        self.metric_budgets = {k: _eps(v, f"metric_budgets.{k}") for k, v in metric_budgets.items()}
        self.tenant_budget = _eps(tenant_budget, "tenant_budget")
        self.overrides = {k: _eps(v, f"overrides.{k}") for k, v in (overrides or {}).items()}
        self.tenant_overrides = {k: _eps(v, f"tenant_overrides.{k}") for k, v in (tenant_overrides or {}).items()}
        self.spent_metric: dict[tuple[str, str], Fraction] = {}
        self.spent_tenant: dict[str, Fraction] = {}

    def _limits(self, tenant: str, metric_set: str) -> tuple[Fraction, Fraction]:
        if metric_set not in self.metric_budgets:
            raise InvalidInput("metric_set", f"unknown metric set {metric_set!r}")
        m = self.overrides.get((tenant, metric_set), self.metric_budgets[metric_set])
        t = self.tenant_overrides.get(tenant, self.tenant_budget)
        return m, t

    def remaining(self, tenant: str, metric_set: str) -> tuple[float, float]:
        """(remaining epsilon of the metric set for the tenant, remaining of the tenant)."""
        m, t = self._limits(tenant, metric_set)
        return (float(m - self.spent_metric.get((tenant, metric_set), Fraction(0))),
                float(t - self.spent_tenant.get(tenant, Fraction(0))))

    def charge(self, tenant: str, metric_set: str, epsilon: float) -> tuple[float, float]:
        """Spend ``epsilon`` from both budgets or refuse (:class:`BudgetExhausted`, nothing spent)."""
        e = _eps(epsilon, "epsilon")
        m, t = self._limits(tenant, metric_set)
        sm = self.spent_metric.get((tenant, metric_set), Fraction(0))
        st = self.spent_tenant.get(tenant, Fraction(0))
        if sm + e > m:
            raise BudgetExhausted(f"metric set {metric_set!r} of tenant {tenant!r}", float(e), float(m - sm))
        if st + e > t:
            raise BudgetExhausted(f"tenant {tenant!r}", float(e), float(t - st))
        self.spent_metric[(tenant, metric_set)] = sm + e
        self.spent_tenant[tenant] = st + e
        return float(m - sm - e), float(t - st - e)

    def release(
        self, tenant: str, metric_set: str, true_value: float, sensitivity: float, epsilon: float,
        rng: np.random.Generator,
    ) -> Release:
        """Charge, then return ``true_value + Laplace(0, sensitivity/epsilon)`` drawn from ``rng``."""
        if isinstance(true_value, bool) or not isinstance(true_value, (int, float)) or not math.isfinite(true_value):
            raise InvalidInput("true_value", "must be a finite number")
        s = float(_eps(sensitivity, "sensitivity"))
        if not isinstance(rng, np.random.Generator):
            raise InvalidInput("rng", "must be a seeded numpy.random.Generator")
        rem_m, rem_t = self.charge(tenant, metric_set, epsilon)
        scale = s / float(epsilon)
        noisy = float(true_value) + float(rng.laplace(0.0, scale))
        return Release(tenant, metric_set, noisy, float(epsilon), scale, rem_m, rem_t)

    def noisy_count(self, tenant: str, metric_set: str, n: int, epsilon: float, rng: np.random.Generator) -> Release:
        """A count (sensitivity 1: one PCS changes a count by at most 1)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInput("n", "must be a non-negative integer")
        return self.release(tenant, metric_set, n, 1.0, epsilon, rng)

    def noisy_sum(
        self, tenant: str, metric_set: str, values: Sequence[float], lo: float, hi: float, epsilon: float,
        rng: np.random.Generator,
    ) -> Release:
        """A sum of values clipped to [lo, hi] (sensitivity max(|lo|, |hi|))."""
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidInput("clip", "needs finite lo < hi")
        total = sum(min(hi, max(lo, float(v))) for v in values)
        return self.release(tenant, metric_set, total, max(abs(lo), abs(hi)), epsilon, rng)

    # persistence
    def to_dict(self) -> dict:
        return {
            "spent_metric": sorted([t, m, str(v)] for (t, m), v in self.spent_metric.items()),
            "spent_tenant": sorted([t, str(v)] for t, v in self.spent_tenant.items()),
        }

    def load_spent(self, state: Mapping) -> None:
        """Restore spends saved by :meth:`to_dict` (budgets come from configuration)."""
        self.spent_metric = {(t, m): Fraction(v) for t, m, v in state.get("spent_metric", [])}
        self.spent_tenant = {t: Fraction(v) for t, v in state.get("spent_tenant", [])}
