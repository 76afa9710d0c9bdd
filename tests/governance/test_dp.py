"""DP budget ledger: exact composition, refusal when spent, per-tenant and per-metric-set budgets,
Laplace noise from a passed-in seeded generator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.governance import dp


def ledger(**kw):
    return dp.DpLedger({"escalations": 1.0, "budgets": 0.5}, tenant_budget=1.2, **kw)


def test_dp_budget_exhaustion_refuses_and_spends_nothing():
    led = ledger()
    rng = np.random.default_rng(1)
    for _ in range(10):  # ten releases of 0.1 spend exactly 1.0 (exact fractions)
        led.noisy_count("t1", "escalations", 42, 0.1, rng)
    assert led.remaining("t1", "escalations") == (0.0, pytest.approx(0.2))
    before = led.to_dict()
    with pytest.raises(dp.BudgetExhausted) as ei:
        led.noisy_count("t1", "escalations", 42, 0.1, rng)
    assert ei.value.reason == dp.REASON_DP and "escalations" in str(ei.value)
    assert led.to_dict() == before  # refusal spends nothing
    # the tenant cap: 0.2 left overall although the "budgets" set has 0.5
    led.noisy_count("t1", "budgets", 3, 0.2, rng)
    with pytest.raises(dp.BudgetExhausted, match="tenant 't1'"):
        led.noisy_count("t1", "budgets", 3, 0.05, rng)
    # another tenant is untouched
    assert led.remaining("t2", "escalations") == (1.0, 1.2)


def test_dp_overrides_and_validation():
    led = ledger(overrides={("vip", "escalations"): 3.0}, tenant_overrides={"vip": 5.0})
    assert led.remaining("vip", "escalations") == (3.0, 5.0)
    with pytest.raises(InvalidInput):
        led.charge("t1", "unknown-set", 0.1)
    for bad in (0, -1, float("nan"), float("inf"), True, "x"):
        with pytest.raises(InvalidInput):
            led.charge("t1", "escalations", bad)
    with pytest.raises(InvalidInput):
        led.release("t1", "escalations", 1.0, 1.0, 0.1, rng=np.random)  # the global RNG is refused
    with pytest.raises(InvalidInput):
        dp.DpLedger({}, 1.0)


def test_dp_noise_is_laplace_with_the_right_scale_and_seeded():
    a = ledger(tenant_overrides={"t": 1e9}, overrides={("t", "escalations"): 1e9})
    b = ledger(tenant_overrides={"t": 1e9}, overrides={("t", "escalations"): 1e9})
    ra, rb = np.random.default_rng(7), np.random.default_rng(7)
    xs = [a.release("t", "escalations", 100.0, 2.0, 0.5, ra).value for _ in range(4000)]
    ys = [b.release("t", "escalations", 100.0, 2.0, 0.5, rb).value for _ in range(4000)]
    assert xs == ys  # same seed, same noise
    noise = np.array(xs) - 100.0
    scale = 2.0 / 0.5
    assert abs(np.median(noise)) < 0.3
    assert abs(np.mean(np.abs(noise)) - scale) < 0.25  # E|Laplace(0,b)| = b
    r = a.release("t", "escalations", 1.0, 2.0, 0.5, ra)
    assert r.scale == 4.0 and r.epsilon == 0.5


def test_dp_noisy_sum_clips():
    led = ledger(tenant_overrides={"t": 100.0}, overrides={("t", "budgets"): 100.0})
    r = led.noisy_sum("t", "budgets", [0.5, 7.0, -3.0], 0.0, 1.0, 50.0, np.random.default_rng(0))
    assert r.scale == 1.0 / 50.0 and abs(r.value - 1.5) < 0.5


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.05, 0.1, 0.25, 0.3, 0.01]), min_size=1, max_size=40))
def test_dp_total_spend_never_exceeds_budget(epsilons):
    led = ledger()
    spent = 0.0
    for e in epsilons:
        try:
            led.charge("t", "escalations", e)
            spent += e
        except dp.BudgetExhausted:
            pass
    m, t = led.remaining("t", "escalations")
    assert m >= 0 and t >= 0 and spent <= 1.0 + 1e-12
    restored = ledger()
    restored.load_spent(led.to_dict())
    assert restored.remaining("t", "escalations") == (m, t)
