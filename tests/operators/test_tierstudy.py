"""The predictive tiering study responds to what it studies: a budget of 0 is TTL-only,
promotions grow with the budget, and without an access pattern prediction wastes more
and does not win (the counterfactual). Small sizes; the notebook and the closing note
run the study file's sizes."""

from __future__ import annotations

import pytest

from flk.sim import tierstudy as ts
from flk.sim.schema import ScenarioError

SMALL = {"tenants": 2, "cycles": 60, "writes_per_cycle": 8.0, "reads_per_cycle": 24.0}


def test_predictive_with_no_budget_is_exactly_ttl_only():
    w = ts.Workload(pattern="diurnal", budget=0, **SMALL)
    a, b = ts.run(w, "holt-winters", 1), ts.run(w, "ttl-short", 1)
    assert {k: v for k, v in a.items() if k != "arm"} == {k: v for k, v in b.items() if k != "arm"}
    assert a["promotions"] == 0


def test_promotions_grow_with_the_budget_and_cold_misses_do_not():
    rows = [ts.run(ts.Workload(pattern="diurnal", budget=b, **SMALL), "holt-winters", 1) for b in (0, 10, 40)]
    assert [r["promotions"] for r in rows] == sorted(r["promotions"] for r in rows) and rows[-1]["promotions"] > 0
    assert rows[-1]["old_miss_share"] < rows[0]["old_miss_share"], rows


def test_counterfactual_without_a_pattern_prediction_wastes_more_and_does_not_win():
    rows = {(r["pattern"], r["arm"]): r for r in ts.study(("diurnal", "none"), range(1, 3),
                                                          ("ttl-short", "holt-winters"), **SMALL)}
    hw_d, hw_n = rows[("diurnal", "holt-winters")], rows[("none", "holt-winters")]
    assert hw_n["waste_share"] > hw_d["waste_share"], (hw_n, hw_d)
    gain_d = rows[("diurnal", "ttl-short")]["old_miss_share"] - hw_d["old_miss_share"]
    gain_n = rows[("none", "ttl-short")]["old_miss_share"] - hw_n["old_miss_share"]
    assert gain_n < gain_d, (gain_n, gain_d)
    assert hw_n["total_cost"] >= rows[("none", "ttl-short")]["total_cost"]


def test_the_study_file_is_checked_against_its_schema(tmp_path):
    assert ts.load_study(ts.study_path("tiering-predictive"))["seeds"] == 10
    bad = tmp_path / "s.toml"
    bad.write_text("[workload]\nbudgett = 3\n")
    with pytest.raises(ScenarioError, match=r"workload\.budgett: unknown key"):
        ts.load_study(str(bad))
