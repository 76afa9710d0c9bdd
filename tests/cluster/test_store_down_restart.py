"""The catalog's crash-store-down study on a real cluster: a real ``flk serve`` SIGKILLed while
its Redis is SIGSTOPped does not start until the store is back.

flk serve stops rather than serve with an un-replayed inbox WAL (a store that does not answer a
ping, or refuses a record of the start-up replay, ends the start); the runner then starts it again
``restart_delay_s`` later, as a process manager does. The simulator's regions do the same
(tests/quality/test_sim_mutants.py: a region that served anyway is caught); here the real side:
the study is valid, at least one start failed, the region became ready only after the store came
back, and a real Prometheus fired FlkBackendDown as the scenario declares."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import FLK, leftovers

pytestmark = [pytest.mark.redis]


@pytest.fixture
def prefix():
    """This file's namespace prefix (``flksd`` + the test process): never one of another run."""
    return f"flksd{os.getpid() % 0x1000:x}"


def test_a_region_killed_while_its_store_is_down_starts_only_once_the_store_is_back(redis_and_prometheus, prefix,
                                                                                    tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", "crash-store-down", "--backend", "redis", "--seed", "1",
                           "--out", str(tmp_path), "--json", "--prefix", prefix, "--no-plots", "--prometheus"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert proc.returncode == 0, ([c for c in res["invariants"] if not c["ok"]], [s for s in res["slos"] if not s["ok"]])
    events = [json.loads(line) for line in (tmp_path / "crash-store-down" / "1" / "history.jsonl").open()]
    store_back = next(e["t_us"] for e in events if e["type"] == "fault.end" and e["kind"] == "store_down")
    crash_end = next(e["t_us"] for e in events if e["type"] == "fault.end" and e["kind"] == "crash")
    ready = next(e for e in events if e["type"] == "region.ready")
    assert ready["failed_starts"] >= 1, ready  # a start exited while the store was stopped
    # each exit is in the history, with flk serve's reason, as the simulator's regions record theirs;
    # a start boots (0.3-1 s) before it pings: the next exit comes restart_delay_s (1 s) + a boot later
    exits = [e for e in events if e["type"] == "srv.start_failed"]
    assert len(exits) == ready["failed_starts"], exits
    assert all(e["region"] == "r1" and "does not answer a ping" in e["reason"] for e in exits), exits
    assert crash_end < exits[0]["t_us"] and all(b["t_us"] - a["t_us"] > 1.1e6 for a, b in zip(exits, exits[1:], strict=False))
    assert store_back < ready["t_us"], (store_back, ready)  # ready only once the store answered again
    assert store_back - crash_end > 3e6  # the store stayed down well past the crash's end
    checks = {c["id"]: c for c in res["invariants"]}
    fired = checks["ALERT-FlkBackendDown"]
    assert res["alerts"]["engine"] == "prometheus" and fired["ok"] and fired["exercised"], fired
    for inv in ("INV-NO-ACKED-LOSS", "INV-AT-LEAST-ONCE", "SOMETIMES-STORE-DOWN-503"):
        assert checks[inv]["ok"], checks[inv]
    assert res["metrics"]["error_rate"] == 0.0
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
