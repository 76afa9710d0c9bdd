"""The simulator's streamed final state and object-store listing give exactly the plain paths' answers.

* ``SimMemoryStore.final_rows`` (rows made as they are read, one sort per shared key set,
  a shared outcome hashed once) yields the rows the plain ``scan_all`` + SHA-256 path does,
  for every store of a run, in order;
* ``CompactAuthoritativeStore.final_auth_rows`` yields ``final_rows``' entries as rows;
* a bucket's listing (a sorted key index) is the sorted, filtered scan of its objects;
* the reader's parsed-name cache lists the streams a fresh parse does.
"""

from __future__ import annotations

from hashlib import sha256

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome
from flk.impl.replication.reading import Reader, Topology
from flk.impl.replication.reconcile import Reconciler
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.sim.replication import Bucket, CompactAuthoritativeStore
from flk.sim.stores import KeyOrder, SimMemoryStore

TENANTS = ("t0", "t1", "t2")
pcs_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=4)


def _outcome(i: int, first_seen: float, region: str = "eu") -> StoredOutcome:
    return StoredOutcome(f"d{i % 5}", 200 if i % 3 else 202, b'{"i":%d}' % (i % 7), first_seen, region, "p1")


@st.composite
def stores(draw):
    """Up to three stores over overlapping key sets, sharing some outcome objects (as regions do)."""
    shared = {}
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        store = SimMemoryStore(ttl_s=10.0)
        for i, (tenant, pcs_id, now, ttl, reuse) in enumerate(draw(st.lists(st.tuples(
                st.sampled_from(TENANTS), pcs_ids, st.sampled_from([0.0, 1.0, 5.0]),
                st.sampled_from([None, 2.0, 10.0]), st.booleans()), max_size=25))):
            o = shared.get((tenant, pcs_id)) if reuse else None
            if o is None or o.first_seen != now:
                o = shared[(tenant, pcs_id)] = _outcome(i, now)
            store.put_if_absent(tenant, pcs_id, o, now, ttl)
        out.append(store)
    return out


@settings(max_examples=150, derandomize=True, deadline=None)
@given(stores(), st.sampled_from([0.5, 3.0, 9.0, 20.0]))
def test_final_rows_are_scan_all_rows(regions, now):
    order, seen = KeyOrder(), {}
    for k, store in enumerate(regions):
        rid = f"r{k}"
        want = [(rid, t, p, o.payload_digest, o.status, sha256(o.body).hexdigest()[:16])
                for t, p, o in store.scan_all(now)]
        assert list(store.final_rows(rid, now, order, seen)) == want


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TENANTS), pcs_ids, st.integers(0, 3), st.sampled_from(["eu", "us"])),
                max_size=30))
def test_final_auth_rows_are_final_rows(observed):
    store = CompactAuthoritativeStore()
    rec = Reconciler("eu", store=store)
    for i, (tenant, pcs_id, which, region) in enumerate(observed):
        rec.observe(tenant, pcs_id, _outcome(which, 1.0 + which, region), 2.0 + i)
    want = [("eu", t, p, a.payload_digest, a.region, conflict) for t, p, a, conflict in store.final_rows()]
    order = KeyOrder()
    assert list(store.final_auth_rows("eu", order)) == want
    assert list(store.final_auth_rows("eu", order)) == want  # the second read reuses the sorted keys


@settings(max_examples=150, derandomize=True, deadline=None)
@given(stores(), st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.sampled_from(["eu", "us"])), max_size=30),
       st.sampled_from([0.5, 3.0, 20.0]), st.booleans())
def test_columns_kept_by_final_rows_give_the_plain_rows(regions, picks, now, interleave):
    """``final_rows`` keeps each tenant's outcome columns for the next store and the
    authoritative stores' rows (the same outcome objects mostly; a store read row by row --
    an entry may have expired -- in between): every store's rows and every authoritative
    store's rows are the plain paths' rows, also when a later store's rows are made before an
    earlier store's are read."""
    order, seen = KeyOrder(), {}
    want, rows = [], []
    for k, store in enumerate(regions):
        rid = f"r{k}"
        want.append([(rid, t, p, o.payload_digest, o.status, sha256(o.body).hexdigest()[:16])
                     for t, p, o in store.scan_all(now)])
        if interleave:  # every tenant's rows of this store made now, read after the next stores' are made
            rows.append([store._tenant_rows(rid, t, now, order, seen) for t in sorted(store._by_tenant)])
        else:
            rows.append(list(store.final_rows(rid, now, order, seen)))
    if interleave:
        rows = [[row for part in parts for row in part] for parts in rows]
    assert rows == want
    # authoritative stores over the last store's keys: its outcome objects, or others
    last = regions[-1]
    entries = last.scan_all(1e9 if now < 10 else 0.0) or last.scan_all(0.0)
    for k in range(2):
        auth = CompactAuthoritativeStore()
        for i, (t, p, o) in enumerate(entries):
            same, which, region = picks[i % len(picks)] if picks else (True, 0, "eu")
            auth.put_first(t, p, o if same or k else _outcome(which, 2.0, region), 1.0)
        plain = [(f"a{k}", t, p, a.payload_digest, a.region, c) for t, p, a, c in auth.final_rows()]
        assert list(auth.final_auth_rows(f"a{k}", order, seen)) == plain
        assert list(auth.final_auth_rows(f"a{k}", order)) == plain


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TENANTS), pcs_ids), max_size=30))
def test_key_order_is_sorted_of_each_key_set(keysets):
    order = KeyOrder()
    by_tenant: dict[str, set] = {}
    for tenant, pcs_id in keysets:
        by_tenant.setdefault(tenant, set()).add(pcs_id)
        for t, keys in by_tenant.items():
            assert order.sorted(t, keys) == sorted(keys)


class _World:
    class net:
        @staticmethod
        def register(node, handler=None):
            return None


class _Fabric:
    """What a bucket reads of its fabric when it is made (the listing needs no network)."""

    world = _World()

    def receive(self, bucket, msg) -> None:  # pragma: no cover - no message is sent here
        raise AssertionError("no copy is sent in this test")


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(alphabet="ab/._-019", min_size=1, max_size=6),
                          st.sampled_from([0.0, 1.0, 2.0])), max_size=40),
       st.sampled_from(["", "a", "a/", "b/", "ab", "0"]), st.sampled_from([0.5, 1.5, 3.0]))
def test_bucket_listing_is_the_sorted_scan(ops, prefix, now):
    bucket = Bucket(_Fabric(), "eu")
    for add, key, visible in ops:
        if add:
            bucket.add(key, (b"x", {}, visible))
        else:
            bucket.forget(key)
    want = sorted((k for k, v in bucket.objects.items() if k.startswith(prefix) and v[2] <= now),
                  key=lambda k: k.encode())
    assert bucket.listed(prefix, now) == want
    assert bucket.keys == sorted(bucket.objects)


def _seg(i: int, suffix: str = ".log") -> str:
    return f"seg-{i:020d}{suffix}"


def test_reader_streams_parse_once_and_list_like_a_fresh_parse():
    store = MemoryObjectStore()
    manifest = ".manifest.json"
    names = [f"eu/{_seg(i)}" for i in (0, 7)] + [f"eu/{_seg(i, manifest)}" for i in (0, 7)]
    names += [f"eu/w1/{_seg(3, manifest)}", "eu/other.json", f"euro/{_seg(1, manifest)}"]
    for key in names:
        store.put(key, b"{}")
    reader = Reader(store, Topology.full_mesh(["eu", "us"], "us"), applier=None, state_path="/r.json")  # type: ignore[arg-type]
    fresh = Reader(store, Topology.full_mesh(["eu", "us"], "us"), applier=None, state_path="/f.json")  # type: ignore[arg-type]
    first = reader.streams("eu")
    assert first == {"eu": [(0, _seg(0)), (7, _seg(7))], "eu/w1": [(3, _seg(3))]}
    store.put(f"eu/{_seg(9, manifest)}", b"{}")
    assert reader.streams("eu") == fresh.streams("eu") != first
    assert f"euro/{_seg(1, manifest)}" not in reader._names["eu"]


def test_final_rows_of_many_keys_hash_in_chunks_and_reuse_shared_outcomes():
    """More keys than one hashing chunk; a second store sharing most outcome objects (a few
    replaced by equal-valued others, a few expired): both give the plain path's rows."""
    first, second = SimMemoryStore(ttl_s=10.0), SimMemoryStore(ttl_s=10.0)
    for i in range(9_001):
        o = _outcome(i, 1.0)
        first.put_if_absent("t1", f"k{i:05d}", o, 1.0, None)
        mine = _outcome(i, 1.0) if i % 997 == 0 else o  # an equal value, another object
        second.put_if_absent("t1", f"k{i:05d}", mine, 1.0, 2.0 if i % 1_501 == 0 else None)
    order, seen = KeyOrder(), {}
    for rid, store, now in (("a", first, 2.5), ("b", second, 2.5), ("c", second, 0.5)):
        want = [(rid, t, p, o.payload_digest, o.status, sha256(o.body).hexdigest()[:16])
                for t, p, o in store.scan_all(now)]
        assert list(store.final_rows(rid, now, order, seen)) == want
