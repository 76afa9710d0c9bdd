"""A crashed region on a real cluster as the scenario names it (``region_defaults.dead_process``),
as the simulator runs it: ``silent`` (the simulator's default: a dead host) -- nftables rules in
the region's namespace drop every packet to and from its server port from just before the
SIGKILL until the restart begins, so every attempt waits its timeout; ``refuse`` -- the live host
refuses a connect at once and resets what the killed process held.

Before, a real crash was always a refusing host, whatever the scenario said: crash-restart (the
default, silent) was ``outside`` in the calibration table for that reason alone. (A small
scenario of its own: the catalog's crash-restart is calibrated in the calibration tier.)"""

from __future__ import annotations

import json
import os
import subprocess

from .conftest import FLK, SCENARIOS, leftovers

SCENARIO = str(SCENARIOS / "cluster-dead-host.toml")


def _crash_window_errors(prefix: str, tmp_path, *sets: str) -> tuple[dict, list[str]]:
    out = tmp_path / (sets[0].rsplit("=", 1)[1] if sets else "default")
    proc = subprocess.run([*FLK, "cluster", "run", SCENARIO, "--seed", "1", "--out", str(out), "--json",
                           "--prefix", prefix, "--no-plots", *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
    events = [json.loads(line) for line in (out / "cluster-dead-host" / "1" / "history.jsonl").open()]
    crash = next(e for e in events if e["type"] == "fault.start" and e["kind"] == "crash")
    end = next(e["t_us"] for e in events if e["type"] == "fault.end" and e["kind"] == "crash"
               and e["t_us"] >= crash["t_us"])
    errors = [e.get("error", "") for e in events if e["type"] == "client.timeout" and e["region"] == crash["target"]
              and crash["t_us"] <= e["t_us"] <= end]
    return {**crash, "results": res}, errors


def test_a_dead_host_is_silent_and_a_live_one_refuses(cluster_ready, tmp_path):
    prefix = f"flkdh{os.getpid() % 0x1000:x}"
    silent, errors = _crash_window_errors(prefix, tmp_path)
    assert "silent" in silent["mechanism"]
    assert errors and all("Refused" not in e and "Reset" not in e for e in errors), errors[:5]
    assert any(e == "TimeoutError" for e in errors)
    checks = {c["id"]: c for c in silent["results"]["invariants"]}
    assert checks["SOMETIMES-CRASH-HIT-TRAFFIC"]["ok"] and checks["INV-NO-ACKED-LOSS"]["ok"]
    refusing, errors = _crash_window_errors(prefix, tmp_path, "region_defaults.dead_process=refuse")
    assert "silent" not in refusing["mechanism"]
    assert any("ConnectionRefusedError" in e for e in errors), errors[:5]
