"""An agent with an outbox sends a record again after its client gave up on it (the next run of its
drain loop, ``workload.outbox_drain_s`` later, the same signed bytes): the outbox's promise,
INV-AT-LEAST-ONCE, holds across an outage longer than the client's attempts; without the next
drain the give-ups stay unanswered and the checker names them."""

from __future__ import annotations

from flk.sim import api

# one region dead for 3 s whose host refuses: 3 attempts are spent well inside it
BASE = ["scenario.duration_s=6", "scenario.quiescence_s=12", "workload.rate_per_s=60", "workload.agents=3",
        "workload.max_attempts=3", "workload.outbox=true", "region_defaults.dead_process=\"refuse\"",
        'faults=[{kind = "crash", at_s = 1.0, target = "r1", duration_s = 3.0}]', "slo=[]", "alerts.silent=[]"]


def _run(*extra: str):
    res = api.run("crash-restart", 1, overrides=[*BASE, *extra], plots=False)
    return res, res.history.events


def _types(events, t):
    return [e for e in events if e["type"] == t]


def test_every_record_given_up_is_sent_again_by_the_next_drain_and_answered():
    res, events = _run("workload.outbox_drain_s=2")
    gave_up = {e["req"]: e["t_us"] for e in _types(events, "client.give_up")}
    again = {e["req"]: e["t_us"] for e in _types(events, "client.resubmit")}
    assert len(gave_up) >= 10  # the outage really outlasted the attempts
    assert again.keys() == gave_up.keys()
    assert all(again[r] - gave_up[r] == 2_000_000 for r in gave_up)  # one drain period after the give-up
    check = {c["id"]: c for c in res.results["invariants"]}["INV-AT-LEAST-ONCE"]
    assert check["ok"] and check["checked"] > 0, check
    # the same signed bytes: every attempt of a record, before and after the drain, carried one digest
    digests: dict[int, set] = {}
    for e in _types(events, "client.send"):
        digests.setdefault(e["req"], set()).add(e["digest"])
    assert all(len(digests[r]) == 1 for r in gave_up)


def test_without_a_drain_in_the_run_the_give_ups_are_named():
    res, events = _run("workload.outbox_drain_s=1000")
    assert _types(events, "client.give_up") and not _types(events, "client.resubmit")
    check = {c["id"]: c for c in res.results["invariants"]}["INV-AT-LEAST-ONCE"]
    assert not check["ok"] and all("the client gave up" in v["why"] for v in check["violations"]), check
