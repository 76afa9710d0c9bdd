"""``store_latency`` on a real cluster (the catalog's dedup-slow): every region reaches its Redis
through the delaying forwarder (:mod:`flk.impl.lab.cluster.storeproxy`), and the fault holds each
round trip of r1's server to its store 300 ms. The server's own admission limit then sheds, as the
simulator says it does; a real Prometheus fires the study's declared alerts (FlkDedupStoreSlow from
the store-call histogram among them) and keeps the rest silent; nothing acked is lost. The
counterfactual is the same run's seconds before the fault: no 429 there, hundreds inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from flk.impl.lab.cluster.regions import pg_bindir

from .conftest import FLK, in_full_tier, leftovers

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def prefix():
    """This file's namespace prefix (``flksl`` + the test process): never one of another run."""
    return f"flksl{os.getpid() % 0x1000:x}"


@in_full_tier
@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_a_slow_store_sheds_and_pages_on_a_real_cluster_as_in_the_simulator(backend, redis_and_prometheus, prefix,
                                                                             tmp_path):
    """The simulator's fault delays each store call 300 ms, the forwarder each round trip. A
    batch makes one store call (its put-if-absent; no lookup without hooks). Redis: a call is one
    round trip, the scenario as it is; PostgreSQL: two (the pool's connection check and the
    pipelined transaction), so the run holds each 150 ms for the same 300 ms a call."""
    extra = []
    if backend == "postgres":
        if pg_bindir() is None or shutil.which("runuser") is None:
            pytest.fail("needs the PostgreSQL server binaries (make services)")
        extra = ["--set", "faults.0.ms=150"]
    proc = subprocess.run([*FLK, "cluster", "run", "dedup-slow", "--backend", backend, "--seed", "1", "--out",
                           str(tmp_path), "--json", "--prefix", prefix, "--no-plots", "--prometheus", *extra],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
    events = [json.loads(line) for line in (tmp_path / "dedup-slow" / "1" / "history.jsonl").open()]
    start = next(e for e in events if e["type"] == "fault.start")
    end = next(e for e in events if e["type"] == "fault.end")
    assert start["kind"] == "store_latency" and start["ms"] == (300.0 if backend == "redis" else 150.0)
    assert start["applied"] and end["applied"]
    assert start["mechanism"].startswith("delaying proxy")
    checks = {c["id"]: c for c in res["invariants"]}
    for alert in ("FlkDedupStoreSlow", "FlkOverloaded", "FlkLatencyP95High", "FlkErrorBudgetBurnFast"):
        assert checks[f"ALERT-{alert}"]["ok"] and checks[f"ALERT-{alert}"]["exercised"], checks[f"ALERT-{alert}"]
    assert checks["ALERT-FlkHttp5xx"]["ok"] and checks["INV-NO-ACKED-LOSS"]["ok"]

    def shed(lo: int, hi: int) -> int:
        return sum(1 for e in events if e["type"] == "client.recv" and e["status"] == 429 and lo <= e["t_us"] < hi)

    assert shed(0, start["t_us"]) == 0  # fast store: nothing shed
    assert shed(start["t_us"], end["t_us"]) > 200  # seed 1: the simulator sheds about 500 in the window, as real runs
    ok_before = sum(1 for e in events if e["type"] == "client.recv" and e["status"] == 200 and e["t_us"] < start["t_us"])
    ok_inside = sum(1 for e in events if e["type"] == "client.recv" and e["status"] == 200
                    and start["t_us"] + 2_000_000 <= e["t_us"] < end["t_us"])
    # about 190 a second before, about 25 a second once the limit shrank (its minimum in flight per batch)
    assert ok_before / (start["t_us"] / 1e6) > 3 * ok_inside / ((end["t_us"] - start["t_us"] - 2_000_000) / 1e6)
