"""disk_full on a real cluster: the region's WAL lives on a small tmpfs the fault fills to
ENOSPC and the heal frees. The server must fail closed while full (5xx, never a 200 it cannot
keep), accept again after the heal, and lose nothing it acknowledged; the mount is gone after
the run. The simulator has no disk-space model and refuses the scenario (exit 2)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

from .conftest import FLK, SCENARIOS, leftovers

DISK_FULL = str(SCENARIOS / "cluster-disk-full.toml")


def test_disk_full_fails_closed_and_recovers_on_a_real_cluster(cluster_ready, prefix, tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", DISK_FULL, "--seed", "1", "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots"], capture_output=True, text=True, timeout=180)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    checks = {c["id"]: c for c in res["invariants"]}
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    for inv in ("INV-FWW", "INV-IDEMPOTENT-REPLAY", "INV-NO-ACKED-LOSS"):
        assert checks[inv]["ok"] and checks[inv]["exercised"], checks[inv]
    assert checks["SOMETIMES-DISK-FULL-REFUSED"]["ok"], checks["SOMETIMES-DISK-FULL-REFUSED"]
    assert "tmpfs" in res["cluster"]["mechanisms"]["disk_full"]
    events = [json.loads(line) for line in (tmp_path / "cluster-disk-full" / "1" / "history.jsonl").open()]
    start, end = (e for e in events if e["type"] in ("fault.start", "fault.end"))
    assert start["filled_bytes"] > 1 << 20
    after = Counter(e["status"] for e in events if e["type"] == "client.recv" and e["t_us"] > end["t_us"])
    assert after[200] > 0  # the region accepts again once the filler is gone
    assert not any(e["type"] == "client.give_up" for e in events)
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
    with open("/proc/mounts", encoding="utf-8") as f:
        assert not any("flk-cluster-cluster-disk-full" in line for line in f)


def test_the_simulator_refuses_disk_full(tmp_path):
    proc = subprocess.run([*FLK, "sim", "run", DISK_FULL, "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "disk_full" in proc.stderr and "real cluster" in proc.stderr
    assert "Traceback" not in proc.stderr
