"""The model's invariants hold on Hypothesis-generated traces (tests/formal).

A RuleBasedStateMachine drives a 3-region :class:`flk.model.cluster.Cluster`
with submits (good key, forged key, other tenant's key), duplicates,
conflicting payloads, syncs, processing, crashes, restarts, ships, replays,
partitions, heals and key rotations; every region invariant is checked after
every step, and INV-CONVERGENCE after a final quiesce. Sometimes-checks make
sure the interesting cases (duplicates, conflicts, rejected signatures,
crashes losing unsynced requests) actually happen.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flk.model import invariants as inv
from flk.model.cluster import Cluster
from flk.model.merge import Outcome, join, merge
from flk.model.region import Region, Submission

REGIONS = ["eu", "us", "ap"]
TENANTS = ["acme", "beta"]
KEYS0 = {"acme": frozenset({"acme:k0"}), "beta": frozenset({"beta:k0"})}
PCS = ["p1", "p2", "p3"]
DIGESTS = ["d1", "d2"]

SEEN: dict[str, int] = {}


def _seen(what: str) -> None:
    SEEN[what] = SEEN.get(what, 0) + 1


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.durable = True
        self.c = Cluster.create(REGIONS, KEYS0)
        self.now = 0.0
        self.rid = itertools.count(1)
        self.key_gen = itertools.count(1)
        self.sent: list[tuple[str, Submission]] = []

    @rule(durable=st.booleans())
    @precondition(lambda self: self.now == 0.0)
    def choose_store(self, durable):
        self.c = Cluster.create(REGIONS, KEYS0, dedup_durable=durable)

    @rule(region=st.sampled_from(REGIONS), tenant=st.sampled_from(TENANTS), pcs=st.sampled_from(PCS),
          digest=st.sampled_from(DIGESTS), signer=st.sampled_from(["own", "forged", "other"]),
          verdict=st.sampled_from([200, 202]))
    def submit(self, region, tenant, pcs, digest, signer, verdict):
        keys = sorted(self.c.regions[region].keys[tenant])
        other = "beta" if tenant == "acme" else "acme"
        key_id = {"own": keys[-1], "forged": f"{tenant}:forged", "other": f"{other}:k0"}[signer]
        self.now += 1.0
        sub = Submission(next(self.rid), tenant, pcs, digest, key_id, verdict)
        self.sent.append((region, sub))
        self.c.submit(region, sub, self.now)

    @rule(data=st.data())
    @precondition(lambda self: self.sent)
    def resubmit(self, data):
        """A client retry: the same submission again, to the same or another region."""
        region, sub = data.draw(st.sampled_from(self.sent))
        region = data.draw(st.sampled_from([region] + REGIONS))
        self.now += 1.0
        self.c.submit(region, Submission(next(self.rid), sub.tenant, sub.pcs_id, sub.payload_digest,
                                         sub.key_id, sub.verdict), self.now)

    @rule(data=st.data())
    @precondition(lambda self: self.sent)
    def conflicting_payload(self, data):
        """Same (tenant, pcs_id), different payload, to the same or another region."""
        region, sub = data.draw(st.sampled_from(self.sent))
        region = data.draw(st.sampled_from([region] + REGIONS))
        other = "d2" if sub.payload_digest == "d1" else "d1"
        self.now += 1.0
        self.c.submit(region, Submission(next(self.rid), sub.tenant, sub.pcs_id, other,
                                         sub.key_id, sub.verdict), self.now)

    @rule(region=st.sampled_from(REGIONS))
    def flush(self, region):
        """fsync then process: the common path."""
        self.c.regions[region].sync()
        self.c.regions[region].drain()

    @rule(region=st.sampled_from(REGIONS))
    def sync(self, region):
        self.c.regions[region].sync()

    @rule(region=st.sampled_from(REGIONS))
    def process(self, region):
        self.c.regions[region].drain()

    @rule(region=st.sampled_from(REGIONS))
    def crash(self, region):
        if self.c.regions[region].buffer:
            _seen("crash lost unsynced requests")
        self.c.regions[region].crash()

    @rule(region=st.sampled_from(REGIONS))
    def restart(self, region):
        self.c.regions[region].restart()

    @rule(region=st.sampled_from(REGIONS))
    def ship(self, region):
        self.c.ship(region)

    @rule(dst=st.sampled_from(REGIONS), src=st.sampled_from(REGIONS))
    def replay(self, dst, src):
        self.c.replay(dst, src)

    @rule(region=st.sampled_from(REGIONS))
    def partition(self, region):
        self.c.partition(region)

    @rule(region=st.sampled_from(REGIONS))
    def heal(self, region):
        self.c.heal(region)

    @rule(tenant=st.sampled_from(TENANTS))
    def rotate_key(self, tenant):
        self.c.rotate_key(tenant, f"{tenant}:k{next(self.key_gen)}")

    @invariant()
    def region_invariants(self):
        for name in REGIONS:
            r = self.c.regions[name]
            assert inv.violated(r) == [], (name, inv.violated(r))
            statuses = set(r.answers.values())
            if 401 in statuses:
                _seen("rejected signature")
            if r.conflicts:
                _seen("conflict")

    def teardown(self):
        self.c.quiesce()
        for name in REGIONS:
            assert inv.violated(self.c.regions[name]) == []
        assert inv.INV_CONVERGENCE(self.c)
        if any(r.conflicts for r in self.c.regions.values()):
            _seen("conflict")


ClusterMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
TestInvModelCluster = ClusterMachine.TestCase


def test_inv_model_sometimes_cases_happen():
    """The traces above are not vacuous: each interesting case occurred (runs after the machine)."""
    if not SEEN:  # run alone: drive the machine once more
        TestInvModelCluster().runTest()
    for label in ("rejected signature", "conflict", "crash lost unsynced requests"):
        assert SEEN.get(label, 0) > 0, (label, SEEN)


outcomes = st.builds(Outcome, st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from(REGIONS),
                     st.sampled_from(DIGESTS), st.sampled_from([200, 202]))


@settings(max_examples=200, deadline=None)
@given(outcomes, outcomes, outcomes)
def test_inv_convergence_model_merge_is_a_semilattice(a, b, c):
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a
    m = merge(a, b)
    assert (m.first_seen, m.region, m.payload_digest) <= (a.first_seen, a.region, a.payload_digest)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PCS), outcomes), max_size=12), st.randoms(use_true_random=False))
def test_inv_convergence_model_any_delivery_order_with_redelivery(items, rnd):
    deliveries = [{k: o} for k, o in items]
    shuffled = deliveries + deliveries[: len(deliveries) // 2]
    rnd.shuffle(shuffled)
    a: dict = {}
    for d in deliveries:
        a = join(a, d)
    b: dict = {}
    for d in shuffled:
        b = join(b, d)
    assert a == b


def test_inv_fww_model_volatile_store_rebuilt_in_wal_order():
    """A peer record processed before a local conflicting one keeps winning after a crash
    of a memory-store region: recovery re-processes peer and local records in WAL order."""
    c = Cluster.create(["eu", "us"], KEYS0, dedup_durable=False)
    c.submit("us", Submission(1, "acme", "p1", "d1", "acme:k0"), 1.0)
    c.regions["us"].sync()
    c.regions["us"].drain()
    c.ship("us")
    c.replay("eu", "us")
    c.submit("eu", Submission(2, "acme", "p1", "d2", "acme:k0"), 2.0)
    eu: Region = c.regions["eu"]
    eu.sync()
    eu.drain()
    assert eu.answers[2] == 409
    before = dict(eu.dedup)
    eu.crash()
    eu.restart()
    assert eu.dedup == before and inv.INV_FWW(eu)


# ---- the model's invariant predicates catch planted bugs (they are not vacuous)
class _OverwriteRegion(Region):
    def _pipeline(self, rec):
        status, out = super()._pipeline(rec)
        if status == 409:  # planted: a conflicting payload overwrites the stored outcome
            self.dedup[rec.sub.key] = rec.candidate()
        return status, out


class _DedupFirstRegion(Region):
    def _pipeline(self, rec):
        from flk.model.region import Event

        self.history.append(Event("dedup_get", rec.sub.rid, rec.sub.key))  # planted: read before verify
        return super()._pipeline(rec)


class _NoSyncRegion(Region):
    def submit(self, sub, now):
        super().submit(sub, now)
        self.sync_buffer_without_event()

    def sync_buffer_without_event(self):  # planted: processing sees unsynced records
        self.wal.extend(self.buffer)
        self.buffer.clear()


def _drive(region: Region) -> Region:
    region.submit(Submission(1, "acme", "p1", "d1", "acme:k0"), 1.0)
    region.submit(Submission(2, "acme", "p1", "d2", "acme:k0"), 2.0)
    region.submit(Submission(3, "beta", "p1", "d1", "acme:k0"), 3.0)
    region.sync()
    region.drain()
    return region


def test_inv_model_predicates_hold_on_the_reference_region():
    r = _drive(Region("eu", dict(KEYS0)))
    assert inv.violated(r) == [] and r.answers == {1: 200, 2: 409, 3: 401}


@pytest.mark.parametrize("cls, caught", [
    (_OverwriteRegion, "INV-FWW"),
    (_DedupFirstRegion, "INV-VERIFY-BEFORE-DEDUP"),
    (_NoSyncRegion, "INV-WAL-FIRST"),
])
def test_inv_model_predicates_catch_planted_bugs(cls, caught):
    assert caught in inv.violated(_drive(cls("eu", dict(KEYS0))))
