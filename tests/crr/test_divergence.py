"""Divergence detection: count divergence, sampled value comparison (exact on
the comparable keys, across backends), conflicts, severities, the detector."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, open_store, sample_rank
from flk.impl.replication.divergence import (
    Comparison,
    DivergenceDetector,
    Summary,
    check_all,
    compare,
    count_divergence,
    default_settle_s,
    recent_keys,
    severity,
    summarize,
)
from flk.impl.storage.objectstore import MemoryObjectStore

NOW = 1_700_000_000.0


def _o(d: str, status: int = 200, region: str = "eu") -> StoredOutcome:
    return StoredOutcome(d * 64, status, b"{}", NOW, region, "p1")


def fill(store, items):
    for (t, p), o in items.items():
        store.put_if_absent(t, p, o, NOW)


keys = st.tuples(st.sampled_from(["ta", "tb"]), st.integers(0, 30).map(lambda i: f"{i:064x}"))
states = st.dictionaries(keys, st.tuples(st.sampled_from("ab"), st.sampled_from([200, 202])), max_size=25)


@settings(max_examples=40, deadline=None)
@given(a=states, b=states, n=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_sample_comparison_is_exact_on_the_comparable_keys(a, b, n, seed):
    s1, s2 = open_store("memory"), open_store("memory")
    fill(s1, {k: _o(d, s) for k, (d, s) in a.items()})
    fill(s2, {k: _o(d, s) for k, (d, s) in b.items()})
    c = compare(summarize(s1, "eu", n, seed, NOW), summarize(s2, "us", n, seed, NOW))
    # the model: rank every key of either store; comparable = ranks up to the
    # smaller of the two samples' largest ranks (no bound for a sample holding its whole store)
    def bound(m):
        ranks = sorted(sample_rank(seed, *k) for k in m)
        return ranks[n - 1] if len(ranks) >= n else None
    bs = [x for x in (bound(a), bound(b)) if x is not None]
    lim = min(bs) if bs else None
    comparable = sorted(k for k in set(a) | set(b) if lim is None or sample_rank(seed, *k) <= lim)
    bad = [k for k in comparable if a.get(k) != b.get(k)]
    assert c.comparable == len(comparable) and c.mismatched == len(bad)
    assert set(c.mismatched_keys) == set(bad)
    assert c.count_divergence == count_divergence(len(a), len(b))
    if a == b:
        assert c.sample_mismatch == 0.0 and c.count_divergence == 0.0


def test_sample_is_the_same_on_sqlite_and_memory(tmp_path):
    items = {("ta", f"{i:064x}"): _o("ab"[i % 2]) for i in range(40)}
    m, s = open_store("memory"), open_store(f"sqlite:///{tmp_path}/d.db")
    fill(m, items)
    fill(s, items)
    c = compare(summarize(m, "eu", 10, 7, NOW), summarize(s, "us", 10, 7, NOW))
    assert c.comparable == 10 and c.mismatched == 0 and c.count_divergence == 0.0


def _cmp(cd, sm):
    return Comparison("eu", "us", 100, 100, cd, 100, int(sm * 100), sm)


def test_thresholds_warning_at_5_and_10_percent_critical_at_twice():
    assert severity(_cmp(0.05, 0.10)).severity == "ok"
    assert severity(_cmp(0.051, 0.0)).severity == "warning"
    assert severity(_cmp(0.0, 0.11)).severity == "warning"
    assert severity(_cmp(0.10, 0.20)).severity == "warning"
    assert severity(_cmp(0.101, 0.0)).severity == "critical"
    assert severity(_cmp(0.0, 0.21)).severity == "critical"
    a = severity(_cmp(0.0, 0.0), open_conflicts=2)
    assert a.severity == "warning" and "2 open conflict(s)" in a.reasons and a.runbook


def test_summary_roundtrip_and_check_all_pairs_only_equal_seeds():
    s = Summary("eu", 3, 5, 10, NOW, (("ta", "p", "a" * 64, 200, "eu", NOW - 2.5),))
    assert Summary.from_json(s.to_json()) == s
    # a summary without origins, first_seen and policy (an older detector's): origin unknown, its
    # keys never in flight (as old as can be), no policy
    legacy = b'{"count": 3, "n": 10, "region": "eu", "sample": [["ta", "p", "%s", 200]], "seed": 5, "taken_at": 1.0}'
    old = Summary.from_json(legacy % (b"a" * 64))
    assert old.sample == (("ta", "p", "a" * 64, 200, "", float("-inf")),) and old.reads is None and old.count_exact
    assert compare(old, Summary("us", 3, 5, 10, NOW, ()), settle_s=1e9).mismatched == 1
    other = Summary("us", 3, 5, 10, NOW, ())
    stale = Summary("ap", 3, 4, 10, NOW, ())
    alerts = check_all([other, s, stale])
    assert [(x.comparison.region1, x.comparison.region2) for x in alerts] == [("eu", "us")]
    assert alerts[0].comparison.mismatched == 1


def _migrated(tmp_path, phase: str, pruned: bool):
    """A region's store mid-migration (grown 2 -> 3 memory shards, copies made), in ``phase``."""
    from flk.impl.dedup.memory import MemoryStore
    from flk.impl.dedup.migrate import DualWriteStore
    from flk.impl.dedup.sharded import ShardedStore

    pool = {n: MemoryStore() for n in ("s0", "s1", "s2")}
    old, new = ShardedStore({n: pool[n] for n in ("s0", "s1")}), ShardedStore(pool)
    for i in range(200):
        o = _o("ab"[i % 2])
        old.put_if_absent("ta", f"{i:064x}", o, NOW)
        new.put_if_absent("ta", f"{i:064x}", o, NOW)  # the copy
    if pruned:  # the prune itself (as a server reads it from the state file: prune.done)
        from flk.impl.dedup.migrate import new_prune, prune_step

        state = {"phase": "cleaned", "prune": new_prune(NOW)}
        while not state["prune"]["done"]:
            prune_step(state, new, NOW, 50, settle_s=0.0)
    store = DualWriteStore(old, new, phase)
    store.pruned = pruned
    return store


def test_a_count_that_includes_a_migrations_copies_is_not_compared(tmp_path):
    """From its cutover until its prune, a migrating region's count includes the copies the
    moved keys left in their old shards: its summary says so and the pair compares samples only
    (a count compared then would read the copies as divergence); before the cutover and after
    the prune the count is exact and compared."""
    peer = open_store("memory")
    for i in range(200):
        peer.put_if_absent("ta", f"{i:064x}", _o("ab"[i % 2]), NOW)
    theirs = summarize(peer, "us", 20, 7, NOW)
    for phase, pruned, exact in (("dual_write", False, True), ("verified", False, True), ("cut_over", False, False),
                                 ("cleaned", False, False), ("cleaned", True, True), ("rolled_back", False, True)):
        mine = summarize(_migrated(tmp_path, phase, pruned), "eu", 20, 7, NOW)
        assert mine.count_exact is exact and Summary.from_json(mine.to_json()) == mine, (phase, pruned)
        c = compare(mine, theirs)
        assert c.count_compared is exact and c.count_inexact == (() if exact else ("eu",)), (phase, pruned)
        assert c.mismatched == 0 and severity(c).severity == "ok", (phase, pruned, c)
    # the copies alone, compared, would be critical: what the flag keeps from being reported
    inflated = summarize(_migrated(tmp_path, "cut_over", False), "eu", 20, 7, NOW)
    assert inflated.count > 1.1 * theirs.count
    c = compare(Summary(**{**inflated.__dict__, "count_exact": True}), theirs)
    assert severity(c).severity == "critical"


def test_detector_exchanges_summaries_through_the_object_store_and_alerts():
    objects = MemoryObjectStore()
    eu, us = open_store("memory"), open_store("memory")
    items = {("ta", f"{i:064x}"): _o("a") for i in range(20)}
    fill(eu, items)
    fill(us, dict(list(items.items())[:15]))  # us lags: 25 % fewer keys
    alerts = []
    d_eu = DivergenceDetector("eu", eu, objects, ["eu", "us"], n=10, interval_s=60, on_alert=alerts.append)
    d_us = DivergenceDetector("us", us, objects, ["eu", "us"], n=10, interval_s=60)
    t = 60 * 1000 + 1.0
    assert d_us.step(t) == t + 30  # published: compared half a period later
    assert d_eu.step(t + 2) == t + 32 and d_eu.compared is None and alerts == []
    nxt = d_eu.step(t + 32)
    assert nxt == 60 * 1001 + 1.0 and d_eu.compared == d_eu.last
    assert len(alerts) == 1 and alerts[0].severity == "critical"
    assert alerts[0].comparison.count_divergence == 0.25
    # caught up: ok
    fill(us, items)
    d_us.step(nxt)
    d_eu.step(nxt + 1)
    d_eu.step(nxt + 31)
    assert [a.severity for a in d_eu.last] == ["ok"] and len(alerts) == 1
    objects.available = False
    assert d_eu.step(nxt + 60) == nxt + 65 and d_eu.failures == 1 and d_eu.unseen == {"us": 1}


def test_detectors_publishing_at_the_same_moment_compare_once_the_peer_summary_arrived():
    """Both regions publish at the start of a period, before either summary reached the
    other: step compares nothing; compare_again later in the period compares them;
    in the next period the old summaries are not compared."""
    from flk.impl.dedup import open_store
    from flk.impl.storage.objectstore import MemoryObjectStore

    objects = MemoryObjectStore()
    eu, us = open_store("memory"), open_store("memory")
    d_eu = DivergenceDetector("eu", eu, objects, ["eu", "us"], n=10, interval_s=60)
    d_us = DivergenceDetector("us", us, objects, ["eu", "us"], n=10, interval_s=60)
    t = 60 * 1000 + 1.0
    assert d_eu.compare_again(t) == []  # nothing published yet
    d_eu.step(t)
    assert d_eu.last == []
    d_us.step(t)
    alerts = d_eu.compare_again(t + 30)
    assert [(a.comparison.region1, a.comparison.region2) for a in alerts] == [("eu", "us")]
    assert d_eu.compare_again(t + 60) == []  # the next period: this summary is stale


def test_a_dedup_store_outage_postpones_the_check_and_never_raises():
    """A shard of the region's dedup store out (found by flk sim explore: the detector's sample
    raised StoreUnavailable through the replication step): the check is retried with the same
    backoff as an object-store outage, and runs again once the store is back."""
    from flk.impl.dedup.memory import MemoryStore
    from flk.impl.dedup.sharded import ShardedStore
    from flk.impl.testing.outage import OutageStore

    shards = {"s0": OutageStore(MemoryStore()), "s1": OutageStore(MemoryStore())}
    store = ShardedStore(dict(shards), probe_interval_s=1.0)
    fill(store, {("ta", f"{i:064x}"): _o("a") for i in range(20)})
    d = DivergenceDetector("eu", store, MemoryObjectStore(), ["eu", "us"], n=10, interval_s=60)
    t = 60 * 1000 + 1.0
    shards["s1"].available = False
    assert d.step(t) == t + 5.0 and d.failures == 1 and d.mine is None
    assert d.step(t + 5.0) == t + 15.0 and d.failures == 2
    assert d.unseen == {"us": 1}  # two failed checks in one period: one period blind
    shards["s1"].available = True
    assert d.step(t + 20.0) == t + 50.0 and d.failures == 0 and d.mine is not None  # published: compare next
    assert d.step(t + 50.0) == 60 * 1001 + 1.0 and d.compared == [] and d.unseen == {"us": 1}  # still that period


def test_regions_publishing_together_each_compare_every_peer_half_a_period_later():
    """Three regions step at the same moment (their periods align on the clock): a compare at
    publishing time would meet only the peers that happened to publish first (here: eu none,
    us one, ap two). The detector's own schedule compares half a period later, when all three
    summaries are there, so every region compares both peers, whoever published first."""
    objects = MemoryObjectStore()
    stores = {r: open_store("memory") for r in ("eu", "us", "ap")}
    for s in stores.values():
        fill(s, {("ta", f"{i:064x}"): _o("a") for i in range(12)})
    dets = {r: DivergenceDetector(r, s, objects, list(stores), n=10, interval_s=60) for r, s in stores.items()}
    t = 60 * 1000 + 1.0
    assert all(d.step(t) == t + 30 and d.compared is None for d in dets.values())
    for r, d in dets.items():
        d.step(t + 30)
        pairs = sorted(tuple(sorted((a.comparison.region1, a.comparison.region2))) for a in d.compared)
        assert pairs == sorted(tuple(sorted((r, p))) for p in stores if p != r), (r, pairs)
        assert d.unseen == {p: 0 for p in stores if p != r}


def test_a_peer_whose_summaries_stop_arriving_is_counted_unseen_once_per_period():
    """us stops publishing (down, cut off): eu's checks compare nothing, and that is counted --
    one per period, however often eu compares in it -- until a summary of us arrives again."""
    objects = MemoryObjectStore()
    eu, us = open_store("memory"), open_store("memory")
    d_eu = DivergenceDetector("eu", eu, objects, ["eu", "us"], n=10, interval_s=60)
    d_us = DivergenceDetector("us", us, objects, ["eu", "us"], n=10, interval_s=60)
    t = 60 * 1000 + 1.0
    d_eu.step(t)
    d_us.step(t)
    d_eu.step(t + 30)
    assert d_eu.unseen == {"us": 0} and len(d_eu.compared) == 1
    for k in (1, 2, 3):  # us silent for three periods
        d_eu.step(t + 60 * k)
        d_eu.step(t + 60 * k + 30)
        assert d_eu.compared == [] and d_eu.last == [] and d_eu.unseen == {"us": k}
        assert d_eu.compare_again(t + 60 * k + 40) == [] and d_eu.unseen == {"us": k}  # the same period
    d_us.step(t + 240)
    d_eu.step(t + 240)
    d_eu.step(t + 270)
    assert d_eu.unseen == {"us": 0} and len(d_eu.compared) == 1


AGE = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([f"p{i}" for i in range(40)]),
                       st.tuples(AGE, st.sampled_from(["eu", "us", "both", "differ"])), max_size=40),
       st.floats(min_value=0.0, max_value=30.0, allow_nan=False))
def test_a_key_one_side_lacks_is_lag_while_younger_than_settle_s_and_a_different_value_never_is(keys, settle):
    """Two whole-store samples taken at NOW: a key only one region holds is in flight (not
    compared) while its first_seen is within ``settle_s`` of NOW, a mismatch once older; a key
    both hold with different values is a mismatch at any age; the comparable keys are exactly
    the rest."""
    eu, us = [], []
    for pcs, (age, where) in sorted(keys.items()):
        born = NOW - age
        entry = ("ta", pcs, "a" * 64, 200, "eu", born)
        if where in ("eu", "both", "differ"):
            eu.append(entry)
        if where in ("us", "both"):
            us.append(entry)
        if where == "differ":
            us.append(("ta", pcs, "b" * 64, 200, "eu", born))
    c = compare(Summary("eu", len(eu), 1, 1000, NOW, tuple(eu)), Summary("us", len(us), 1, 1000, NOW, tuple(us)),
                settle_s=settle)
    young = {p for p, (age, _where) in keys.items() if settle > 0 and NOW - age > NOW - settle}
    lag = {p for p, (_age, where) in keys.items() if where in ("eu", "us") and p in young}
    missing = {p for p, (_age, where) in keys.items() if where in ("eu", "us") and p not in young}
    differ = {p for p, (_age, where) in keys.items() if where == "differ"}
    assert c.in_flight == len(lag)
    assert {p for _t, p in c.mismatched_keys} == missing | differ
    assert c.comparable == len(keys) - len(lag)
    # without a settle time every key one side lacks is a mismatch (the detector before it knew lag)
    assert compare(Summary("eu", len(eu), 1, 1000, NOW, tuple(eu)), Summary("us", len(us), 1, 1000, NOW, tuple(us))
                   ).mismatched == len(lag | missing | differ)


def test_the_count_difference_the_last_settle_s_of_keys_explains_is_not_divergence():
    """eu took 100 keys, us has applied the 80 older than 5 s: with settle_s = 5 s the 20 young
    ones are slack (count divergence 0); 30 keys missing at us are 10 beyond it (10 % of 100)."""
    def summary(region, count, young):  # a 10-key sample of a bigger store: young/10 of it is recent
        sample = tuple(("ta", f"p{i}", "a" * 64, 200, "eu", NOW - (1.0 if i < young else 30.0)) for i in range(10))
        return Summary(region, count, 1, 10, NOW, sample)

    eu = summary("eu", 100, 2)  # 2 of 10 sampled keys younger than 5 s: about 20 recent keys
    assert recent_keys(eu, NOW - 5.0) == 20
    assert compare(eu, summary("us", 80, 0), settle_s=5.0).count_divergence == 0.0
    assert compare(eu, summary("us", 80, 0), settle_s=5.0).count_slack == 20
    assert compare(eu, summary("us", 70, 0), settle_s=5.0).count_divergence == pytest.approx(0.10)
    assert compare(eu, summary("us", 80, 0)).count_divergence == pytest.approx(0.20)  # no settle time


def test_the_default_settle_time_is_twice_a_records_way_through_the_periods_plus_3_s():
    assert default_settle_s(1.0, 0.5) == 6.0 and default_settle_s(10.0, 10.0) == 43.0
    # the server's setting defaults to it, from its own periods; a set value wins
    from flk.impl.server.config import load_config

    base = {"DATA_DIR": "/nonexistent", "PCS_HMAC_KEY": "k" * 16, "REGION_ID": "eu", "CRR_STORE_DIR": "/x"}
    crr = load_config({**base, "CRR_SHIP_INTERVAL_S": "2", "CRR_READ_INTERVAL_S": "0.5"}, create_key=False).crr
    assert crr.divergence_settle_s == 8.0
    crr = load_config({**base, "CRR_DIVERGENCE_SETTLE_S": "0"}, create_key=False).crr
    assert crr.divergence_settle_s == 0.0
