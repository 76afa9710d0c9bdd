"""WAL replay (INV-IDEMPOTENT-REPLAY) on the real inbox WAL, and batch == sequential."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import open_store
from flk.impl.storage.groupcommitter import GroupCommitter
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.core import replay_log
from flk.impl.verifier.pipeline import (
    REPLAY_HEADER,
    Request,
    Verifier,
    run_batch,
    run_sync,
)

from .pcsgen import HMAC_A, HMAC_B, body, make_pcs, registry, sign

wal_mod = pytest.importorskip("flk.impl.storage.wal")

NOW = 1_700_000_000.0
POOL = [
    (body(sign(make_pcs(seed=1), HMAC_A)), "ta"),
    (body(sign(make_pcs(seed=1, coh=0.74), HMAC_A)), "ta"),  # conflicts with 0
    (body(sign(make_pcs(seed=1, coh=0.74), HMAC_B)), "tb"),  # same pcs_id, other tenant
    (body(sign(make_pcs(seed=2, r=1.4), HMAC_A)), "ta"),  # escalated
    (body(dict(sign(make_pcs(seed=3), HMAC_A), sig=sign(make_pcs(seed=3), HMAC_B)["sig"])), "ta"),  # 401
    (body(sign(make_pcs(seed=3), HMAC_A)), "ta"),  # good after the bad one
    (b'{"nope":1}', "ta"),
    (body(sign(make_pcs(seed=4), HMAC_B)), None),  # unknown tenant
    (body(dict(sign(make_pcs(seed=1), HMAC_A), attempt=7)), "ta"),  # duplicate of 0
]


def snapshot(store, now):
    out, cursor = [], None
    while True:
        page, cursor = store.scan(cursor, 100, now)
        out += page
        if cursor is None:
            return sorted(out, key=lambda e: (e[0], e[1]))


def test_inv_idempotent_replay_real_wal_twice(tmp_path):
    v = Verifier(registry(), region="eu")
    log = wal_mod.SegmentedLog(str(tmp_path / "wal"), segment_bytes=4096)
    live = open_store(f"sqlite:///{tmp_path}/live.db")
    statuses = []
    for i, (raw, tenant) in enumerate(POOL * 2):
        statuses.append(run_sync(v.handle(Request(raw, tenant), NOW + i), log, live).status)
    assert statuses[:9] == [200, 409, 200, 202, 401, 200, 400, 401, 200]
    assert statuses[9:] == [200, 409, 200, 202, 401, 200, 400, 401, 200]
    later = NOW + 100
    want = snapshot(live, later)
    assert len(want) == 4
    log.close()
    # restart: reopen the WAL, replay into a fresh store, twice; and into the live store
    log = wal_mod.SegmentedLog(str(tmp_path / "wal"))
    assert log.next_index == len(POOL) * 2
    fresh = open_store(f"sqlite:///{tmp_path}/fresh.db")
    first = replay_log(v, log, fresh)
    assert snapshot(fresh, later) == want
    second = replay_log(v, log, fresh)
    assert snapshot(fresh, later) == want
    assert [r.status for r in first] == statuses  # the same answers as live ...
    assert all(r.header(REPLAY_HEADER) == "true" for r in second if r.status in (200, 202))  # ... then replays
    replay_log(v, log, live)
    assert snapshot(live, later) == want
    log.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=20))
def test_inv_idempotent_replay_any_prefix_any_times(order):
    v = Verifier(registry())
    wal = MemoryWal()
    live = open_store("memory")
    for k, i in enumerate(order):
        run_sync(v.handle(Request(POOL[i][0], POOL[i][1]), NOW + k), wal, live)
    want = snapshot(live, NOW + 1000)
    from flk.impl.verifier.core import replay_records

    for cut in (0, len(wal.records) // 2, len(wal.records)):  # full WAL last
        fresh = open_store("memory")
        replay_records(v, wal.records[:cut], fresh)
        once = snapshot(fresh, NOW + 1000)
        replay_records(v, wal.records[:cut], fresh)
        assert snapshot(fresh, NOW + 1000) == once
    assert once == want


def _resp(r):
    return (r.status, r.headers, r.body)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=24), size=st.integers(1, 8))
def test_batch_driver_is_per_request_exact(order, size):
    seq_v, bat_v = Verifier(registry()), Verifier(registry())
    seq_store, bat_store = open_store("memory"), open_store("memory")
    seq_events, bat_events = [], []
    seq = [run_sync(seq_v.handle(Request(*POOL[i]), NOW), MemoryWal(), seq_store, seq_events.append)
           for i in order]
    bat, wal = [], MemoryWal()
    for start in range(0, len(order), size):
        gens = [bat_v.handle(Request(*POOL[i]), NOW) for i in order[start:start + size]]
        bat += run_batch(gens, wal, bat_store, bat_events.append)
    assert [_resp(r) for r in bat] == [_resp(r) for r in seq]
    assert snapshot(bat_store, NOW) == snapshot(seq_store, NOW)
    assert len(wal.records) == len(order) and wal.synced == len(order)


def test_batch_with_real_wal_shares_one_fsync(tmp_path):
    v = Verifier(registry())
    log = wal_mod.SegmentedLog(str(tmp_path / "wal"))
    store = open_store(f"sqlite:///{tmp_path}/d.db")
    gens = [v.handle(Request(body(sign(make_pcs(seed=100 + i), HMAC_A)), "ta"), NOW) for i in range(50)]
    out = run_batch(gens, log, store)
    assert [r.status for r in out] == [200] * 50
    assert log.durable_index == 50 and store.count(NOW) == 50
    log.close()


def test_group_committer_driver(tmp_path):
    v = Verifier(registry())
    log = wal_mod.SegmentedLog(str(tmp_path / "wal"))
    gc = GroupCommitter(log, max_delay_s=0.0)
    store = open_store("memory")
    r = run_sync(v.handle(Request(POOL[0][0], "ta"), NOW), gc, store)
    assert r.status == 200 and log.is_durable(0)
    gc.close()
    log.close()


def test_503_on_a_failed_wal(tmp_path):
    v = Verifier(registry())
    log = wal_mod.SegmentedLog(str(tmp_path / "wal"))
    log.close()  # a closed log refuses appends: the pipeline must not go on
    store = open_store("memory")
    r = run_sync(v.handle(Request(POOL[0][0], "ta"), NOW), log, store)
    assert r.status == 503 and store.count(NOW) == 0


def test_drivers_report_latency_per_request():
    from flk.impl.verifier.metrics import Metrics

    m = Metrics()
    v = Verifier(registry())
    run_sync(v.handle(Request(*POOL[0]), NOW), MemoryWal(), open_store("memory"), m, m.observe_latency)
    store = open_store("memory")
    run_batch([v.handle(Request(*POOL[i]), NOW) for i in (3, 5, 7)], MemoryWal(), store, m, m.observe_latency)
    assert m.value("flk_verify_latency_seconds_count", tenant="ta") == 3
    assert m.value("flk_verify_latency_seconds_count", tenant="_unknown") == 1
    assert m.value("flk_accepted_total", tenant="ta") == 2 and m.value("flk_escalated_total", tenant="ta") == 1
    text = m.exposition().decode()
    for name in ("flk_ingest_total", "flk_dedup_hits_total", "flk_accepted_total", "flk_escalated_total",
                 "flk_signature_errors_total", "flk_wal_errors_total", "flk_dedup_conflicts_total",
                 "flk_verify_latency_seconds_bucket"):
        assert f"# TYPE {name.rsplit('_', 1)[0] if name.endswith('_bucket') else name.removesuffix('_total')}" in text
