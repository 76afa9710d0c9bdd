"""Planted bugs the simulator's checkers must catch (Hypothesis' `quality/` idea).

Each mutant breaks one invariant in the implementation as driven by the
simulator; a catalog scenario run with it must come out invalid, with the
right INV id failing.
"""

from __future__ import annotations

from flk.impl.verifier.pipeline import (
    VERSION_PROFILE,
    Response,
    Verifier,
    _Authenticated,
    payload_digest,
)
from flk.sim import api
from flk.sim.net import Message
from flk.sim.region import Region
from flk.sim.replication import COPY, ObjectFabric
from flk.sim.topology import objstore_node

# crash-restart cut short, both crashes (5 s, 12 s) still under load: cut before the second, it fell
# in the quiescence, where the 429s of the start's listen backlog were most of the few requests
# (FlkOverloaded fired) and their retries (4-8 s later) outlasted a short quiescence
# 16 s: the second crash (12 s, 1 s) restarts with the workload still running; at 14 s its restart's
# shed answers came as the arrivals stopped, and the minute's shed share held FlkOverloaded (seed 1)
SMALL = ["scenario.duration_s=16", "scenario.quiescence_s=10"]


class DedupBeforeVerify(Verifier):
    """Mutant: a request reaches the dedup store with the claimed tenant and pcs_id before its
    signature verified (the core's step 4 says "authenticated" for any known tenant)."""

    def authenticate(self, doc, tenant, now):
        who = super().authenticate(doc, tenant, now)
        if isinstance(who, Response) and tenant is not None:
            return _Authenticated(tenant.tenant_id, VERSION_PROFILE[doc["version"]], payload_digest(doc))
        return who


class AckBeforeFsync(Region):
    """Mutant: treats a batch's WAL records as durable at once; only a later seal fsyncs them."""

    def _make_durable(self, inc):
        return True
        yield  # a generator, like the method it replaces


class ServesUnreplayed(Region):
    """Mutant: a start whose store refused its start-up replay (or did not answer a ping)
    serves anyway, as the simulator's regions once did; flk serve's worker exits instead."""

    def store_answers(self):
        return True

    def _start_failed(self, reason, replayed):
        self.world.history.record(self.env.now, "srv.recovered", region=self.id, replayed=replayed)
        self.up = True
        self.world.net.down.discard(self.id)
        return True


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


def test_quality_serving_with_an_unreplayed_wal_is_caught():
    """crash-store-down: the region restarts while its store is down; a start that served
    with refused replays is INV-IDEMPOTENT-REPLAY (and the study's alerts: its 503s page as a
    store outage, FlkBackendDown never fires)."""
    res = api.run("crash-store-down", seed=1, region_cls=ServesUnreplayed)
    assert "INV-IDEMPOTENT-REPLAY" in failing(res)
    assert "ALERT-FlkBackendDown" in failing(res)
    res = api.run("crash-store-down", seed=1)
    assert res.valid, failing(res)
    starts = [e for e in res.history.events if e["type"] in ("srv.start_failed", "srv.recovered")]
    # each start boots 0.45 s (start_s) and fails; the next begins 1 s later: at 7.0, 8.45, 9.9, 11.35 s
    assert [e["type"] for e in starts] == ["srv.start_failed"] * 4 + ["srv.recovered"]
    assert starts[-1]["t_us"] >= 12_000_000  # only once the store is back (the store_down fault ends at 12 s)
    # the region answered nothing between its crash and that start
    crash = next(e["t_us"] for e in res.history.events if e["type"] == "fault.start" and e["kind"] == "crash")
    assert not [e for e in res.history.events if e["type"] == "srv.respond" and e["region"] == "r1"
                and crash < e["t_us"] < starts[-1]["t_us"]]


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


def test_a_store_outage_that_only_met_a_restart_is_exercised():
    """nemesis-random seed 19: the store went down while r1 replayed its WAL after a crash, so
    no request met it, but two starts failed on it (the region stayed down, as flk serve's
    would). The fault did hit the system: its sometimes check passes and says how."""
    res = api.run("nemesis-random", seed=19, plots=False)
    check = next(c for c in res.results["invariants"] if c["id"] == "SOMETIMES-STORE-DOWN-503")
    assert check["ok"] and "2 region starts failed on it" in check["note"], check
    answered_503 = [e for e in res.history.events if e["type"] == "srv.respond" and e["status"] == 503]
    assert answered_503 == []  # only the starts met it
    assert res.valid, failing(res)


def test_every_mutant_overrides_methods_its_base_has():
    """A mutant whose method no longer exists on its base (renamed there) is no mutant: it runs
    the real code and its test fails for the wrong reason, or passes. Caught here by name."""
    mutants = [DedupBeforeVerify, AckBeforeFsync, ServesUnreplayed, CopiesIgnorePartitions]
    helpers = {"_straight"}  # a mutant's own helper, not an override
    for cls in mutants:
        base = cls.__mro__[1]
        own = [n for n, v in vars(cls).items() if callable(v) and not n.startswith("__") and n not in helpers]
        assert own and all(hasattr(base, n) for n in own), (cls.__name__, [n for n in own if not hasattr(base, n)])
