"""The dedup contract test-suite, reusable for any store (ARCHITECTURE.md "Dedup contract").

Use it by subclassing :class:`DedupContract` in a ``Test*`` class and providing a
``store_spec`` fixture returning a :class:`StoreSpec` (see ``test_contract.py``)::

    from dedup.contract import DedupContract, StoreSpec

    class TestShardedContract(DedupContract):
        @pytest.fixture
        def store_spec(self, ...):
            yield StoreSpec("sharded", opener=my_module_level_opener, args=(...,), cross_process=True)

``opener(*args)`` must be a module-level function (it is pickled into child
processes for the multi-process race) returning a fresh store on the same data.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import DEFAULT_TTL_S, StoredOutcome, open_store, sample_entries


def open_by_url(url: str, opts: dict):
    return open_store(url, **opts)


def redis_cleanup(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` through a client of its own (a test's store
    may be closed by then)."""
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@dataclass
class StoreSpec:
    name: str
    opener: Callable = open_by_url
    args: tuple = ()
    cross_process: bool = True  # False for stores that live in one process (memory)
    ordered_scan: bool = True  # scan visits each live entry exactly once, in key order
    _opened: list = field(default_factory=list)

    def open(self):
        s = self.opener(*self.args)
        self._opened.append(s)
        return s

    def close_all(self) -> None:
        for s in self._opened:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - best effort in teardown
                pass


def outcome(i: int, status: int = 200, first_seen: float = 1000.0) -> StoredOutcome:
    body = b'{"n":%d,"utf8":"\xc3\xa9","nl":"a\\nb"}\n' % i
    return StoredOutcome(f"{i:064x}", status, body, first_seen, "eu-west", "1.0.0")


PID = "a" * 64
T0 = 1_000_000.0


def _race_thread(store, key, i, barrier, results):
    barrier.wait()
    results[i] = store.put_if_absent(key[0], key[1], outcome(i), T0)


def _race_process(spec_opener, spec_args, key, i, barrier, queue):
    """Puts its answer, or what went wrong, on ``queue``: a child that dies silently
    leaves the test waiting out its timeout with no cause."""
    try:
        store = spec_opener(*spec_args)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails with it
        barrier.abort()
        queue.put((i, None, f"open failed: {type(exc).__name__}: {exc}"))
        return
    try:
        barrier.wait(60)
        won, winner = store.put_if_absent(key[0], key[1], outcome(i), T0)
        queue.put((i, won, winner.to_bytes()))
    except Exception as exc:  # noqa: BLE001
        queue.put((i, None, f"put failed: {type(exc).__name__}: {exc}"))
    finally:
        store.close()


class DedupContract:
    """Every test takes the ``store_spec`` fixture a subclass provides."""

    def test_get_missing_is_none(self, store_spec):
        s = store_spec.open()
        assert s.get("t1", PID, T0) is None
        assert s.count(T0) == 0
        assert s.ping() is True

    def test_inv_fww_put_then_get_and_second_put_loses(self, store_spec):
        s = store_spec.open()
        assert s.put_if_absent("t1", PID, outcome(1), T0) == (True, outcome(1))
        assert s.get("t1", PID, T0 + 1) == outcome(1)
        won, winner = s.put_if_absent("t1", PID, outcome(2, status=202), T0 + 2)
        assert (won, winner) == (False, outcome(1))
        assert s.get("t1", PID, T0 + 3) == outcome(1)  # byte for byte, body included
        assert s.count(T0 + 3) == 1

    def test_inv_tenant_isolation_same_pcs_id_two_tenants(self, store_spec):
        s = store_spec.open()
        assert s.put_if_absent("t1", PID, outcome(1), T0)[0]
        assert s.get("t2", PID, T0) is None
        assert s.put_if_absent("t2", PID, outcome(2), T0) == (True, outcome(2))
        assert s.get("t1", PID, T0) == outcome(1) and s.get("t2", PID, T0) == outcome(2)
        # tenant names that would collide under naive concatenation stay apart
        assert s.put_if_absent("t1:x", "y", outcome(3), T0)[0]
        assert s.put_if_absent("t1", "x:y", outcome(4), T0)[0]
        assert s.get("t1:x", "y", T0) == outcome(3) and s.get("t1", "x:y", T0) == outcome(4)

    def test_ttl_expired_is_absent_and_replaceable(self, store_spec):
        s = store_spec.open()
        assert s.put_if_absent("t1", PID, outcome(1), T0, ttl_s=10.0)[0]
        assert s.get("t1", PID, T0 + 9.9) == outcome(1)
        assert s.put_if_absent("t1", PID, outcome(2), T0 + 9.9, ttl_s=10.0) == (False, outcome(1))
        assert s.get("t1", PID, T0 + 10.0) is None
        assert s.count(T0 + 10.0) == 0
        assert s.scan(None, 10, T0 + 10.0)[0] == []
        assert s.sample(5, 1, T0 + 10.0) == []
        assert s.put_if_absent("t1", PID, outcome(2), T0 + 10.0, ttl_s=10.0) == (True, outcome(2))
        assert s.get("t1", PID, T0 + 11.0) == outcome(2)

    def test_default_ttl_is_14_days(self, store_spec):
        s = store_spec.open()
        assert DEFAULT_TTL_S == 14 * 86400
        s.put_if_absent("t1", PID, outcome(1), T0)
        assert s.get("t1", PID, T0 + DEFAULT_TTL_S - 1) == outcome(1)
        assert s.get("t1", PID, T0 + DEFAULT_TTL_S) is None

    def _fill(self, s, n=11):
        model = {}
        for i in range(n):
            t, p = f"t{i % 3}", f"{i:04d}-pcs"
            s.put_if_absent(t, p, outcome(i), T0)
            model[(t, p)] = outcome(i)
        s.put_if_absent("gone", "x", outcome(99), T0, ttl_s=1.0)  # expired at T0 + 5
        return model

    def test_count_scan_sample(self, store_spec):
        s = store_spec.open()
        model = self._fill(s)
        now = T0 + 5
        assert s.count(now) == len(model)
        seen: dict = {}
        cursor, pages = None, 0
        while True:
            page, cursor = s.scan(cursor, 3, now)
            pages += 1
            if store_spec.ordered_scan:
                assert len(page) <= 3
                assert [(t, p) for t, p, _ in page] == sorted((t, p) for t, p, _ in page)
                for t, p, _ in page:
                    assert (t, p) not in seen, "ordered scan returned an entry twice"
            for t, p, o in page:
                seen[(t, p)] = o
            if cursor is None:
                break
            assert pages < 100
        assert seen == model
        entries = [(t, p, o) for (t, p), o in model.items()]
        for seed in (0, 7, 2**40):
            assert s.sample(4, seed, now) == sample_entries(entries, 4, seed)
        assert s.sample(100, 3, now) == sample_entries(entries, 100, 3)
        assert s.sample(0, 3, now) == []

    def test_batch_forms_are_in_order(self, store_spec):
        s = store_spec.open()
        if not hasattr(s, "put_many_if_absent"):
            pytest.skip("store has no batch forms")
        res = s.put_many_if_absent(
            [("t1", "p1", outcome(1)), ("t1", "p1", outcome(2)), ("t2", "p1", outcome(3))], T0)
        assert res == [(True, outcome(1)), (False, outcome(1)), (True, outcome(3))]
        assert s.get_many([("t1", "p1"), ("t2", "p1"), ("t3", "p1")], T0) == [outcome(1), outcome(3), None]
        # an expired key is replaced by the first item of the batch only; order is kept
        s.put_if_absent("t4", "p", outcome(4), T0, ttl_s=1.0)
        res = s.put_many_if_absent(
            [("t5", "p", outcome(5)), ("t4", "p", outcome(6)), ("t1", "p1", outcome(7)), ("t4", "p", outcome(8))],
            T0 + 5)
        assert res == [(True, outcome(5)), (True, outcome(6)), (False, outcome(1)), (False, outcome(6))]
        assert s.get_many([("t4", "p"), ("t4", "p")], T0 + 5) == [outcome(6), outcome(6)]
        assert s.put_many_if_absent([], T0) == [] and s.get_many([], T0) == []

    def test_delete_copies_deletes_only_the_live_entry_holding_that_outcome(self, store_spec):
        s = store_spec.open()
        if not hasattr(s, "delete_copies"):
            pytest.skip("a composite store: its prune deletes through its shards' own stores")
        model = self._fill(s, 6)
        now = T0 + 5
        (k0, o0), (k1, _), (k2, o2) = list(model.items())[:3]
        items = [(*k0, o0), (*k1, outcome(77)), ("nobody", "here", outcome(1)), ("gone", "x", outcome(99)),
                 (*k2, o2), (*k0, o0)]
        # k1 holds another outcome, the third is absent, "gone" has expired, k0's repeat is gone already
        assert s.delete_copies(items, now) == 2
        assert s.get(*k0, now) is None and s.get(*k2, now) is None and s.get(*k1, now) == model[k1]
        assert s.count(now) == len(model) - 2
        assert s.delete_copies([], now) == 0
        assert s.put_if_absent(*k0, outcome(50), now) == (True, outcome(50))  # the key is free again
        with pytest.raises(ValueError):
            s.delete_copies([("", "p", o0)], now)

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(
        st.tuples(st.sampled_from(["get", "put", "delete"]), st.integers(0, 2), st.integers(0, 3),
                  st.integers(0, 9), st.floats(0, 30)),
        max_size=25))
    def test_inv_fww_agrees_with_a_dict_model(self, store_spec, ops):
        s = store_spec.open() if not store_spec._opened else store_spec._opened[0]
        run = len(store_spec._opened) + getattr(self, "_hyp_runs", 0)
        self._hyp_runs = run + 1
        model: dict = {}  # key -> (expires_at, outcome)
        now = T0
        for op, t, p, v, dt in ops:
            now += dt
            key = (f"h{run}-t{t}", f"p{p}")
            live = key in model and model[key][0] > now
            if op == "get":
                assert s.get(*key, now) == (model[key][1] if live else None)
            elif op == "delete" and not hasattr(s, "delete_copies"):
                continue
            elif op == "delete":  # a prune's compare-and-delete: only the very outcome held goes
                gone = live and model[key][1] == outcome(v)
                assert s.delete_copies([(*key, outcome(v))], now) == int(gone)
                if gone:
                    del model[key]
            else:
                want = (False, model[key][1]) if live else (True, outcome(v))
                assert s.put_if_absent(*key, outcome(v), now, ttl_s=20.0) == want
                if not live:
                    model[key] = (now + 20.0, outcome(v))

    def test_inv_fww_thread_race_one_winner(self, store_spec):
        s = store_spec.open()
        n = 8
        barrier = threading.Barrier(n)
        results: list = [None] * n
        key = ("race", PID)
        threads = [threading.Thread(target=_race_thread, args=(s, key, i, barrier, results)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        winners = [i for i, r in enumerate(results) if r[0]]
        assert len(winners) == 1
        w = outcome(winners[0])
        assert all(r[1] == w for r in results)
        assert s.get(*key, T0) == w

    def test_inv_fww_batch_race_one_winner_per_key(self, store_spec):
        """Concurrent batches over the same keys in different orders: no deadlock,
        no error, exactly one winner per key, everyone sees that winner."""
        s = store_spec.open()
        if not hasattr(s, "put_many_if_absent"):
            pytest.skip("store has no batch forms")
        n, keys = 4, [("batch", f"k{j:03d}") for j in range(60)]
        barrier = threading.Barrier(n)
        results: list = [None] * n
        errors: list = []

        def worker(i):
            order = list(keys) if i % 2 == 0 else list(reversed(keys))
            order = order[i * 7 % len(order):] + order[:i * 7 % len(order)]
            barrier.wait()
            try:
                res = s.put_many_if_absent([(t, p, outcome(1000 * i + j)) for j, (t, p) in enumerate(order)], T0)
                results[i] = dict(zip(order, res, strict=True))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert errors == []
        for k in keys:
            got = [results[i][k] for i in range(n)]
            assert sum(1 for won, _ in got if won) == 1
            winner = next(o for won, o in got if won)
            assert all(o == winner for _, o in got) and s.get(*k, T0) == winner

    def test_inv_fww_process_race_one_winner(self, store_spec):
        if not store_spec.cross_process:
            pytest.skip(f"{store_spec.name} store lives in one process")
        ctx = multiprocessing.get_context("fork")
        n = 4
        barrier = ctx.Barrier(n)
        queue = ctx.Queue()
        key = ("prace", PID)
        procs = [ctx.Process(target=_race_process,
                             args=(store_spec.opener, store_spec.args, key, i, barrier, queue))
                 for i in range(n)]
        try:
            for p in procs:
                p.start()
            got = [queue.get(timeout=90) for _ in range(n)]
            for p in procs:
                p.join(60)
                assert p.exitcode == 0
        finally:  # a child left alive hangs the worker's exit, which then leaks its temp folders
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        assert [why for _, won, why in got if won is None] == []
        winners = [i for i, won, _ in got if won]
        assert len(winners) == 1
        w = outcome(winners[0])
        assert all(StoredOutcome.from_bytes(raw) == w for _, _, raw in got)
        assert store_spec.open().get(*key, T0) == w
