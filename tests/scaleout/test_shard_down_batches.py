"""A shard that is down fails its own keys only, also when they share a batch (SPEC 13.1).

The submit path answers a batch of requests with one ``get_many`` and one
``put_many_if_absent``. A sharded store used to raise for the whole batch when one of its
shards failed, so every request batched with a key of the down shard was answered 503, and
the breaker, counting those calls as failures, opened and failed every key: one shard of
four down took the whole region out. Now :class:`~flk.impl.dedup.base.PartialUnavailable`
carries the other shards' answers and the breaker counts the call a success.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server.privatestores import PrivateRedis
from server.proc import ServerProc
from verifier.pcsgen import HMAC_A, body, make_pcs, registry, sign

from flk.impl.core.tenantid import DEFAULT_TENANT
from flk.impl.dedup import PartialUnavailable, StoredOutcome, StoreUnavailable, open_store
from flk.impl.dedup.base import answered_part
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.testing.memwal import MemoryWal
from flk.impl.testing.outage import OutageStore
from flk.impl.testing.workload import bodies
from flk.impl.verifier.admission import CircuitBreaker, GuardedStore
from flk.impl.verifier.core import run_requests
from flk.impl.verifier.pipeline import Request, Verifier

KEY = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0
NAMES = ("s0", "s1", "s2", "s3")


def outcome(i: int) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", 200, b"{}", T0, "eu", "1")


def _store(down: set[str]) -> tuple[ShardedStore, dict[str, OutageStore]]:
    inner = {n: OutageStore(open_store("memory")) for n in NAMES}
    for n in down:
        inner[n].available = False
    return ShardedStore(inner, probe_interval_s=60.0), inner


@given(down=st.sets(st.sampled_from(NAMES), max_size=3),
       ids=st.lists(st.integers(0, 400), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_a_batch_fails_the_down_shards_items_only_and_answers_the_rest(down, ids) -> None:
    s, inner = _store(down)
    keys = [("t", f"p{i}") for i in ids]
    items = [(t, p, outcome(k)) for k, (t, p) in enumerate(keys)]
    on_down = sorted(k for k, key in enumerate(keys) if s.shard_for(*key) in down)
    try:
        got = s.put_many_if_absent(items, T0)
    except PartialUnavailable as exc:
        assert on_down and exc.failed == frozenset(on_down) and exc.items is items
        got = exc.results
    else:
        assert not on_down
    seen: dict = {}
    for k, (t, p, o) in enumerate(items):
        if k in on_down:
            assert got[k] is None and inner[s.shard_for(t, p)].inner.get(t, p, T0) is None  # nothing written
            continue
        first = seen.setdefault((t, p), o)  # a later item sees an earlier item's write
        assert got[k] == (first is o, first)
    try:
        found = s.get_many(keys, T0)
    except PartialUnavailable as exc:
        assert exc.failed == frozenset(on_down) and exc.items is keys
        found = exc.results
    assert [found[k] for k in range(len(keys)) if k not in on_down] == \
        [seen[key] for k, key in enumerate(keys) if k not in on_down]


def test_with_every_shard_down_the_store_is_down_not_partial() -> None:
    s, _ = _store(set(NAMES))
    keys = [("t", f"p{i}") for i in range(20)]
    with pytest.raises(StoreUnavailable) as info:
        s.get_many(keys, T0)
    assert not isinstance(info.value, PartialUnavailable)


def test_the_breaker_counts_a_partial_answer_a_success_and_only_the_down_items_as_failed() -> None:
    s, _ = _store({"s1"})
    breaker = CircuitBreaker(failure_threshold=2)
    guarded = GuardedStore(s, breaker, lambda: T0)
    keys = [("t", f"p{i}") for i in range(40)]
    on_down = {k for k, key in enumerate(keys) if s.shard_for(*key) == "s1"}
    for _ in range(5):
        with pytest.raises(PartialUnavailable) as info:
            guarded.get_many(keys, T0)
        assert answered_part(info.value, keys) is not None
    assert breaker.state == "closed" and guarded.failed_items == 5 * len(on_down)
    # a wrapper that calls the store on a list of its own: its callers get a whole failure
    other = list(keys)
    with pytest.raises(PartialUnavailable) as info:
        s.get_many(other, T0)
    assert answered_part(info.value, keys) is None


def test_the_core_answers_503_for_the_down_shards_requests_and_200_for_the_rest_of_one_batch() -> None:
    s, _ = _store({"s2"})
    v = Verifier(registry(), region="eu")
    docs = [sign(make_pcs(seed=seed), HMAC_A) for seed in range(1, 41)]
    reqs = [Request(body(doc), "ta") for doc in docs]
    ids = [doc["pcs_id"] for doc in docs]
    guarded = GuardedStore(s, CircuitBreaker(), lambda: T0)
    for _ in range(3):  # three batches: the breaker would have opened on whole failures
        answers = run_requests(v, reqs, T0, MemoryWal(), guarded)
        by_shard = {}
        for pcs_id, resp in zip(ids, answers, strict=True):
            by_shard.setdefault(s.shard_for("ta", pcs_id), set()).add(resp.status)
        assert by_shard.pop("s2") == {503} and by_shard and all(v == {200} for v in by_shard.values())


def _shard_of(names: list[str]):
    return ShardedStore({n: open_store("memory") for n in names}).shard_for


def test_flk_serve_with_a_redis_shard_killed_serves_every_other_shards_keys(tmp_path) -> None:
    """A real ``flk serve`` over three SQLite shards and a private Redis shard, killed (-9) once
    the server is up: connections to it are refused. Concurrent requests share batches (20 ms
    group delay): only the Redis shard's keys are answered 503, the breaker stays closed, and a
    second wave is answered the same."""
    names = ["a", "b", "c", "r"]
    redis = PrivateRedis().start()
    try:
        shards = {n: f"sqlite:///{tmp_path}/{n}.sqlite3" for n in names[:3]} | {"r": redis.url}
        srv = ServerProc(tmp_path / "srv", {"PCS_HMAC_KEY": KEY, "DEDUP_BACKEND": "sharded",
                                           "WAL_GROUP_DELAY_MS": "20", "STORE_TIMEOUT_S": "1", "MIN_INFLIGHT": "64",
                                           "DEDUP_SHARDS": ",".join(f"{k}={v}" for k, v in shards.items()),
                                           "OPERATOR_USER": "op", "OPERATOR_PASS": "op-pass-0123456789"})
        srv.start()
        redis.kill9()
        try:
            _two_waves(srv, _shard_of(names), names)
        finally:
            srv.stop()
    finally:
        redis.close()


def _two_waves(srv: ServerProc, shard_of, names: list[str]) -> None:
    all_bodies = bodies(KEY.encode(), 160)
    with httpx.Client(base_url=srv.url, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        for wave in (all_bodies[:80], all_bodies[80:]):
            statuses = list(pool.map(lambda b: client.post("/v1/pcs/submit", content=b).status_code, wave))
            by_shard: dict[str, set] = {}
            for b, status in zip(wave, statuses, strict=True):
                by_shard.setdefault(shard_of(DEFAULT_TENANT, json.loads(b)["pcs_id"]), set()).add(status)
            assert by_shard.pop("r") == {503}, by_shard
            assert by_shard == {n: {200} for n in names[:3]}
            time.sleep(0.2)
        metrics = client.get("/metrics", auth=("op", "op-pass-0123456789")).text
    assert re.search(r"^flk_store_breaker_state(\{[^}]*\})? 0\.0$", metrics, re.M), "the breaker opened"


def _migrating(phase: str, down: str, seed_keys: list[int]):
    from flk.impl.dedup.migrate import DualWriteStore

    shards = {n: OutageStore(open_store("memory")) for n in NAMES}
    old = ShardedStore({n: shards[n] for n in NAMES[:3]}, probe_interval_s=60.0)
    new = ShardedStore(dict(shards), probe_interval_s=60.0)
    store = DualWriteStore(old, new, phase)
    for i in seed_keys:  # entries written before the shard fails, through the migrating store
        store.put_if_absent("t", f"p{i}", outcome(i), T0)
    shards[down].available = False
    return store


@given(phase=st.sampled_from(["dual_write", "copied", "verified", "cut_over", "cleaned"]),
       down=st.sampled_from(NAMES), seeded=st.lists(st.integers(0, 60), max_size=20),
       ids=st.lists(st.integers(0, 60), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None)
def test_the_migrating_stores_batch_is_its_per_item_calls_and_a_down_shard_fails_its_items_alone(
        phase, down, seeded, ids) -> None:
    batched, single = _migrating(phase, down, seeded), _migrating(phase, down, seeded)
    items = [("t", f"p{i}", outcome(1000 + k)) for k, i in enumerate(ids)]
    expected, failed = [], set()
    for k, (t, p, o) in enumerate(items):  # the reference: one call per item, in order
        try:
            expected.append(single.put_if_absent(t, p, o, T0 + 1))
        except StoreUnavailable:
            expected.append(None)
            failed.add(k)
    try:
        got = batched.put_many_if_absent(items, T0 + 1)
    except PartialUnavailable as exc:
        assert exc.items is items and exc.failed == failed
        got = exc.results
    else:
        assert not failed
    assert got == expected
    keys = [(t, p) for t, p, _ in items]
    try:
        found = batched.get_many(keys, T0 + 2)
    except PartialUnavailable as exc:
        found = [None if k in exc.failed else r for k, r in enumerate(exc.results)]
    reference = []
    for t, p in keys:
        try:
            reference.append(single.get(t, p, T0 + 2))
        except StoreUnavailable:
            reference.append(None)
    assert found == reference


def test_a_store_asked_again_at_the_same_time_keeps_a_shard_out_until_it_forgets_its_health() -> None:
    """A replay asks the store at its records' times: asked again at the time a shard was found
    down, the store does not probe it again (the interval has not passed at that time), whatever
    happened since. A new process's store starts with every shard presumed up
    (``forget_health``): the simulator's regions forget at each start, as flk serve opens its
    store afresh (a region whose start met a down shard failed every later start before)."""
    s, inner = _store({"s2"})
    key = next(("t", f"p{i}") for i in range(400) if s.shard_for("t", f"p{i}") == "s2")
    with pytest.raises(StoreUnavailable):
        s.get(*key, T0)
    inner["s2"].available = True  # the shard is back
    with pytest.raises(StoreUnavailable):  # the same time: not probed again
        s.get(*key, T0)
    s.forget_health()
    assert s.get(*key, T0) is None and s.health["s2"].up
