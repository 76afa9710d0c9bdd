"""flk bench verify runs the real pipeline end to end (a smoke test, not a timing test)."""

from __future__ import annotations

from flk.impl.lab.bench import verify as bench


def test_one_bench_run_pushes_every_pcs_through_wal_and_store(tmp_path):
    bodies = bench._bodies(40, "smoke")
    rate, cpu_rate = bench._one_run("sqlite", bodies, 16, str(tmp_path))
    assert rate > 0 and cpu_rate > 0  # _one_run raises if any PCS was not accepted or stored


def test_the_pipelined_run_goes_through_the_servers_batch_driver(tmp_path, monkeypatch):
    """The pipelined figure's run: the server's BatchDriver at depth 2, its sync thread
    syncing while the batch thread appends and verifies (every PCS answered 200/202 and
    stored, or the run raises)."""
    from flk.impl.server import batchdriver

    drivers = []
    made = batchdriver.BatchDriver.__init__

    def spy(self, *args, **kwargs):
        made(self, *args, **kwargs)
        drivers.append(self)

    monkeypatch.setattr(batchdriver.BatchDriver, "__init__", spy)
    bodies = bench._realistic_bodies(96, "smoke")
    rate, cpu_rate = bench._driven_run("sqlite", bodies, 16, str(tmp_path), 2)
    assert rate > 0 and cpu_rate > 0
    [driver] = drivers
    assert driver.depth == 2 and driver.batches >= 96 // 16 and driver.syncs >= 1


def test_bench_reports_unreachable_services_as_skipped(monkeypatch, tmp_path):
    monkeypatch.setenv("FLK_BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(bench, "_bodies", lambda n, tag: _real_bodies(8, tag))
    monkeypatch.setenv("FLK_BENCH_POSTGRES_DSN", "postgresql://flk@127.0.0.1:1/flk")
    out = bench.run(repeat=1, quick=True)
    assert out["memory_pcs_per_s"] > 0 and out["sqlite_pcs_per_s"] > 0
    assert "redis_skipped" in out and "postgres_skipped" in out
    assert "redis_pcs_per_s" not in out and "postgres_pcs_per_s" not in out
    # the same-run anchor (json.loads + HMAC per body) and each store's CPU per PCS relative to it
    assert out["anchor_us_per_pcs_cpu"] > 0 and out["memory_cpu_ratio_to_anchor"] > 0
    # the goal beside the lower of the measured limits (one core at the CPU per PCS, fsyncs of this disk)
    assert out["sqlite_ceiling_pcs_per_s"] == min(out["sqlite_one_core_ceiling_pcs_per_s"],
                                                  out["fsync_ceiling_pcs_per_s"])
    assert out["goal_sqlite_within_ceiling"] == (out["sqlite_ceiling_pcs_per_s"] >= out["goal_sqlite_pcs_per_s"])
    # which figure the goal is checked against, and the pipelined figure (server driver, depth 2) beside it
    assert out["goal_sqlite_figure"] == "sqlite_pcs_per_s"
    assert out["sqlite_pipelined_pcs_per_s"] > 0
    assert out["sqlite_pipelined_ceiling_pcs_per_s"] == min(out["sqlite_pipelined_one_core_ceiling_pcs_per_s"],
                                                            out["fsync_ceiling_pcs_per_s"])
    assert out["goal_sqlite_pipelined_met"] == (out["sqlite_pipelined_pcs_per_s"] >= out["goal_sqlite_pcs_per_s"])
    # which SQLite rows ran, and the store's own CPU per PCS (SQLite minus memory, same run)
    assert out["sqlite_rows_path"] in ("compiled", "pure")
    assert out["sqlite_store_us_per_pcs_cpu"] == round(out["sqlite_us_per_pcs_cpu"] - out["memory_us_per_pcs_cpu"], 2)


_real_bodies = bench._bodies
