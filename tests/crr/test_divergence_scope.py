"""The divergence detector compares only what the CRR policy replicates (SPEC 11.5).

Under selective replication a tenant's records reach only the regions whose reader selects
them, so a healthy deployment holds different keys in different regions by design. The
detector takes the reader's :class:`~flk.impl.replication.reading.Topology` (the one owner
of the rule, :meth:`Topology.reads`) and compares two regions only on the keys both hold
under their policies. Hypothesis over policies (regions, per-source tenant selections,
asymmetric ones too): a healthy selective replication reports nothing; a key of a replicated
tenant missing or different in a region is reported, exactly (counterfactual); without the
policy the same healthy state is reported as divergence (the false FlkGeoDivergence this fixes).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from verifier.pcsgen import HMAC_A, HMAC_B, body, make_pcs, sign

from flk.impl.dedup import StoredOutcome, open_store
from flk.impl.replication.divergence import (
    DivergenceDetector,
    Summary,
    compare,
    full_scope,
    summarize,
)
from flk.impl.replication.reading import Topology
from flk.impl.storage.objectstore import MemoryObjectStore

from .regions import NOW, Region

REGIONS = ["ap", "eu", "sa", "us"]
TENANTS = ["t0", "t1", "t2"]
BIG = 10_000  # sample size above every store's size: the sample is the whole store, every key comparable


def _outcome(digest: str, origin: str) -> StoredOutcome:
    return StoredOutcome(digest * 64, 200, b"{}", NOW, origin, "p1")


@st.composite
def deployments(draw):
    """Regions, each one's reader topology (per source: every tenant, some, or none; sources
    may be left out) and the writes each region took itself: ``(tenant, pcs_id)``."""
    regions = draw(st.lists(st.sampled_from(REGIONS), min_size=2, max_size=4, unique=True))
    selection = st.one_of(st.none(), st.frozensets(st.sampled_from(TENANTS)))
    topologies = {}
    for r in regions:
        peers = draw(st.dictionaries(st.sampled_from([p for p in regions if p != r]), selection))
        topologies[r] = Topology.selective(r, peers, include_self=True)
    writes = {r: draw(st.lists(st.tuples(st.sampled_from(TENANTS), st.integers(0, 10**6).map(str)),
                               max_size=12, unique_by=lambda w: w[1]).map(
        lambda ws, r=r: [(t, f"{r}-{p}") for t, p in ws])) for r in regions}
    return regions, topologies, writes


def replicate(regions, topologies, writes, skip=frozenset()):
    """A healthy replication as the readers apply it: region ``r`` holds its own writes and
    every source's writes of the tenants its topology reads from that source (``skip``: the
    ``(region, key)`` copies that went missing -- a planted divergence)."""
    stores = {r: open_store("memory") for r in regions}
    for r in regions:
        for origin in regions:
            for tenant, pcs_id in writes[origin]:
                if (origin == r or topologies[r].reads(origin, tenant)) and (r, (tenant, pcs_id)) not in skip:
                    stores[r].put_if_absent(tenant, pcs_id, _outcome("a", origin), NOW)
    return stores


def run_detectors(regions, topologies, stores, with_policy=True):
    """Every region publishes its summary of one period, then compares with every peer's."""
    objects = MemoryObjectStore()
    dets = {r: DivergenceDetector(r, stores[r], objects, regions, n=BIG, interval_s=60,
                                  topology=(lambda r=r: topologies[r]) if with_policy else None) for r in regions}
    t = 60 * 1000 + 1.0
    for d in dets.values():
        d.step(t)
    return {r: d.compare_again(t + 30) for r, d in dets.items()}


@settings(max_examples=60, deadline=None)
@given(dep=deployments())
def test_a_healthy_selective_replication_reports_no_divergence(dep):
    regions, topologies, writes = dep
    alerts = run_detectors(regions, topologies, replicate(regions, topologies, writes))
    for r in regions:
        assert len(alerts[r]) == len(regions) - 1  # compared with every peer
        for a in alerts[r]:
            c = a.comparison
            assert a.severity == "ok" and c.mismatched == 0 and c.sample_mismatch == 0.0, (r, c, topologies)
            assert c.count_divergence == 0.0 or c.count_compared


@settings(max_examples=60, deadline=None)
@given(dep=deployments(), data=st.data())
def test_a_missing_copy_of_a_replicated_tenant_is_reported_exactly(dep, data):
    """Counterfactual: drop copies the policy replicates; the pair (origin, reader) reports
    exactly those keys, and its comparable keys are exactly the model's scope."""
    regions, topologies, writes = dep
    copies = sorted((r, origin, key) for origin in regions for key in writes[origin] for r in regions
                    if r != origin and topologies[r].reads(origin, key[0]))
    if not copies:
        return
    dropped = data.draw(st.lists(st.sampled_from(copies), min_size=1, max_size=4, unique=True))
    skip = {(r, key) for r, _o, key in dropped}
    stores = replicate(regions, topologies, writes, skip=skip)
    alerts = run_detectors(regions, topologies, stores)
    origin_of = {key: o for o in regions for key in writes[o]}

    def should(x, key):  # the model: x holds key under its policy
        return origin_of[key] == x or topologies[x].reads(origin_of[key], key[0])

    def present(x, key):
        return should(x, key) and (x, key) not in skip

    reported = set()
    for r in regions:
        for a in alerts[r]:
            c = a.comparison
            x, y = c.region1, c.region2
            seen = {k for k in origin_of if present(x, k) or present(y, k)}
            scope = {k for k in seen if should(x, k) and should(y, k)}
            missing = {k for k in scope if present(x, k) != present(y, k)}
            assert set(c.mismatched_keys) == missing, (c, topologies)
            assert c.comparable == len(scope) and c.out_of_scope == len(seen - scope)
            assert c.sample_mismatch == (len(missing) / len(scope) if scope else 0.0)
            reported.update((x, y, k) for k in missing)
    for r, origin, key in dropped:  # every dropped copy is reported by its (origin, reader) pair
        assert (min(r, origin), max(r, origin), key) in reported


def test_without_the_policy_the_same_healthy_state_is_reported():
    """The bug this scope fixes: t1 replicated nowhere (home-only), t0 everywhere."""
    regions = ["eu", "us", "ap"]
    topologies = {r: Topology.selective(r, {p: ["t0"] for p in regions if p != r}) for r in regions}
    writes = {r: [(t, f"{r}-{i}") for i in range(20) for t in TENANTS[:2]] for r in regions}
    stores = replicate(regions, topologies, writes)
    blind = run_detectors(regions, topologies, stores, with_policy=False)
    assert all(a.severity == "critical" for r in regions for a in blind[r]), blind
    scoped = run_detectors(regions, topologies, stores)
    for r in regions:
        for a in scoped[r]:
            c = a.comparison
            assert a.severity == "ok" and c.comparable == 60 and c.out_of_scope == 40, c
            assert not c.count_compared  # a store cannot count the t0 keys alone


def test_full_scope_only_when_the_policies_agree_on_every_origin_and_tenant():
    def summ(region, topo):
        return summarize(open_store("memory"), region, 10, 1, NOW, topo)

    full = {r: Topology.full_mesh(["eu", "us", "ap"], r) for r in ("eu", "us", "ap")}
    assert full_scope(summ("eu", full["eu"]), summ("us", full["us"]))
    assert full_scope(summ("eu", None), summ("us", None))
    # eu<->us replicate everything, but only eu reads ap: ap's keys are in eu alone
    eu = Topology.selective("eu", {"us": None, "ap": None})
    us = Topology.selective("us", {"eu": None})
    assert not full_scope(summ("eu", eu), summ("us", us))
    # a policy on one side only: the other side holds every key, this one does not
    assert not full_scope(summ("eu", eu), summ("us", None))
    sel = {r: Topology.selective(r, {p: ["t0"] for p in ("eu", "us") if p != r}) for r in ("eu", "us")}
    assert not full_scope(summ("eu", sel["eu"]), summ("us", sel["us"]))


def test_an_asymmetric_policy_compares_the_direction_it_replicates():
    """us reads eu's tb, eu reads nothing of us: eu's tb keys are compared (and a missing
    one reported), us's own tb keys and every ta key are not."""
    eu_t = Topology.selective("eu", {"us": []})
    us_t = Topology.selective("us", {"eu": ["tb"]})
    eu, us = open_store("memory"), open_store("memory")
    for i in range(10):
        for t in ("ta", "tb"):
            eu.put_if_absent(t, f"eu-{i}", _outcome("a", "eu"), NOW)
            us.put_if_absent(t, f"us-{i}", _outcome("a", "us"), NOW)
            if t == "tb" and i < 9:  # eu-9 of tb never reached us
                us.put_if_absent(t, f"eu-{i}", _outcome("a", "eu"), NOW)
    c = compare(summarize(eu, "eu", BIG, 3, NOW, eu_t), summarize(us, "us", BIG, 3, NOW, us_t))
    assert c.comparable == 10 and c.mismatched_keys == (("tb", "eu-9"),) and c.out_of_scope == 30


def test_the_policy_travels_in_the_summary():
    s = summarize(open_store("memory"), "us", 5, 1, NOW, Topology.parse("eu:tb+ta,ap", "us"))
    assert s.reads == (("ap", None), ("eu", ("ta", "tb")), ("us", None))
    assert Summary.from_json(s.to_json()) == s


def _doc(seed: int, tenant: str) -> bytes:
    return body(sign(make_pcs(seed=seed), HMAC_A if tenant == "ta" else HMAC_B))


def test_real_regions_replicating_one_tenant_stay_silent_and_a_stalled_stream_is_caught():
    """The real verifier, WAL, shipper and reader: eu and us replicate tb both ways, ta stays
    home. Silent while healthy; once us stops reading eu (a stall), eu's new tb writes are
    reported, not its ta writes."""
    objects = MemoryObjectStore()
    eu = Region("eu", objects, [], topology=Topology.parse("us:tb", "eu"))
    us = Region("us", objects, [], topology=Topology.parse("eu:tb", "us"))
    for i in range(40):
        eu.submit(_doc(1000 + i, "ta" if i % 2 else "tb"), "ta" if i % 2 else "tb", NOW + i)
        us.submit(_doc(2000 + i, "ta" if i % 2 else "tb"), "ta" if i % 2 else "tb", NOW + i)

    def sync(t):
        for r in (eu, us):
            r.shipper._next_seal = None
            r.shipper.step(t)
        for r in (eu, us):
            r.reader._retry_at = 0.0
            r.reader.step(t)

    def check(t):
        dets = [DivergenceDetector(r.name, r.store, objects, ["eu", "us"], n=BIG, interval_s=60,
                                   topology=lambda r=r: r.reader.topology) for r in (eu, us)]
        for d in dets:
            d.step(t)
        return dets[0].compare_again(t + 1)

    sync(NOW + 100)
    assert {k[0] for k in us.local() if k[1] in {p for _t, p in eu.local()}} == {"tb"}
    [a] = check(60 * 10**7 + 1.0)
    assert a.severity == "ok" and a.comparison.comparable == 40 and a.comparison.out_of_scope == 40
    us.reader.paused = True  # us stops reading eu
    for i in range(40, 60):
        eu.submit(_doc(1000 + i, "ta" if i % 2 else "tb"), "ta" if i % 2 else "tb", NOW + 200 + i)
    sync(NOW + 300)
    [a] = check(60 * (10**7 + 1) + 1.0)
    assert a.severity == "warning" and (a.comparison.mismatched, a.comparison.comparable) == (10, 50), a
    assert {t for t, _p in a.comparison.mismatched_keys} == {"tb"}


def test_the_replication_service_scopes_its_detector_by_its_reader_topology(tmp_path):
    """``flk serve``'s wiring (CrrService): CRR_PEERS ``us:tb`` / ``eu:tb``. /v1/crr/status
    reports no divergence while ta stays home; an operator's new topology (every tenant, as
    the operator routes apply it to the reader) is what the next summary publishes."""
    from verifier.pcsgen import registry

    from flk.impl.operator import crr
    from flk.impl.replication.service import CrrConfig, CrrService
    from flk.impl.storage.wal import SegmentedLog
    from flk.impl.verifier.pipeline import Request, Verifier, run_sync

    shared = tmp_path / "shared"
    parts = {}
    for name, peers in (("eu", "us:tb"), ("us", "eu:tb")):
        d = tmp_path / name
        d.mkdir()
        wal, store = SegmentedLog(str(d / "wal")), open_store(f"sqlite:///{d}/dedup.db")
        v = Verifier(registry(), region=name)
        svc = CrrService(CrrConfig(name, str(shared), peers, 0.05, 0.05), wal=wal, dedup_store=store, verifier=v,
                         data_dir=str(d))
        parts[name] = (svc, wal, store, v)
    for k, (_svc, wal, store, v) in enumerate(parts.values()):
        for i in range(20):
            t = "ta" if i % 2 else "tb"
            assert run_sync(v.handle(Request(_doc(3000 * (k + 1) + i, t), t), NOW + i), wal, store).status == 200
    eu, us = parts["eu"][0], parts["us"][0]
    for t in (NOW + 30, NOW + 31):
        eu.step(t)
        us.step(t)
    t = 60 * (int(NOW) // 60 + 2) + 1.0
    us.divergence.step(t)  # both publish; eu compares half a period later
    eu.divergence.step(t)
    eu.divergence.step(t + 30)
    [d] = eu.metrics()["divergence"]
    assert d["severity"] == "ok" and d["comparable"] == 20 and d["out_of_scope"] == 20, d
    assert d["count_compared"] is False
    # the operator widens eu's reader to every tenant of us: eu now claims us's ta keys it lacks
    # until the backfill replays them (a real, transient divergence), then nothing again
    crr.apply(eu.reader, Topology.selective("eu", {"us": None}), "eu")
    eu.divergence.step(t + 60)
    us.divergence.step(t + 60)
    [d] = eu.divergence.compare_again(t + 61)
    assert d.comparison.mismatched == 10 and d.severity != "ok", d
    eu.step(t + 62)
    us.divergence.step(t + 120)
    eu.divergence.step(t + 120)
    eu.divergence.step(t + 150)
    [d] = eu.divergence.last
    assert d.severity == "ok" and d.comparison.mismatched == 0, d
    for svc, wal, _store, _v in parts.values():
        svc.stop(final_ship=False)
        wal.close()


def test_the_simulator_uses_the_same_wiring_and_stays_silent_while_a_tenant_is_deselected():
    """``operator-crr-selective`` seed 1 (t1 deselected 4-9 s): every region's detector compared
    its peers' summaries during the window (exercised) and reported nothing; the scenario now
    declares FlkGeoDivergence silent (before this scope every check in the window was a warning
    or critical, and the alert fired at 3 of seeds 1-20)."""
    from flk.sim import api

    res = api.run("operator-crr-selective", seed=1, plots=False)
    window = [e for e in res.history.events if e["type"] == "crr.divergence" and 4e6 < e["t_us"] < 9e6]
    assert {e["region"] for e in window if e["peers"] == 2} == {"eu", "us", "ap"}, window
    assert {e["worst"] for e in window} == {"ok"}, window
    assert "FlkGeoDivergence" not in (res.scenario.data["alerts"].get("unchecked") or [])
    geo = [c for c in res.results["invariants"] if c["id"] == "ALERT-FlkGeoDivergence"]
    assert all(c["ok"] for c in geo), geo  # evaluated where promtool is installed (tests/observability)
