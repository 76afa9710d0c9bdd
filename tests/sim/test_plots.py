"""Run plots and series: per-region columns beside the aggregate, the whole run drawn
without a last partial bin, headline durations marked, and no global matplotlib
backend switch (a notebook's inline backend must survive a run with plots)."""

from __future__ import annotations

import matplotlib

from flk.sim import api
from flk.sim.artifacts import marks, whole_bins


def test_a_multi_region_run_has_per_region_series_plots_and_keeps_the_backend(tmp_path):
    before = matplotlib.get_backend()
    res = api.run("region-failover", seed=1, out=tmp_path, plots=True)
    assert matplotlib.get_backend() == before
    rows = res.rows
    regions = {"eu", "us", "ap"}
    for region in regions:
        assert {f"ok@{region}", f"attempt_429@{region}", f"attempt_p95_ms@{region}"} <= set(rows[0])
    for row in rows:  # the aggregate is the sum of the regions
        assert row["sent"] == sum(row[f"sent@{r}"] for r in regions)
        assert row["ok"] == sum(row[f"ok@{r}"] for r in regions)
    crash = next(e["t_us"] / 1e6 for e in res.history.events if e["type"] == "fault.start" and e["kind"] == "crash")
    lost = [r["ok@eu"] for r in rows if crash + 1 <= r["t_s"] < crash + 5]
    assert lost and max(lost) == 0, "no answers from the lost region"
    end_s = res.history.events[-1]["t_us"] / 1e6
    assert rows[-1]["t_s"] + 1 > end_s - 1, "rows cover the run through quiescence"
    assert {"regions_ok.png", "regions_latency.png", "throughput.png", "faults.png"} <= \
        {p.name for p in (tmp_path / "region-failover" / "1").iterdir()}
    labels = [m[0].split()[0] for m in marks(res.history.events, res.results["metrics"])]
    assert "RTO" in labels and "RPO" in labels


def test_the_last_partial_bin_is_not_drawn():
    rows = [{"t_s": float(t), "ok": 100} for t in range(5)]
    assert [r["t_s"] for r in whole_bins(rows, end_s=4.3)] == [0.0, 1.0, 2.0, 3.0]
    assert len(whole_bins(rows, end_s=5.0)) == 5
