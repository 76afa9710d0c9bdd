"""``flk bench crr`` runs and reports its figures (speed itself is measured by the bench, not here)."""

from __future__ import annotations

from flk.impl.lab.bench import crr


def test_bench_crr_quick_reports_figures():
    out = crr.run(repeat=1, quick=True)
    assert out["records"] == 2000 and out["name"] == "crr"
    assert out["ship_records_per_s"] > 0 and out["read_replay_records_per_s"] > 0
    assert out["replay_cpu_us_per_record"] > 0
