"""The black-box history checker on simulator runs (``flk.sim.observed``).

A catalog scenario run at seed 1 on the small tier is judged from what its
clients observed only; it must check valid, as the white-box checkers say,
and not vacuously (acknowledgements, indeterminate requests from the crashes,
final reads checked). Anomalies planted into the observed history (a lost
final entry, an overwrite answered 200) must be found with their witness --
so the adapter really passes answers and final reads through.
"""

from __future__ import annotations

import pytest

from flk.model import history as hc
from flk.sim import api
from flk.sim.observed import check_run, final_reads, observed_ops

# crash-restart's two crashes (5 s, 12 s) both under load: cut before the second, its restart's 429s
# (the listen backlog shed by the fresh limit, retried 4-16 s later) met a quiescence with few requests
SMALL = ["scenario.duration_s=14", "scenario.quiescence_s=10", "workload.rate_per_s=600"]


@pytest.fixture(scope="module")
def crash_run():
    return api.run("crash-restart", seed=1, overrides=SMALL, plots=False)


def test_inv_fww_inv_idempotent_replay_inv_no_acked_loss_black_box_crash_restart_seed_1(crash_run):
    events = crash_run.history.events
    report = check_run(events)
    assert report.ok, "\n".join(a.describe() for a in report.anomalies[:5])
    assert crash_run.valid  # the white-box checkers agree
    sends = sum(1 for e in events if e["type"] == "client.send")
    assert report.ops == sends and report.acked > 1000
    assert report.indeterminate > 0  # the crashes left requests unanswered: judged as maybe-applied
    assert report.final_checked == report.acked


def test_inv_fww_inv_no_acked_loss_black_box_sim_catches_planted_anomalies(crash_run):
    events = crash_run.history.events
    ops = observed_ops(events)
    final = final_reads(events)
    victim = next(op for op in ops if op.fresh)
    store = {region: dict(entries) for region, entries in final.items()}
    del store[victim.region][(victim.tenant, victim.pcs_id)]
    lost = hc.check(ops, store)
    assert [(a.invariant, a.kind, a.ops[0]) for a in lost.anomalies] == [
        (hc.INV_NO_ACKED_LOSS, "acked-absent", victim)]
    refused = next(op for op in ops if op.status == 409)
    overwrite = hc.Op(refused.id, refused.tenant, refused.pcs_id, refused.digest, refused.invoke, refused.complete,
                      200, False, refused.region)
    report = hc.check([overwrite if op is refused else op for op in ops], final)
    kinds = {(a.invariant, a.kind) for a in report.anomalies if overwrite in a.ops}
    assert (hc.INV_FWW, "two-acked-digests") in kinds


def test_black_box_multi_region_run_is_judged_per_region():
    res = api.run("crr-normal", seed=1, overrides=SMALL, plots=False)
    ops = observed_ops(res.history.events)
    assert len({op.region for op in ops}) > 1
    report = check_run(res.history.events)
    assert report.ok, "\n".join(a.describe() for a in report.anomalies[:5])
    assert report.final_checked == report.acked > 1000
