"""``flk bench metrics --quick``: the live part runs on one worker and on two, and the
two-worker scrapes carry both workers' series (flk.impl.server.workermetrics)."""

from __future__ import annotations

import pytest

from flk.impl.lab.bench import metrics as bench

pytestmark = pytest.mark.server


def test_quick_bench_reports_one_and_two_worker_scrapes():
    fig = bench.run(repeat=1, quick=True)
    for p in ("", "w2_"):
        assert fig[f"{p}live_tenants_stored"] == 1000, fig
        assert fig[f"{p}scrapes"] > 0 and fig[f"{p}requests_during_scrape"] > 0, fig
        assert fig[f"{p}scrape_ms_median"] > 0 and fig[f"{p}worst_request_anchor_ms"] > 0, fig
    # two workers' series, each labelled: the last scrape names both workers; one worker's
    # answer is unchanged (no worker label, or flk_worker_info's own). Not the bytes: a worker's
    # 100 busiest tenants are cheap or dear by what they did (1.15x to 2x of one worker's)
    assert fig["w2_scrape_workers_live"] == 2, fig
    assert fig["scrape_workers_live"] <= 1, fig
