"""Planted bugs the simulator's checkers must catch (Hypothesis' `quality/` idea).

Each mutant breaks one invariant in the implementation as driven by the
simulator; a catalog scenario run with it must come out invalid, with the
right INV id failing.
"""

from __future__ import annotations

import json

from flk.impl.verifier.pipeline import DedupGet, Verifier
from flk.sim import api
from flk.sim.region import Region

SMALL = ["scenario.duration_s=8", "scenario.quiescence_s=8"]


class DedupBeforeVerify(Verifier):
    """Mutant: probes the dedup store with the claimed pcs_id before verifying the signature."""

    def handle(self, req, now, *, replay=False):
        tenant = self.tenants.resolve(req.tenant)
        try:
            pid = json.loads(req.body)["pcs_id"]
        except (ValueError, KeyError, TypeError):
            pid = None
        inner = super().handle(req, now, replay=replay)
        reply = yield next(inner)  # the WAL append (or the final Emit)
        if tenant is not None and isinstance(pid, str) and not replay:
            yield DedupGet(tenant.tenant_id, pid, now)
        while True:
            try:
                eff = inner.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = yield eff


class AckBeforeFsync(Region):
    """Mutant: answers the WAL append at once and fsyncs later (group commit still runs)."""

    def _wait_durable(self, index):
        super()._wait_durable(index)
        ev = self.env.event()
        ev.succeed(index)
        return ev


def failing(res):
    return {c["id"] for c in res.results["invariants"] if not c["ok"]}


def test_quality_dedup_before_verify_is_caught():
    res = api.run("crash-restart", seed=1, overrides=SMALL, verifier_cls=DedupBeforeVerify)
    assert not res.valid
    assert "INV-VERIFY-BEFORE-DEDUP" in failing(res)


def test_quality_ack_before_fsync_is_caught():
    res = api.run("crash-restart", seed=1, overrides=SMALL, region_cls=AckBeforeFsync)
    assert not res.valid
    assert "INV-WAL-FIRST" in failing(res)


def test_quality_baseline_is_valid():
    res = api.run("crash-restart", seed=1, overrides=SMALL)
    assert res.valid, failing(res)
