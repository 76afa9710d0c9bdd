"""A simulated region starts as flk serve does: the process boots (``start_s``; its host refuses a
connect meanwhile), pings its store, listens, replays its inbox WAL, and only then serves. A
connect made while it replays succeeds: the request waits in the listen backlog and is answered
after the replay (flk serve's workers listen before their application starts:
flk.impl.server.supervisor); a start that fails after listening resets what its backlog held.

A real crash-store-down run showed what the simulator lacked: its starts failed 0.6 s after each
exec (the simulator's at once), and 64-102 requests held during the replay were shed 429 at the
first answer of the fresh process (the simulator refused them during the replay)."""

from __future__ import annotations

import pytest

from flk.sim import api
from flk.sim.scenario import load
from flk.sim.world import World

START = ["scenario.duration_s=16", "scenario.quiescence_s=12"]


def _events(res, *types):
    return [e for e in res.history.events if e["type"] in types]


@pytest.mark.parametrize("start_s", [0.2, 0.45, 0.8])
def test_a_start_boots_for_start_s_before_its_ping(start_s):
    """crash-store-down: the crash ends at 7 s with the store down until 12 s; each start fails
    ``start_s`` after it began, the next begins ``restart_delay_s`` (1 s) later."""
    res = api.run("crash-store-down", seed=1, overrides=[f"region_defaults.start_s={start_s}"])
    failed = [e["t_us"] / 1e6 for e in _events(res, "srv.start_failed")]
    cycle = start_s + 1.0
    assert failed == pytest.approx([7.0 + start_s + k * cycle for k in range(len(failed))], abs=1e-6)
    # the first start after the store is back (12 s) listens start_s after it began
    listening = [e["t_us"] / 1e6 for e in _events(res, "srv.listening")]
    began = 7.0 + len(failed) * cycle
    assert listening == pytest.approx([began + start_s], abs=1e-6) and began + start_s >= 12.0


def test_a_request_sent_while_the_region_replays_waits_and_is_answered_after_the_replay():
    res = api.run("crash-store-down", seed=1)
    listen = _events(res, "srv.listening")[0]["t_us"]
    ready = _events(res, "srv.recovered")[0]["t_us"]
    assert ready - listen > 100_000  # the replay of ~1,100 records takes a while
    sent = {(e["req"], e["attempt"]) for e in _events(res, "client.send") if listen + 5_000 < e["t_us"] < ready - 5_000}
    assert len(sent) > 20
    outcome = {(e["req"], e["attempt"]): e for e in _events(res, "client.recv", "client.timeout")
               if (e["req"], e["attempt"]) in sent}
    refused = [k for k, e in outcome.items() if e["type"] == "client.timeout" and "Refused" in str(e.get("error"))]
    assert refused == []  # the port listens: no connect is refused
    answered = [e for e in outcome.values() if e["type"] == "client.recv"]
    assert answered and all(e["t_us"] >= ready for e in answered)
    # the fresh process's concurrency limit (32) sheds most of that burst with 429
    assert sum(e["status"] == 429 for e in answered) > 10


def test_a_silent_host_refuses_connects_between_the_crash_and_the_listen():
    """dead_process = silent (crash-restart): during the crash a request vanishes (it times out);
    once the crash is over the host runs again and refuses a connect until the process listens."""
    res = api.run("crash-restart", seed=1, overrides=START)
    crash = _events(res, "fault.start")[0]["t_us"]
    end = next(e["t_us"] for e in _events(res, "fault.end") if e["kind"] == "crash")
    listen = _events(res, "srv.listening")[0]["t_us"]
    assert listen - end == pytest.approx(450_000, abs=1)  # start_s's default
    refused = [e["t_us"] for e in _events(res, "client.timeout") if "Refused" in str(e.get("error"))]
    assert refused and all(end <= t <= listen + 10_000 for t in refused if t < listen + 1_000_000)
    assert not [t for t in refused if crash <= t < end]  # the dead host was silent
    timeouts = [e["t_us"] for e in _events(res, "client.timeout") if not e.get("error")]
    assert any(crash < t < end for t in timeouts)


def test_a_start_that_fails_after_listening_resets_its_backlog():
    """crash-store-down with the store failing again while the first start after its return
    replays: the replay is refused, the process exits, and what its backlog held fails at once
    (dead_process = refuse: ConnectionResetError); a later start serves."""
    sc = load("crash-store-down")
    world = World(sc, 1)
    region = world.regions["r1"]

    def second_outage():
        yield world.env.timeout(12.0)
        while region.backlog is None:  # wait for the start that listens
            yield world.env.timeout(0.001)
        while len(region.backlog) < 5:  # a few requests wait in its backlog
            yield world.env.timeout(0.001)
        region.store.available = False  # the store fails again: the replay is refused
        yield world.env.timeout(2.0)
        region.store.available = True

    world.env.process(second_outage())
    history = world.run()
    ev = history.events
    failed = [e for e in ev if e["type"] == "srv.start_failed" and "replay" in e["reason"]]
    assert len(failed) == 1 and failed[0]["replayed"] > 0
    t = failed[0]["t_us"]
    resets = [e for e in ev if e["type"] == "client.timeout" and e["t_us"] >= t
              and e.get("error") == "ConnectionResetError" and e["t_us"] < t + 20_000]
    assert len(resets) >= 5
    assert region.up  # a later start served
