"""reader_rewind on a real cluster: each region's flk serve stops gracefully, its replication
reader's watermarks (``DATA_DIR/crr/read.json``) are deleted and it restarts on the same data
dir, so the reader re-reads every shipped segment. Every answer stored at the rewind must be
byte-identical in the final reads (``crr.rewind_check``, folded into INV-IDEMPOTENT-REPLAY as
in the simulator) and the regions converge. The default tier rewinds one region; the full tier
(``FLK_CLUSTER_FULL=1``) both, one after the other."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import FLK, SCENARIOS, full_tier, leftovers

REWIND = str(SCENARIOS / "cluster-rewind.toml")


@pytest.mark.parametrize("targets", [
    ["eu"],  # the default tier: one graceful restart
    pytest.param(["eu", "us"], marks=full_tier),  # one region after the other
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
    assert "read.json" in res["cluster"]["mechanisms"]["reader_rewind"]
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
