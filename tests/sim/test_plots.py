"""Run plots and series: per-region columns beside the aggregate, the whole run drawn
without a last partial bin, headline durations marked, and no global matplotlib
backend switch (a notebook's inline backend must survive a run with plots)."""

from __future__ import annotations

import matplotlib
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.sim import api
from flk.sim.artifacts import fault_spans, marks, whole_bins


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


def _lines(fig):
    ax = fig.axes[0]
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_every_plot_draws_a_gap_never_a_zero_for_a_bucket_without_samples(tmp_path):
    """Before: p95 fell to 0 ms where there was no traffic. Every latency, ratio and lag
    series is drawn from metrics.csv; a bucket without samples must be NaN there and in the plot."""
    import math

    from flk.sim.artifacts import plot_run

    res = api.run("region-failover", seed=1, plots=False)
    figures: dict = {}
    plot_run(tmp_path, res.rows, res.history.events, res.results, figures=figures)
    assert {"latency.png", "regions_latency.png", "replication_lag.png", "throughput.png"} <= set(figures)
    rows = {r["t_s"]: r for r in res.rows}
    sampled = {"attempt_p95_ms": "answered", **{f"attempt_p95_ms@{r}": f"answered@{r}" for r in ("eu", "us", "ap")}}
    gaps = 0
    for fname, fig in figures.items():
        for label, (xs, ys) in _lines(fig).items():
            column = label.split(" ")[0]
            if column in sampled:
                for x, y in zip(xs, ys, strict=True):
                    empty = rows[x][sampled[column]] == 0
                    assert math.isnan(y) == empty, (fname, column, x, y)
                    gaps += empty
            if column.startswith(("attempt_p95_ms", "e2e_p95_ms")):
                assert 0.0 not in ys, (fname, column)  # no latency is zero: a zero is an empty bucket
    assert gaps > 0, "the crashed region's idle seconds must be gaps"
    written = (tmp_path / "metrics.csv")
    from flk.sim import artifacts

    artifacts.write_all(tmp_path, res.scenario.data, res.history, res.results, res.rows, plots=False)
    text = written.read_text().splitlines()
    header = text[0].split(",")
    col = header.index("attempt_p95_ms@eu")
    cells = [line.split(",")[col] for line in text[1:]]
    assert "" in cells and "0.0" not in cells  # empty buckets are empty cells in metrics.csv too


def test_fault_bands_have_a_legend_entry_and_no_fault_wording_without_faults(tmp_path):
    from flk.sim.artifacts import plot_run

    with_faults = api.run("region-failover", seed=1, plots=False)
    figures: dict = {}
    plot_run(tmp_path, with_faults.rows, with_faults.history.events, with_faults.results, figures=figures)
    for fig in figures.values():
        ax = fig.axes[0]
        assert "fault active" in [t.get_text() for t in ax.get_legend().get_texts()]
        assert "red: faults" in ax.get_title()
    calm = api.run("crr-normal", seed=1, plots=False, overrides=["scenario.duration_s=4", "scenario.quiescence_s=3"])
    figures = {}
    plot_run(tmp_path, calm.rows, calm.history.events, calm.results, figures=figures)
    for fig in figures.values():
        ax = fig.axes[0]
        assert "fault active" not in [t.get_text() for t in ax.get_legend().get_texts()]
        assert "fault" not in ax.get_title()


def test_region_failover_lag_plot_shows_the_crashed_regions_stream_ageing(tmp_path):
    from flk.sim.artifacts import plot_run

    res = api.run("region-failover", seed=1, plots=False)
    crash = next(e for e in res.history.events if e["type"] == "fault.start" and e["kind"] == "crash")
    figures: dict = {}
    plot_run(tmp_path, res.rows, res.history.events, res.results, figures=figures)
    lines = _lines(figures["replication_lag.png"])
    xs, ys = lines[f"replication_lag_s@{crash['target']}"]
    during = [y for x, y in zip(xs, ys, strict=True) if crash["t_us"] / 1e6 + 2 <= x < crash["t_us"] / 1e6 + 10]
    assert during and max(during) > 5.0, during  # it grew with the outage (was ~1 s: lag 0 while down)
    others = [lines[k][1] for k in lines if k.startswith("replication_lag_s@") and crash["target"] not in k]
    assert others and all(max(y for y in series if y == y) < max(during) for series in others)


_keyed = st.fixed_dictionaries({}, optional={"kind": st.sampled_from(["crash", "partition", "valid"]),
                                             "target": st.sampled_from(["eu", "us"])})


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fault.start", "fault.end", "client.send", "crr.sample"]), _keyed),
                max_size=30), st.floats(0, 100))
def test_fault_spans_are_the_fault_events_own(steps, end_s):
    """A fault's span opens at its fault.start and closes at the next fault.end of the same kind
    and target (one still open ends at ``end_s``); no other event -- even one with a kind or a
    target, as client.send has -- opens, closes or moves a span."""
    events = [{"t_us": k * 250_000, "type": kind, **fields} for k, (kind, fields) in enumerate(steps)]
    faults = [e for e in events if e["type"] in ("fault.start", "fault.end")]
    expected, open_at = [], {}
    for e in faults:
        key = " ".join(x for x in (e.get("kind", ""), e.get("target", "")) if x)
        if e["type"] == "fault.start":
            open_at[key] = e["t_us"] / 1e6
        elif key in open_at:
            expected.append((key, open_at.pop(key), e["t_us"] / 1e6))
    expected += [(key, t0, end_s) for key, t0 in open_at.items()]
    assert fault_spans(events, end_s) == fault_spans(faults, end_s) == expected
