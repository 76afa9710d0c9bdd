"""Planted bugs the simulator's checkers must catch (Hypothesis' `quality/` idea).

Each mutant breaks one invariant in the implementation as driven by the
simulator; a catalog scenario run with it must come out invalid, with the
right INV id failing.
"""

from __future__ import annotations

import json

from flk.impl.verifier.pipeline import DedupGet, Verifier
from flk.sim import api
from flk.sim.net import Message
from flk.sim.region import Region
from flk.sim.replication import COPY, ObjectFabric
from flk.sim.topology import objstore_node

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


class CopiesIgnorePartitions(ObjectFabric):
    """Mutant: segment copies between regions' object stores skip the network (and its cuts)."""

    def _send(self, bucket, key, copy, now):
        for dst in sorted(copy.waiting):
            msg = Message(bucket.node, objstore_node(dst), COPY,
                          {"key": key, "src": bucket.region_id, "objects": copy.objects,
                           "oldest": copy.oldest, "records": copy.records})
            self.world.env.process(self._straight(msg))
        copy.attempts += 1
        copy.next_send = now + self.retry_s * 2 ** copy.attempts

    def _straight(self, msg):
        yield self.world.env.timeout(0.002)
        yield self.world.net.mailboxes[msg.dst].put(msg)


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


def test_quality_replication_ignoring_partitions_is_caught_by_the_study_checks():
    """The split-brain counterfactual (conflicts, lag higher with the partition) and the
    partition-length sweep catch replication traffic that does not see partitions."""
    rows = api.counterfactual("split-brain", seed=1, fabric_cls=CopiesIgnorePartitions)
    assert not all(r["ok"] for r in rows), rows
    sweep = api.sensitivity("split-brain", ("faults.0.duration_s", "faults.1.duration_s"), [2, 8], ["conflicts"],
                            seed=1, fabric_cls=CopiesIgnorePartitions)
    assert not api.monotone(sweep, "conflicts"), sweep
