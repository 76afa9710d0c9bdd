"""A status the controller cannot resume -- unreadable bytes, or a phase another table version
named -- is started over from a fresh observation (every action is idempotent), and the
transitions after that are audited: they are numbered after the last one the audit log holds,
not from 1 again (the audit skipped the renumbered ones as already written, silently)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.operator import controller, records, table

from .harness import T0, Controller, Deployment, policy

DAMAGE = {
    "unreadable": b"{\"phase\": \"Co",
    "another table's phase": None,  # a whole status whose phase this table does not know
    "wrong types": None,  # a status whose round is a string
}


def _damaged(kind: str, good: dict) -> bytes:
    if kind == "unreadable":
        return DAMAGE[kind]
    doc = dict(good)
    if kind == "another table's phase":
        doc["phase"] = "Resharding"
    else:
        doc["round"] = "2"
    return json.dumps(doc).encode()


def _run(ctl, dep, start: int, n: int) -> dict:
    status = None
    for i in range(start, start + n):
        now = T0 + i
        dep.write(0, now)
        for s in range(len(dep.servers)):
            dep.refresh(s)
        status = ctl.tick(now, {"t": now, "latency_p95_ms": 10.0}, "none")
        if table.phase(ctl.pol.kind, status["phase"]).terminal:
            break
    return status


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_status_started_over_keeps_auditing_its_transitions(kind):
    pol = policy()
    dep = Deployment(2, 30)
    ctl = Controller(pol, dep)
    before = _run(ctl, dep, 0, 8)
    assert before["transitions"] >= 2  # transitions were audited before the damage
    audited_before = len(ctl.audit_entries())
    ctl.fs.write_atomic(ctl.statuses.path(pol.key), _damaged(kind, before))
    first = ctl.tick(T0 + 8, {"t": T0 + 8, "latency_p95_ms": 10.0}, "none")
    if kind != "unreadable":  # the problem is this step's ActionFailed condition
        failed = next(c for c in first["conditions"] if c["type"] == "ActionFailed")
        assert failed["status"] == "True" and failed["message"].startswith("status started over: ")
    status = _run(ctl, dep, 9, 300)
    assert status["phase"] == "Completed" and dep.box["state"]["phase"] == "cleaned"
    assert dep.lost_or_changed(T0 + 1000) == []
    entries = ctl.audit_entries()
    by_id = {e["pcs_id"]: e["outcome"] for e in entries}
    assert len(by_id) == len(entries) == status["transitions"]  # every transition once, none skipped
    after = [h for h in status["history"] if h["at"] >= T0 + 8]  # fired after the start-over
    assert after and audited_before == before["transitions"]
    # numbered after the ones already audited, and each in the log as itself
    assert [h["seq"] for h in after] == list(range(before["transitions"] + 1, status["transitions"] + 1))
    assert all(by_id[f"{pol.key}#{h['seq']}"] == f"{h['from']}->{h['to']}" for h in after)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["phase", "generation", "transitions", "round", "entered_at",
                                        "healthy_since", "next_cycle", "conditions", "window", "history",
                                        "pending_audit", "progress"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(), st.text(max_size=4),
                                 st.lists(st.dictionaries(st.sampled_from(["type", "t", "seq", "from"]),
                                                          st.integers(0, 3) | st.text(max_size=2), max_size=2),
                                          max_size=2),
                                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))))
def test_reconcile_answers_any_status(doc):
    """Total over the status: any JSON object is resumed or started over, never an exception."""
    pol = policy()
    res = controller.reconcile(pol, doc, {"reachable": True, "sample": {"t": T0, "latency_p95_ms": 1.0}}, T0,
                               after_seq=7)
    problem = controller.status_problem(pol, doc) if doc else "empty"
    if problem:
        assert res.status["transitions"] >= 7 and res.status["phase"] in (
            p.name for p in table.PHASES if p.kind == pol.kind)
    else:
        assert res.status["transitions"] >= doc["transitions"]


def test_last_seq_reads_only_this_policys_numbers():
    seen = {"ShardMigration/a#3", "ShardMigration/a#12", "ShardMigration/ab#40", "ShardMigration/a#x",
            "ShardMigration/a#\u00b2", "CRRPolicy/a#99"}
    assert records.last_seq(seen, "ShardMigration/a") == 12
    assert records.last_seq(set(), "ShardMigration/a") == 0
