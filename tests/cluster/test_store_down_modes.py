"""The two shapes of a dedup outage on a real cluster, as the simulator runs them (``store_down``
``mode``): ``refuse`` -- an nftables rule in the region's namespace resets every packet to its
Redis port, each store call fails at once and the server answers 503 (fail closed); ``hang`` --
a SIGSTOP, each call waits the server's 2 s store timeout, longer than the clients' 1 s, so the
outage shows as shed answers (429) and timed-out attempts instead.

Both are the catalog's studies (dedup-outage, dedup-freeze) with their alert declarations,
judged by a real Prometheus that scraped the regions from the run's first second (it used to
begin ~5 s late: its discovery manager hands static targets over at its next update)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import FLK, in_full_tier, leftovers

pytestmark = [pytest.mark.redis]


@pytest.fixture
def prefix():
    """This file's namespace prefix (``flkmd`` + the test process): never one of another run."""
    return f"flkmd{os.getpid() % 0x1000:x}"


def _run(name: str, prefix: str, out) -> tuple[dict, list[dict]]:
    proc = subprocess.run([*FLK, "cluster", "run", name, "--backend", "redis", "--seed", "1", "--out", str(out),
                           "--json", "--prefix", prefix, "--no-plots", "--prometheus"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
    # scraped from the start: one scrape a second over the whole run (it missed the first ~5 s)
    assert res["alerts"]["scrapes"]["r1"] >= res["alerts"]["end_s"], res["alerts"]["scrapes"]
    events = [json.loads(line) for line in (out / name / "1" / "history.jsonl").open()]
    return res, events


def _in_window(events: list[dict], typ: str, pred=lambda e: True) -> int:
    start = next(e["t_us"] for e in events if e["type"] == "fault.start")
    end = next(e["t_us"] for e in events if e["type"] == "fault.end")
    return sum(1 for e in events if e["type"] == typ and start <= e["t_us"] <= end + 1_000_000 and pred(e))


def test_a_refused_store_fails_closed_and_its_alerts_fire(redis_and_prometheus, prefix, tmp_path):
    res, events = _run("dedup-outage", prefix, tmp_path)
    start = next(e for e in events if e["type"] == "fault.start")
    assert start["mode"] == "refuse" and start["mechanism"].startswith("nftables reject")
    checks = {c["id"]: c for c in res["invariants"]}
    for alert in ("FlkDedupStoreDown", "FlkDedupStoreErrors", "FlkHttp5xx", "FlkErrorBudgetBurnFast"):
        assert checks[f"ALERT-{alert}"]["ok"] and checks[f"ALERT-{alert}"]["exercised"], checks[f"ALERT-{alert}"]
    assert _in_window(events, "client.recv", lambda e: e["status"] == 503) > 100  # answered at once, not hung
    assert _in_window(events, "client.timeout") < 10


@in_full_tier  # the default tier runs the refused store above; this is its frozen twin
def test_a_frozen_store_sheds_and_times_out_instead(redis_and_prometheus, prefix, tmp_path):
    res, events = _run("dedup-freeze", prefix, tmp_path)
    start = next(e for e in events if e["type"] == "fault.start")
    assert start["mode"] == "hang" and start["mechanism"].startswith("SIGSTOP")
    checks = {c["id"]: c for c in res["invariants"]}
    assert checks["ALERT-FlkOverloaded"]["ok"] and checks["ALERT-FlkOverloaded"]["exercised"]
    assert checks["ALERT-FlkHttp5xx"]["ok"]  # declared silent: no 503 reached a client
    assert _in_window(events, "client.recv", lambda e: e["status"] == 503) == 0
    assert _in_window(events, "client.recv", lambda e: e["status"] == 429) > 100
    assert _in_window(events, "client.timeout", lambda e: e.get("error") == "TimeoutError") > 10
