"""reader_rewind on a real cluster: each region's running flk serve is ordered (the one-shot file
``DATA_DIR/crr.rewind``) to forget its replication reader's watermarks, live, so the reader
re-reads every shipped segment -- as the simulator's fault does. Every answer stored at the rewind must be
byte-identical in the final reads (``crr.rewind_check``, folded into INV-IDEMPOTENT-REPLAY as
in the simulator) and the regions converge. The default tier rewinds one region; the full tier
(``FLK_CLUSTER_FULL=1``) both."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import FLK, SCENARIOS, full_tier, leftovers

REWIND = str(SCENARIOS / "cluster-rewind.toml")


@pytest.mark.parametrize("targets", [
    ["eu"],  # the default tier: one region
    pytest.param(["eu", "us"], marks=full_tier),  # both
])
def test_reader_rewind_changes_no_stored_answer_on_a_real_cluster(targets, cluster_ready, prefix, tmp_path):
    target = json.dumps(targets[0] if len(targets) == 1 else "*")
    proc = subprocess.run([*FLK, "cluster", "run", REWIND, "--seed", "1", "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots", "--set", f"faults.0.target={target}"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    checks = {c["id"]: c for c in res["invariants"]}
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    events = [json.loads(line) for line in (tmp_path / "cluster-rewind" / "1" / "history.jsonl").open()]
    rewinds = [e for e in events if e["type"] == "crr.rewind_check"]
    assert sorted(e["region"] for e in rewinds) == targets and all(e["checked"] > 0 for e in rewinds), rewinds
    assert checks["INV-IDEMPOTENT-REPLAY"]["ok"]
    assert checks["INV-IDEMPOTENT-REPLAY"]["checked"] >= sum(e["checked"] for e in rewinds)
    assert checks["INV-CONVERGENCE"]["ok"] and checks["INV-CONVERGENCE"]["exercised"]
    assert "crr.rewind" in res["cluster"]["mechanisms"]["reader_rewind"]
    started = [e for e in events if e["type"] == "fault.start" and e["kind"] == "reader_rewind"]
    assert sorted(e["target"] for e in started) == targets and all(e["taken"] for e in started), started
    assert not [e for e in events if e["type"] == "region.ready"], "a live rewind restarts nothing"
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
