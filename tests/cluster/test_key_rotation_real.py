"""key-rotation on a real cluster (full tier: about 40 s per run): at 5 s every tenant's key
rotates -- the runner rewrites the servers' tenants file (the next key valid from now, the old
one for the 5 s overlap), sends SIGHUP, and once the server confirmed its reload the agents sign
with the new key; at 6 s the region crashes and restarts inside the overlap, reading the file.
As in the simulator: no error, every check holds. The counterfactual runs the same study with
the signal never sent and no crash (whose restart reads the file): the server keeps its old keys,
the agents' new-key PCS are refused and the run says so."""

from __future__ import annotations

import json

from flk.impl.lab.cluster import runner
from flk.impl.lab.cluster.regions import RegionProcess
from flk.sim.scenario import load

from .conftest import cluster_run, in_full_tier


@in_full_tier
def test_keys_rotate_on_a_real_cluster_without_an_error(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "key-rotation")
    checks = {c["id"]: c for c in res["invariants"]}
    assert res["valid"], [c for c in res["invariants"] if not c["ok"]]
    assert checks["SOMETIMES-ROTATED-KEY-ACCEPTED"]["ok"], checks["SOMETIMES-ROTATED-KEY-ACCEPTED"]
    start = next(e for e in events if e["type"] == "fault.start" and e["kind"] == "rotate_key")
    assert start["reloaded"] == start["running"] == 1 and start["target"] == "t0,t1"
    assert res["metrics"]["error_rate"] == 0.0
    assert res["alerts"]["firing"] == {}  # a rotation done right pages nothing (signature failures among them)
    assert 4.9 <= start["t_us"] / 1e6 <= 6.0  # the rotation (5 s) before the crash (6 s)


@in_full_tier
def test_a_server_that_never_reloads_refuses_the_new_key_and_the_run_says_so(cluster_ready, prefix, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(RegionProcess, "reload", lambda self: False)  # SIGHUP never sent
    # the crash moved past the run's end: its restart would read the rewritten file (as it should)
    res = runner.run(load("key-rotation", ["faults.1.at_s=100"]), 1, out=tmp_path, plots=False, prefix=prefix)
    checks = {c.id if hasattr(c, "id") else c["id"]: c for c in res["invariants"]}
    rotated = checks["SOMETIMES-ROTATED-KEY-ACCEPTED"]
    assert not (rotated.ok if hasattr(rotated, "ok") else rotated["ok"]), rotated
    assert not res["valid"]
    events = [json.loads(line) for line in (tmp_path / "key-rotation" / "1" / "history.jsonl").open()]
    start = next(e for e in events if e["type"] == "fault.start" and e["kind"] == "rotate_key")
    assert start["reloaded"] == 0 and start["running"] == 1
    refused = [e for e in events if e["type"] == "client.recv" and e["status"] == 401]
    assert refused, "the agents' new-key PCS were not refused"
