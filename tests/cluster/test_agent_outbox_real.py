"""agent-crash-outbox on a real cluster (full tier: about a minute): the agents keep real outboxes
on disk (fsync per append); all eight crash while their region is cut off, every delivery they had
open is cancelled, and at the heal each reopens its outbox and resubmits what was pending with the
same signed bytes. Nothing is lost (INV-AT-LEAST-ONCE, INV-NO-ACKED-LOSS) and nothing doubled
(INV-FWW): the simulator's study, against real flk serve."""

from __future__ import annotations

from .conftest import cluster_run, in_full_tier


@in_full_tier
def test_real_agents_resubmit_their_outboxes_after_a_crash(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "agent-crash-outbox")
    checks = {c["id"]: c for c in res["invariants"]}
    assert res["valid"], [c for c in res["invariants"] if not c["ok"]]
    for inv in ("INV-AT-LEAST-ONCE", "INV-NO-ACKED-LOSS", "INV-FWW", "SOMETIMES-OUTBOX-RESUBMITTED"):
        assert checks[inv]["ok"], checks[inv]
    crashes = [e for e in events if e["type"] == "fault.start" and e["kind"] == "agent_crash"]
    assert {e["target"] for e in crashes} == {f"agent-{i}" for i in range(8)}
    cut = sum(e["cut"] for e in crashes)
    resubmitted = [e for e in events if e["type"] == "client.resubmit"]
    # the region was cut off: every cut delivery was still pending in its outbox and comes back
    # (a record given up on later is sent again by the next drain too: at least once each)
    assert cut > 0 and len({e["req"] for e in resubmitted}) >= cut
    # a resubmission carries the signed bytes of the first send
    first = {}
    for e in events:
        if e["type"] == "client.send":
            first.setdefault(e["req"], e["digest"])
            assert first[e["req"]] == e["digest"], e


@in_full_tier
def test_real_agents_send_again_what_their_clients_gave_up_on(prometheus_ready, prefix, tmp_path):
    """Two attempts do not outlast the 3 s partition: clients give up, and each agent's next drain
    (2 s later) sends the record again from its outbox until it is answered."""
    res, events = cluster_run(tmp_path, prefix, "agent-crash-outbox", "--set", "workload.max_attempts=2",
                              "--set", "workload.outbox_drain_s=2")
    checks = {c["id"]: c for c in res["invariants"]}
    assert checks["INV-AT-LEAST-ONCE"]["ok"] and checks["INV-FWW"]["ok"], checks["INV-AT-LEAST-ONCE"]
    gave_up = {e["req"] for e in events if e["type"] == "client.give_up"}
    resubmitted = {e["req"] for e in events if e["type"] == "client.resubmit"}
    assert gave_up and gave_up <= resubmitted  # measured: 433 given up, every one sent again
