"""The catalog calibration tier (long: about 2 minutes per scenario; run with FLK_CALIBRATION=1):
``flk sim calibrate`` for the ten geo-DR and crash scenarios, quota-exhaustion, key-rotation,
nemesis-random and dedup-slow, one real cluster run each beside three simulator seeds. Every one runs on the real
cluster (region-failover behind the real health-checked router) and gives a complete table (both
sides of every figure), its files, and exit 1 exactly when a figure is outside tolerance or the
validity verdicts differ."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import FLK

pytestmark = [pytest.mark.calibration, pytest.mark.skipif(os.environ.get("FLK_CALIBRATION") != "1",
                                                          reason="the calibration tier runs with FLK_CALIBRATION=1")]

CATALOG = {"crr-normal": [], "region-failover": [], "wal-replay-idempotency": [], "split-brain": [], "crr-rpo": [],
           "crash-restart": [], "dedup-outage": ["--backend", "redis"], "clock-skew": [], "crr-ship-stopped": [],
           "crr-lag-alert": [], "quota-exhaustion": [], "key-rotation": [],
           "nemesis-random": ["--backend", "redis"], "dedup-slow": ["--backend", "redis"]}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_calibration(name, cluster_ready, prefix, tmp_path):
    env = dict(os.environ, FLK_CLUSTER_PREFIX=prefix)
    proc = subprocess.run([*FLK, "sim", "calibrate", name, "--seeds", "1-3", "--real-runs", "1", "--out",
                           str(tmp_path), "--json", *CATALOG[name]], capture_output=True, text=True, timeout=900,
                          env=env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["ok"] else 1)
    assert report["figures"] and all(len(r["sim"]) + r["sim_missing"] == 3 and len(r["real"]) + r["real_missing"] == 1
                                     for r in report["figures"])
    assert all(r["agrees"] is False for r in report["figures"] if r["real_missing"] or r["sim_missing"])
    assert (tmp_path / "calibration.html").exists()
    print("CALIBRATION", json.dumps({"scenario": name, "ok": report["ok"], "figures": [
        {k: r[k] for k in ("figure", "sim_mean", "sim_ci95", "real_mean", "ratio", "agrees")} for r in
        report["figures"]], "sim_valid": report["sim_valid"], "real_valid": report["real_valid"],
        "real_failed": report["real_invalid_checks"]}, default=str))
