"""INV-OP-RESUME, INV-OP-NO-LOSS, INV-OP-ONE-DECIDER: the controller killed between any
two of its steps, under random health signals, lagging servers and concurrent writes.

Each example drives a live 3 -> 4 shard migration of an in-memory deployment (two
server processes over shared shard stores) with the real controller, the real
migration steps and a real audit log on a crashable disk. Hypothesis chooses, per
tick, the health sample (good, bad, or none), where the controller is killed (never,
after observing, after saving its status, after the audit write, after an action),
which server refreshes its phase and how many keys are written or rewritten.
Deterministic (derandomized): the same examples on every run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.operator import table
from flk.impl.operator.controller import decider_of

from .harness import KILL_POINTS, T0, Controller, Deployment, Killed, policy

TICK = st.tuples(st.sampled_from(["good", "good", "good", "bad", "none"]),
                 st.sampled_from(KILL_POINTS + ("none",) * 6),
                 st.integers(0, 1), st.integers(0, 3), st.booleans(), st.booleans())


def run(ticks, servers: int = 2, keys: int = 40, max_ticks: int = 400):
    pol = policy()
    dep = Deployment(servers, keys)
    ctl = Controller(pol, dep)
    status = None
    kills = 0
    for i in range(max_ticks):
        now = T0 + i
        health, kill, srv, nwrites, rewrite, lag = ticks[i] if i < len(ticks) else ("good", "none", i % servers, 1,
                                                                                 False, False)
        sample = None if health == "none" else {"t": now, "latency_p95_ms": 10.0 if health == "good" else 200.0}
        for j in range(nwrites):
            dep.write(srv, now, reuse=(i * 7 + j) % max(1, dep.next_key) if rewrite else None)
        dep.refresh(srv)
        if i % 3 == 0 and not lag:  # every server catches up now and then
            for s in range(servers):
                dep.refresh(s)
        dep.check_deciders()
        try:
            status = ctl.tick(now, sample, kill)
        except Killed:
            kills += 1
            ctl.restart()
            continue
        if table.phase(pol.kind, status["phase"]).terminal:
            break
    return pol, dep, ctl, status, kills


def _audited_path(ctl, pol):
    entries = [e for e in ctl.audit_entries() if e["tenant"] == "operator"]
    ids = [e["pcs_id"] for e in entries]
    assert len(ids) == len(set(ids)), f"a transition audited twice: {ids}"
    steps = [e["outcome"].split("->") for e in entries]
    cur = table.first_phase(pol.kind)
    for src, dst in steps:
        assert src == cur, f"audit path broken at {src}->{dst} (was in {cur})"
        assert any(r.source == src and r.target == dst for r in table.rows_from(pol.kind, src)), (src, dst)
        cur = dst
    return cur


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(TICK, min_size=0, max_size=120))
def test_inv_op_resume_killed_anywhere_no_acked_outcome_lost_or_changed(ticks):
    pol, dep, ctl, status, _kills = run(ticks)
    assert status is not None and table.phase(pol.kind, status["phase"]).terminal, status and status["phase"]
    now = T0 + 1000
    assert dep.lost_or_changed(now) == []
    final = _audited_path(ctl, pol)
    assert final == status["phase"]
    mig = dep.box["state"]["phase"]
    if status["phase"] == "Completed":
        assert mig == "cleaned"
    else:
        assert mig in ("rolled_back", "planned")
    for s in dep.servers:
        dep.refresh(dep.servers.index(s))
    assert dep.lost_or_changed(now) == []
    assert dep.one_decider_violations == []
    assert ctl.moves_while_lagging == [], ctl.moves_while_lagging


def test_sometimes_both_outcomes_and_kills_happen():
    """The property above is not vacuous: a healthy run completes, a bad one rolls back,
    and kills at every point happen."""
    good = [("good", "none", 0, 1, False, False)] * 200
    _p, dep, _c, status, _k = run(good)
    assert status["phase"] == "Completed" and dep.box["state"]["phase"] == "cleaned"
    bad = [("good", "none", 0, 1, False, False)] * 6 + [("bad", "none", 0, 1, False, False)] * 200
    _p, dep, ctl, status, _k = run(bad)
    assert status["phase"] == "RolledBack"
    assert [e["outcome"] for e in ctl.audit_entries()][-2:] == [f"{status['history'][-2]['from']}->RollingBack",
                                                                "RollingBack->RolledBack"]
    kills = [(["good"] * 1)[0], ]
    for point in KILL_POINTS[1:]:
        ticks = [("good", point if i % 4 == 1 else "none", i % 2, 1, False, False) for i in range(200)]
        _p, dep, _c, status, k = run(ticks)
        assert k > 0, point
        assert status["phase"] == "Completed", (point, status["phase"])
        assert dep.lost_or_changed(T0 + 1000) == []
    assert kills


def test_unknown_health_holds_never_rolls_back():
    """No samples at all (a partition cut the metrics): the migration holds before
    Cutover and never rolls back."""
    ticks = [("none", "none", 0, 1, False, False)] * 120
    _p, _d, _c, status, _k = run(ticks, max_ticks=120)
    assert status["phase"] == "Verifying"
    assert all(h["to"] != "RollingBack" for h in status["history"])


def test_inv_op_one_decider_rollback_from_cutover_never_leaves_a_server_deciding_alone():
    """A breach in Cutover while one server still applies cut_over: the rollback first goes
    back to verified (both rings mirrored) and stops mirroring only when every server decides
    on the old ring -- rolling back straight to rolled_back left one server deciding on the
    new ring while another no longer mirrored to it."""
    pol = policy()
    dep = Deployment(2, 40)
    ctl = Controller(pol, dep)
    status, cut, disagreed = None, False, 0
    for i in range(300):
        now = T0 + i
        st = dep.box.get("state")
        ph = st["phase"] if st else None
        cut = cut or ph == "cut_over"
        bad = cut  # the new ring hurts from the cutover on
        dep.write(0, now)
        dep.write(1, now, reuse=i % 5)
        dep.refresh(0)
        if not (bad and ph != "cut_over") or i % 7 == 0:  # server 1 lags once the rollback began
            dep.refresh(1)
        dep.check_deciders()
        disagreed += len({decider_of(s.phase) for s in dep.servers}) > 1
        status = ctl.tick(now, {"t": now, "latency_p95_ms": 200.0 if bad else 10.0}, "none")
        if table.phase(pol.kind, status["phase"]).terminal:
            break
    assert status["phase"] == "RolledBack"
    assert [h["to"] for h in status["history"]][-3:] == ["Cutover", "RollingBack", "RolledBack"]
    assert disagreed > 0, "the servers never disagreed on the decider: the test exercised nothing"
    assert dep.one_decider_violations == [] and ctl.moves_while_lagging == []
    assert dep.lost_or_changed(T0 + 1000) == []
