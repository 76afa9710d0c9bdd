"""Sharded dedup: ring balance and movement, the model tie
(INV-RING-OWNER), the dedup contract on sharded stores of every backend, and
fail-closed shards (INV-FWW across shards)."""

from __future__ import annotations

import os
import random
import uuid

import numpy as np
import pytest
from dedup.contract import DedupContract, StoreSpec, outcome, redis_cleanup
from hypothesis import given, settings
from hypothesis import strategies as st
from verifier.pcsgen import HMAC_A, body, make_pcs, registry, sign

from flk.impl.dedup import (
    PartialUnavailable,
    StoreUnavailable,
    iter_entries,
    open_store,
    sample_entries,
)
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.redis import RedisStore
from flk.impl.dedup.sharded import (
    SPACE,
    Ring,
    ShardedStore,
    distribution,
    key_probes,
    open_sharded,
    probe_matrix,
)
from flk.impl.testing.memwal import MemoryWal
from flk.impl.testing.outage import OutageStore
from flk.impl.verifier.pipeline import Request, Verifier, run_sync
from flk.model import ring as model

T0 = 1_000_000.0


@pytest.fixture(scope="module")
def million_keys():
    rng = random.Random(20261121)
    h = rng.randbytes(16 * 1_000_000).hex()
    keys = [(f"t{i % 7}", h[32 * i: 32 * i + 32]) for i in range(1_000_000)]
    return keys, probe_matrix(keys)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 12])
def test_distribution_1m_keys_150_vnodes_max_over_min_at_most_1_2(million_keys, n):
    keys, probes = million_keys
    ring = Ring([f"shard-{i}" for i in range(n)], vnodes=150)
    owners = np.bincount(np.asarray(ring.owner_indexes(probes)), minlength=n)
    assert owners.sum() == 1_000_000
    assert owners.max() / owners.min() <= 1.2, owners
    # the vectorised path is the scalar lookup
    for t, p in keys[:2000]:
        assert ring.owner(t, p) == ring.shards[ring.owner_indexes(probe_matrix([(t, p)]))[0]]


def test_distribution_helper_counts_every_key(million_keys):
    keys, _ = million_keys
    d = distribution(Ring(["a", "b", "c"]), keys[:50_000])
    assert d["keys"] == 50_000 and sum(d["counts"].values()) == 50_000 and d["max_over_min"] < 1.2


def test_single_probe_ring_is_the_classic_ring_and_less_balanced(million_keys):
    """The reason for probes: the classic ring (probes=1) exceeds 1.2 at 5+ shards here."""
    _, probes = million_keys
    worst = 0.0
    for n in (5, 8, 12):
        c = np.bincount(np.asarray(Ring([f"shard-{i}" for i in range(n)], probes=1).owner_indexes(probes)))
        worst = max(worst, c.max() / c.min())
    assert worst > 1.2


@pytest.mark.parametrize("n", [3, 4, 8])
def test_adding_a_shard_moves_about_1_over_n_only_to_the_new_shard(million_keys, n):
    _, probes = million_keys
    probes = probes[:300_000]
    old = Ring([f"shard-{i}" for i in range(n)])
    new = old.with_shard("shard-new")
    a = np.asarray([old.shards[i] for i in old.owner_indexes(probes)])
    b = np.asarray([new.shards[i] for i in new.owner_indexes(probes)])
    moved = a != b
    assert set(b[moved].tolist()) == {"shard-new"}  # nothing moves between old shards
    frac = moved.mean()
    assert 0.8 / (n + 1) <= frac <= 1.2 / (n + 1), frac
    # removing it again moves exactly those keys back
    back = np.asarray([old.shards[i] for i in new.without_shard("shard-new").owner_indexes(probes)])
    assert (back == a).all()


def test_removing_a_shard_moves_only_its_keys(million_keys):
    _, probes = million_keys
    probes = probes[:300_000]
    old = Ring(["a", "b", "c", "d"])
    new = old.without_shard("c")
    a = np.asarray([old.shards[i] for i in old.owner_indexes(probes)])
    b = np.asarray([new.shards[i] for i in new.owner_indexes(probes)])
    assert ((a != b) == (a == "c")).all()
    assert 0.8 / 4 <= (a == "c").mean() <= 1.2 / 4


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "s-1", "s.2"]), min_size=1, max_size=5, unique=True),
       vnodes=st.integers(1, 12), probes=st.integers(1, 4),
       keys=st.lists(st.tuples(st.text("xyz", min_size=1, max_size=3), st.text(min_size=1, max_size=8)),
                     min_size=1, max_size=20),
       raw=st.lists(st.integers(0, SPACE - 1), min_size=1, max_size=20))
def test_inv_ring_owner_impl_ring_agrees_with_the_model(names, vnodes, probes, keys, raw):
    """Each probe selects flk.model.ring's successor (same ring, same tie order); the
    key's owner is exactly one member shard: the one whose model-selected vnode is
    closest clockwise (lowest probe number on a tie)."""
    ring = Ring(names, vnodes=vnodes, probes=probes)
    mring = model.build(ring.vnode_list(), names)
    assert mring == ring.vnode_list()
    positions = [p for p, _ in mring]
    hs = raw + positions + [(p + 1) % SPACE for p in positions] + [0, SPACE - 1]
    for h in hs:
        assert ring.index_of_position(h) == model.successor_index(positions, h)
        assert ring.owner_of_position(h) == model.owner(mring, h)
        assert model.inv_ring_owner(mring, names, h)
    for t, p in keys:
        pr = key_probes(t, p, probes)
        dists = []
        for j, h in enumerate(pr):
            i = model.successor_index(positions, h)
            dists.append(((positions[i] - h) % SPACE, j, mring[i][1]))
        want = min(dists)[2]
        assert ring.owner(t, p) == want and want in names


def test_ring_rejects_bad_configuration():
    with pytest.raises(ValueError):
        Ring([])
    with pytest.raises(ValueError):
        Ring(["a"], vnodes=0)
    with pytest.raises(ValueError):
        Ring(["a"], probes=5)
    with pytest.raises(ValueError):
        Ring(["bad name"])
    assert Ring.from_json(Ring(["a", "b"], 7, 2).to_json()) == Ring(["b", "a"], 7, 2)


# -- the dedup contract on sharded stores --------------------------------------------


def _retrying(fn, attempts: int = 5):
    """Open a store, retrying a few times: a child process of the contract's
    process race that fails to connect under load would leave the others
    waiting at the race barrier."""
    import time

    for i in range(attempts):
        try:
            return fn()
        except StoreUnavailable:
            if i == attempts - 1:
                raise
            time.sleep(0.5 * (i + 1))


def open_sharded_spec(urls: dict, opts: dict):
    return _retrying(lambda: ShardedStore({name: open_store(url, **opts.get(name, {}))
                                           for name, url in urls.items()}))


@pytest.fixture(params=["memory", "sqlite", "sqlite-keyed", "redis", "postgres", "mixed"])
def store_spec(request, tmp_path):
    run = f"{os.getpid()}_{uuid.uuid4().hex[:10]}"
    kind = request.param
    names = ["s0", "s1", "s2"]
    cleanup = []
    if kind == "memory":
        # memory shards live in one process: one shared set of shard objects
        shards = {n: open_store("memory") for n in names}
        spec = StoreSpec("sharded-memory", lambda: ShardedStore(shards), (), cross_process=False)
    elif kind == "sqlite":  # log-layout shards (the default): scanned one after the other, in write order
        urls = {n: f"sqlite:///{tmp_path}/{n}.db" for n in names}
        spec = StoreSpec("sharded-sqlite", open_sharded_spec, (urls, {}), ordered_scan=False)
    elif kind == "sqlite-keyed":  # keyed shards: the k-way merge in key order
        urls = {n: f"sqlite:///{tmp_path}/{n}.db" for n in names}
        spec = StoreSpec("sharded-sqlite-keyed", open_sharded_spec, (urls, {n: {"layout": "keyed"} for n in names}))
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
        urls = {n: url for n in names}
        opts = {n: {"prefix": f"flktest:{run}:{n}:"} for n in names}
        spec = StoreSpec("sharded-redis", open_sharded_spec, (urls, opts), ordered_scan=False)
        cleanup = [lambda: redis_cleanup(url, f"flktest:{run}:")]
    elif kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        urls = {n: dsn for n in names}
        opts = {n: {"table": f"flktest_{run}_{n}", "max_size": 2} for n in names}
        spec = StoreSpec("sharded-postgres", open_sharded_spec, (urls, opts))

        def drop():
            s = open_sharded_spec(urls, opts)
            for shard in s.shards.values():
                shard.drop_table()
            s.close()
        cleanup = [drop]
    else:  # one shard of each ordered backend plus Redis is not ordered; mix the ordered ones
        urls = {"s0": "memory", "s1": f"sqlite:///{tmp_path}/s1.db", "s2": f"sqlite:///{tmp_path}/s2.db"}
        shards = {n: open_store(u, **({} if u == "memory" else {"layout": "keyed"})) for n, u in urls.items()}
        spec = StoreSpec("sharded-mixed", lambda: ShardedStore(shards), (), cross_process=False)
    yield spec
    spec.close_all()
    for fn in cleanup:
        fn()


class TestShardedContract(DedupContract):
    pass


# -- fail closed: a down shard's keys raise, the others flow ----------------------------


def _keys_by_shard(store: ShardedStore, n: int = 60) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list] = {s: [] for s in store.shards}
    i = 0
    while min(len(v) for v in out.values()) < n:
        k = ("t1", f"pcs-{i:05d}")
        out[store.shard_for(*k)].append(k)
        i += 1
    return out


def test_inv_fww_down_shard_fails_closed_real_unreachable_redis(tmp_path):
    """Shard c is a Redis store on a closed loopback port (real connection refused)."""
    shards = {"a": open_store(f"sqlite:///{tmp_path}/a.db"), "b": open_store(f"sqlite:///{tmp_path}/b.db"),
              "c": RedisStore("redis://127.0.0.1:1/0", timeout_s=0.5)}
    s = ShardedStore(shards, probe_interval_s=10.0)
    ks = _keys_by_shard(s, 20)
    for k in ks["a"] + ks["b"]:
        assert s.put_if_absent(*k, outcome(1), T0) == (True, outcome(1))
    for k in ks["c"][:3]:
        with pytest.raises(StoreUnavailable):
            s.put_if_absent(*k, outcome(1), T0)
        with pytest.raises(StoreUnavailable):
            s.get(*k, T0)
    assert s.health["c"].up is False and s.health["a"].up and s.health["b"].up
    for k in ks["a"] + ks["b"]:
        assert s.get(*k, T0 + 1) == outcome(1)
    health = s.probe(T0 + 2)
    assert {n: h.up for n, h in health.items()} == {"a": True, "b": True, "c": False}
    with pytest.raises(StoreUnavailable):
        s.count(T0 + 2)
    assert s.counts(T0 + 2) == {"a": 20, "b": 20, "c": None}
    assert s.ping() is False
    # batches: keys of a and b are served, also beside a key of c (its position alone fails)
    assert s.get_many(ks["a"][:2] + ks["b"][:2], T0 + 3) == [outcome(1)] * 4
    mixed = ks["a"][:1] + ks["c"][:1] + ks["b"][:1]
    with pytest.raises(PartialUnavailable) as info:
        s.get_many(mixed, T0 + 3)
    assert info.value.items is mixed and info.value.failed == {1}
    assert [info.value.results[0], info.value.results[2]] == [outcome(1)] * 2
    s.close()


def test_down_shard_recovers_after_the_probe_interval_and_nothing_was_rerouted(tmp_path):
    inner = {n: OutageStore(open_store(f"sqlite:///{tmp_path}/{n}.db")) for n in ("a", "b", "c")}
    s = ShardedStore(inner, probe_interval_s=5.0)
    ks = _keys_by_shard(s, 10)
    for k in ks["c"]:
        s.put_if_absent(*k, outcome(1), T0)
    inner["c"].available = False
    for k in ks["c"]:  # fail closed: never "absent", never stored elsewhere
        with pytest.raises(StoreUnavailable):
            s.put_if_absent(*k, outcome(2), T0 + 1)
    assert s.health["c"].checked_at == T0 + 1
    inner["c"].available = True
    with pytest.raises(StoreUnavailable):  # still marked down inside the probe interval
        s.get(*ks["c"][0], T0 + 3)
    assert s.get(*ks["c"][0], T0 + 6.5) == outcome(1)  # re-probed at a time passed in
    assert s.health["c"].up
    for k in ks["c"]:
        assert s.put_if_absent(*k, outcome(2), T0 + 7) == (False, outcome(1))
    for n in ("a", "b"):
        assert inner[n].count(T0 + 7) == 0
    s.close()


@given(step_back=st.floats(min_value=0.001, max_value=3600.0))
@settings(max_examples=20, deadline=None)
def test_down_shard_is_probed_at_once_when_the_clock_steps_back(step_back):
    # marked down by a clock running ahead (a skewed host clock, then corrected): the next call
    # at an earlier time probes it, instead of waiting until the clock catches up with the check
    inner = {n: OutageStore(open_store("memory")) for n in ("a", "b")}
    s = ShardedStore(inner, probe_interval_s=5.0)
    k = _keys_by_shard(s, 1)["b"][0]
    s.put_if_absent(*k, outcome(1), T0)
    inner["b"].available = False
    with pytest.raises(StoreUnavailable):
        s.get(*k, T0 + 20.0)
    inner["b"].available = True
    assert s.get(*k, T0 + 20.0 - step_back) == outcome(1)
    assert s.health["b"].up


def test_down_shard_gives_503_through_the_pipeline_others_200(tmp_path):
    inner = {n: OutageStore(open_store(f"sqlite:///{tmp_path}/{n}.db")) for n in ("a", "b", "c")}
    s = ShardedStore(inner)
    v = Verifier(registry(), region="eu")
    wal = MemoryWal()
    inner["b"].available = False
    seen = {"a": [], "b": [], "c": []}
    for seed in range(1, 40):
        doc = sign(make_pcs(seed=seed), HMAC_A)
        shard = s.shard_for("ta", doc["pcs_id"])
        r = run_sync(v.handle(Request(body(doc), "ta"), T0 + seed), wal, s)
        seen[shard].append(r.status)
    assert seen["b"] and set(seen["b"]) == {503}
    assert seen["a"] and seen["c"] and set(seen["a"] + seen["c"]) == {200}
    s.close()


def test_open_sharded_and_ops_views(tmp_path):
    s = open_sharded({n: f"sqlite:///{tmp_path}/{n}.db" for n in ("x", "y")}, vnodes=50)
    for i in range(30):
        s.put_if_absent("t", f"p{i}", outcome(i), T0)
    rep = s.distribution_report(T0)
    assert rep["total"] == 30 and sum(rep["counts"].values()) == 30 and rep["vnodes"] == 50
    f = s.find("t", "p3", T0)
    assert f["shard"] == s.shard_for("t", "p3") and f["present"] is True
    assert s.find("t", "nope", T0)["present"] is False
    s.close()


@pytest.mark.parametrize("path,status", [
    ("/api/shards/distribution", 200), ("/api/shards/health", 200), ("/api/shards/sample?size=5", 200),
    (f"/api/shards/find?key={1:064x}&tenant=t", 200), ("/api/shards/sample?size=0", 400),
    ("/api/shards/sample?size=x", 400), ("/api/shards/find", 400), (f"/api/shards/find?key={1:064x}&tenant=bad%20t", 400),
    # one value each, ASCII digits, a pcs_id (size=10&size=20 was 20; "+5", "%205", "1_000" and
    # an Arabic-Indic digit passed int(); key=x and key=%00 were looked up)
    ("/api/shards/sample?size=6&size=5", 400), ("/api/shards/sample?size=%2B5", 400),
    ("/api/shards/sample?size=%205", 400), ("/api/shards/sample?seed=1_000", 400),
    ("/api/shards/sample?size=%D9%A3", 400), ("/api/shards/find?key=x", 400), ("/api/shards/find?key=%00", 400),
    (f"/api/shards/find?key={1:064x}&key={2:064x}", 400), (f"/api/shards/find?key={0xAB:064X}", 400),
])
def test_ops_endpoints(tmp_path, path, status):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from flk.impl.dedup.sharded import routes
    from flk.impl.server.problems import problem

    inner = {n: OutageStore(open_store(f"sqlite:///{tmp_path}/{n}.db")) for n in ("a", "b")}
    s = ShardedStore(inner)
    for i in range(20):
        s.put_if_absent("t", f"{i:064x}", outcome(i), T0)
    app = Starlette(routes=routes(lambda: s, lambda: T0 + 1, problem))
    with TestClient(app) as c:
        r = c.get(path)
        assert r.status_code == status, r.text
        if status == 400:
            assert r.headers["content-type"].startswith("application/problem+json")
        if path.startswith("/api/shards/sample?size=5"):
            entries = r.json()["entries"]
            assert len(entries) == 5 and all("body" not in e for e in entries)
        inner["b"].available = False
        if path == "/api/shards/health":
            r = c.get(path)
            assert r.status_code == 503 and r.json()["b"]["up"] is False
    off = Starlette(routes=routes(lambda: open_store("memory"), lambda: T0, problem))
    with TestClient(off) as c:
        assert c.get("/api/shards/distribution").status_code == 503
    s.close()


def test_bench_ring_json_quick():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "flk.impl", "bench", "ring", "--json", "--quick", "--repeat", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    fig = json.loads(out)
    assert fig["benchmark"] == "ring" and fig["lookups_per_s_scalar"] > 0 and fig["lookups_per_s_bulk"] > 0
    assert max(fig["max_over_min_by_shards"].values()) <= 1.2
    assert set(fig["moved_fraction_add_one_by_shards"]) == {"3", "4", "8"}


NOW = 1000.0


class _Unordered(MemoryStore):
    kind = "unordered-test"  # a backend whose scan the sharded store does not merge in key order


@settings(max_examples=120, deadline=None, derandomize=True)
@given(n_keys=st.integers(0, 40), residue=st.lists(st.integers(0, 39), max_size=25), limit=st.integers(1, 7),
       ordered=st.booleans(), seed=st.integers(0, 5))
def test_scan_and_sample_hold_each_key_once_from_its_owner_past_a_migrations_copies(n_keys, residue, limit,
                                                                                    ordered, seed):
    """A shard migration leaves copies of moved keys in their old shard (the same outcome, never
    read by get). The sharded store's entries are its owners' -- each key once: they counted
    twice (5,393 entries for 4,813 keys after growing 2 -> 3 shards under flk serve), so final
    reads, counts of a scan and samples saw copies as entries. ``every_copy`` is the observer's
    view: every physical copy (the old scan also lost a copy when a page cut between two)."""
    cls = MemoryStore if ordered else _Unordered
    store = ShardedStore({n: cls() for n in ("s0", "s1", "s2")})
    keys = [("t", f"p{i:03d}") for i in range(n_keys)]
    for i, (t, p) in enumerate(keys):
        store.shards[store.shard_for(t, p)].put_if_absent(t, p, outcome(i), NOW)
    for i in residue:  # the copy a migration left in another shard
        if i < n_keys:
            t, p = keys[i]
            other = sorted(set(store.shards) - {store.shard_for(t, p)})[i % 2]
            store.shards[other].put_if_absent(t, p, outcome(i), NOW)
    got = list(iter_entries(store, NOW, limit))
    assert ([(t, p) for t, p, _ in got] if ordered else sorted((t, p) for t, p, _ in got)) == keys
    assert all(o == outcome(int(p[1:])) for _t, p, o in got)
    want = sample_entries([(t, p, outcome(i)) for i, (t, p) in enumerate(keys)], 5, seed)
    assert store.sample(5, seed, NOW) == want
    # the observer's view keeps every physical copy (the simulator compares them)
    physical = sorted((t, p) for shard in store.shards.values() for t, p, _ in iter_entries(shard, NOW))
    assert sorted((t, p) for t, p, _ in store.every_copy(NOW)) == physical
    assert len(physical) == n_keys + len({i for i in residue if i < n_keys})
