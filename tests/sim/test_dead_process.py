"""``region_defaults.dead_process``: what a client of a crashed region's process sees.

``silent`` (the default): its requests vanish and each attempt waits its timeout. ``refuse``: what a
real host does when the process is SIGKILLed (``flk cluster``): a connect is refused and the held
connections are reset at once, so the client's retries come fast and a short retry budget runs
out during the restart -- as the real cluster's crash-restart showed (1.6-2.1 % of requests given
up, the simulator with ``silent`` none)."""

from __future__ import annotations

from collections import Counter

from flk.sim import api

# the first crash at 5.0045 s for 2 s (the scenario has 1.5 s; the real run this mirrors, 2 s): three requests in flight then (two in the running batch, one queued)
# quiescence 16 s: the second crash (12 s) restarts at about 14 s and sheds its listen backlog with
# 429 + Retry-After 4 s, retried 4-8 s later
SHORT = ["scenario.duration_s=8", "scenario.quiescence_s=16", "faults.0.at_s=5.0045", "faults.0.duration_s=2.0",
         "workload.max_attempts=8"]


def _run(mode: str):
    return api.run("crash-restart", seed=1, overrides=[*SHORT, f"region_defaults.dead_process={mode}"], plots=False)


def test_a_dead_process_refuses_and_resets_at_once_and_a_short_budget_runs_out():
    silent, refuse = _run("silent"), _run("refuse")
    end = next(e["t_us"] for e in silent.history.events if e["type"] == "fault.end" and e["kind"] == "crash")
    quiet = [e for e in silent.history.events if e["type"] == "client.timeout" and e["t_us"] < end]
    assert quiet and not any("error" in e for e in quiet)  # silent: only the attempt timeouts while it is down
    # once the crash is over the host runs and refuses connects until the restarted process listens
    assert all(e["t_us"] >= end for e in silent.history.events if e["type"] == "client.timeout" and "error" in e)
    ev = refuse.history.events
    crash = next(e["t_us"] for e in ev if e["type"] == "fault.start" and e["kind"] == "crash")
    errors = Counter(e.get("error") for e in ev if e["type"] == "client.timeout")
    assert errors["ConnectionRefusedError"] > 100 and errors["ConnectionResetError"] == 3, errors
    sent = {(e["req"], e["attempt"]): e["t_us"] for e in ev if e["type"] == "client.send"}
    timeout_us = 1_000_000  # workload.timeout_ms
    for e in ev:
        if e["type"] == "client.timeout" and e.get("error") == "ConnectionRefusedError":
            assert e["t_us"] - sent[(e["req"], e["attempt"])] < timeout_us / 10  # a round trip, not the timeout
        if e["type"] == "client.timeout" and e.get("error") == "ConnectionResetError":
            assert e["t_us"] - crash < timeout_us / 10 and sent[(e["req"], e["attempt"])] <= crash
    # fast failures spend the 8 attempts during the 2 s down and the restart: some clients give up, as on the real cluster
    # (silent: the timeouts while it is down spend few attempts; the refused connects of the boot and the
    # restart's 429s can still use the last ones: 0.09 % here, refuse 6.1 %)
    assert 10 * silent.results["metrics"]["error_rate"] < refuse.results["metrics"]["error_rate"]
    (lonce,) = [c for c in refuse.results["invariants"] if c["id"] == "INV-AT-LEAST-ONCE"]
    assert lonce["violations"][0]["why"].startswith("the client gave up (8 attempts; last transport: Connection")
    assert silent.digest != refuse.digest


def test_a_dead_process_fails_health_checks_at_once():
    """Behind the routing layer the health check of a dead region is refused after a round trip
    instead of waiting the probe timeout: detection is shorter by one timeout per failed check
    (region-failover: 3 checks of 500 ms)."""
    fig = {mode: api.run("region-failover", seed=1, plots=False,
                         overrides=[f"region_defaults.dead_process={mode}"]).results["metrics"]
           for mode in ("silent", "refuse")}
    saved = fig["silent"]["failover_detection_s"] - fig["refuse"]["failover_detection_s"]
    assert abs(saved - 3 * 0.5) < 0.05, fig
    assert fig["refuse"]["rto_s"] < fig["silent"]["rto_s"]
