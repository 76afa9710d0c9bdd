"""The replication service driver: configuration, pause file (partition), the
thread, and two services replicating through a shared directory on real disk."""

from __future__ import annotations

import json
import time

import pytest
from verifier.pcsgen import registry

from flk.impl.dedup import open_store
from flk.impl.replication.service import CrrConfig, CrrService
from flk.impl.server.config import ConfigError, load_config
from flk.impl.storage.wal import SegmentedLog
from flk.impl.verifier.pipeline import Request, Verifier, run_sync

from .regions import NOW, variants


def config_from_env(env, region):
    """The replication part of the server's settings table (CRR_* rows)."""
    return load_config({"DATA_DIR": "/nonexistent", "PCS_HMAC_KEY": "k" * 16, "REGION_ID": region, **env},
                       create_key=False).crr


def test_config_from_env():
    assert config_from_env({}, "eu") is None
    c = config_from_env({"CRR_STORE_DIR": "/x", "CRR_PEERS": "us:ta,ap", "CRR_SHIP_INTERVAL_S": "0.5"}, "eu")
    assert c == CrrConfig("eu", "/x", "us:ta,ap", 0.5, 0.5, "auto-safe", 60.0, 64, 5.0)  # settle: 2 x (0.5 + 0.5) + 3
    for bad in ({"CRR_SHIP_INTERVAL_S": "soon"}, {"CRR_SHIP_INTERVAL_S": "0"}, {"CRR_MODE": "yolo"},
                {"CRR_READ_INTERVAL_S": "1e9"}):
        with pytest.raises(ConfigError):
            config_from_env({"CRR_STORE_DIR": "/x", **bad}, "eu")


def make(tmp_path, name, peers, shared):
    d = tmp_path / name
    d.mkdir()
    wal = SegmentedLog(str(d / "wal"))
    store = open_store(f"sqlite:///{d}/dedup.db")
    v = Verifier(registry(), region=name)
    svc = CrrService(CrrConfig(name, str(shared), peers, 0.05, 0.05), wal=wal, dedup_store=store, verifier=v,
                     data_dir=str(d))
    return svc, wal, store, v


def test_a_held_shipper_stops_only_the_shipping(tmp_path):
    """crr.pause-ship: us's records stop leaving it (no failure) while us still reads eu's;
    deleting the file ships the backlog."""
    shared = tmp_path / "shared"
    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "us", shared)
    us, us_wal, us_store, us_v = make(tmp_path, "us", "eu", shared)
    (raw0, t0, pid0, _), _ = variants(1, 2)
    (tmp_path / "us" / "crr.pause-ship").write_text("")
    assert run_sync(eu_v.handle(Request(raw0, t0), NOW), eu_wal, eu_store).status == 200
    raw2, t2, pid2, _ = variants(2, 1)[1]
    assert run_sync(us_v.handle(Request(raw2, t2), NOW), us_wal, us_store).status == 200
    eu.step(NOW + 1)
    us.step(NOW + 1)
    eu.step(NOW + 2)
    m = us.metrics()
    assert m["ship_paused"] and not m["paused"] and m["ship"]["failures"] == 0
    assert us.shipper.watermark == 0 and eu_store.get(t2, pid2, NOW + 2) is None  # nothing of us left it
    assert us_store.get(t0, pid0, NOW + 2) is not None  # us reads on
    (tmp_path / "us" / "crr.pause-ship").unlink()
    us.step(NOW + 3)
    eu.step(NOW + 3)
    assert us.shipper.watermark > 0 and eu_store.get(t2, pid2, NOW + 4) is not None


def test_a_rewind_order_rereads_every_shipped_segment_live(tmp_path):
    """crr.rewind: at its next step the reading service forgets its watermarks, re-reads what eu
    shipped (its records applied again, no stored answer changed), logs it and removes the file;
    a service without a reader (another worker's) leaves the order to the one that reads."""
    shared = tmp_path / "shared"
    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "us", shared)
    us, us_wal, us_store, us_v = make(tmp_path, "us", "eu", shared)
    logged = []
    us._log = lambda event, **kw: logged.append(event)
    (raw0, t0, pid0, _), _ = variants(1, 2)
    assert run_sync(eu_v.handle(Request(raw0, t0), NOW), eu_wal, eu_store).status == 200
    eu.step(NOW + 1)
    us.step(NOW + 1)
    before = us_store.get(t0, pid0, NOW + 2)
    applied = us.reader.applied_records
    assert before is not None and applied == 1 and us.reader.watermarks
    assert us.reader.last_applied_at == NOW + 1 and us.metrics()["read"]["last_applied_at"] == NOW + 1
    order = tmp_path / "us" / "crr.rewind"
    order.write_text("")
    reader, us.reader = us.reader, None  # a worker that does not read: the order stays
    us.step(NOW + 2)
    assert order.exists()
    us.reader = reader
    us.step(NOW + 3)
    assert not order.exists() and "crr_reader_rewound" in logged
    assert us.reader.applied_records == 2 * applied and us.reader.rewinds == 1  # read again
    assert us.reader.last_applied_at == NOW + 3
    assert us_store.get(t0, pid0, NOW + 4) == before and us.metrics()["read"]["rewinds"] == 1
    us.step(NOW + 4)
    assert us.reader.applied_records == 2 * applied  # once: the order was taken
    assert us.reader.last_applied_at == NOW + 3  # nothing applied since
    for w in (eu_wal, us_wal):
        w.close()


def test_two_services_replicate_through_a_shared_directory_and_pause(tmp_path):
    shared = tmp_path / "shared"
    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "us", shared)
    us, us_wal, us_store, us_v = make(tmp_path, "us", "eu", shared)
    (raw0, t0, pid0, _), (raw1, _, _, _) = variants(1, 2)
    assert run_sync(eu_v.handle(Request(raw0, t0), NOW), eu_wal, eu_store).status == 200
    eu.step(NOW + 1)
    us.step(NOW + 1)
    got = us_store.get(t0, pid0, NOW + 2)
    assert got is not None and got.region == "eu" and got.first_seen == NOW
    # partition: us pauses; a conflicting write in us is not shipped
    (tmp_path / "us" / "crr.pause").write_text("")
    # us has not seen eu's write of key 0: it stores its own, conflicting (escalated) payload
    assert run_sync(us_v.handle(Request(raw1, t0), NOW + 3), us_wal, us_store).status == 409  # us already has eu's
    raw2 = variants(2, 1)[1][0]
    assert run_sync(us_v.handle(Request(raw2, variants(2, 1)[1][1]), NOW + 3), us_wal, us_store).status == 200
    us.step(NOW + 4)
    eu.step(NOW + 4)
    assert us.metrics()["paused"] and us.shipper.watermark == 0 and eu.reader.applied_records == 1
    (tmp_path / "us" / "crr.pause").unlink()
    us.step(NOW + 5)
    eu.step(NOW + 5)
    assert us.shipper.watermark == 2 and eu.reader.applied_records == 3
    assert eu.reconciler.authoritative_map() == us.reconciler.authoritative_map()
    # the 409-at-origin record is a conflict candidate; the earlier write (eu's) is authoritative
    for svc in (eu, us):
        rec = svc.reconciler.authoritative(t0, pid0)
        assert rec.conflict and rec.authoritative.region == "eu" and rec.state == "pending_review"
    assert us_store.get(t0, pid0, NOW + 9).region == "eu"  # local outcomes untouched
    us.divergence.step(NOW + 6)  # both publish at the same moment: nothing compared yet
    eu.divergence.step(NOW + 6)
    assert eu.divergence.last == [] and eu.divergence.compared is None
    eu.divergence.step(NOW + 36)  # half a period (60 s) later: compared with us's summary
    assert [a.severity for a in eu.divergence.compared] == ["warning"] and eu.divergence.unseen == {"us": 0}
    # each region's key count as of its last summary (what the cluster runner's key-count spread reads)
    for svc, store in ((eu, eu_store), (us, us_store)):
        assert svc.metrics()["divergence_count"] == {"keys": store.count(NOW + 6), "taken_at": NOW + 6}
    # the thread driver
    eu.clock = us.clock = lambda: NOW + 10 + (time.monotonic() % 1)
    eu.start()
    us.start()
    time.sleep(0.3)
    m = eu.metrics()
    eu.stop()
    us.stop()
    assert eu.errors == 0 and us.errors == 0
    assert m["ship"]["shipped_records"] >= 1 and m["read"]["applied_records"] >= 3
    assert m["audit_queue"]["processed"] == 1 and m["audit_queue"]["backlog"] == 0
    assert [d["severity"] for d in m["divergence"]] == ["warning"]  # one open conflict
    # every reconcile decision reached the WORM audit log (through the durable queue), verifiably
    from flk.impl.governance.audit import verify_directory

    rep = verify_directory(str(tmp_path / "eu" / "crr" / "audit"), anchors_dir=str(tmp_path / "eu" / "crr" / "anchors"))
    assert rep.ok
    lines = [json.loads(x) for f in sorted((tmp_path / "eu" / "crr" / "audit").glob("seg-*.log"))
             for x in f.read_text().splitlines()]
    assert [e["outcome"] for e in lines] == ["reconcile_conflict"] and lines[0]["pcs_id"] == pid0
    for w in (eu_wal, us_wal):
        w.close()


def test_volatile_dedup_store_rereads_every_stream_after_a_restart(tmp_path):
    shared = tmp_path / "shared"
    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "us", shared)
    raw0, t0, pid0, _ = variants(1, 1)[0]
    assert run_sync(eu_v.handle(Request(raw0, t0), NOW), eu_wal, eu_store).status == 200
    eu.step(NOW + 1)
    eu.stop()
    eu_wal.close()
    d = tmp_path / "us"
    d.mkdir()

    def start(volatile: bool):
        store = open_store("memory")
        svc = CrrService(CrrConfig("us", str(shared), "eu", 0.05, 0.05), wal=SegmentedLog(str(d / "wal")),
                         dedup_store=store, verifier=Verifier(registry(), region="us"), data_dir=str(d),
                         volatile_store=volatile)
        svc.step(NOW + 2)
        return svc, store

    svc, store = start(True)
    assert store.get(t0, pid0, NOW + 3) is not None
    svc.stop()
    svc.shipper.log.close()
    svc, store = start(False)  # trusting the watermark with an empty memory store would miss it
    assert store.get(t0, pid0, NOW + 3) is None
    svc.stop()
    svc.shipper.log.close()
    svc, store = start(True)
    assert store.get(t0, pid0, NOW + 3) is not None
    svc.stop()
    svc.shipper.log.close()


def test_prometheus_collector_exposes_the_crr_families(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from flk.impl.replication.service import CrrCollector

    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "", tmp_path / "shared")
    raw0, t0, _, _ = variants(1, 1)[0]
    run_sync(eu_v.handle(Request(raw0, t0), NOW), eu_wal, eu_store)
    eu.step(NOW + 1)
    reg = CollectorRegistry()
    reg.register(CrrCollector(eu))
    text = generate_latest(reg).decode()
    assert 'flk_crr_shipped_records_total{worker="0"} 1.0' in text
    assert 'flk_crr_applied_records_total{worker="0"} 1.0' in text
    assert 'flk_crr_open_conflicts{worker="0"} 0.0' in text and "flk_crr_audit_backlog" in text
    eu.stop()
    eu_wal.close()


def test_the_server_hook_takes_only_the_parts_replication_needs(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from flk.impl.replication.service import start_for_server, stop_for_server

    wal = SegmentedLog(str(tmp_path / "wal"))
    store = open_store("memory")
    verifier = Verifier(registry(), region="eu")
    assert start_for_server(None, wal=wal, store=store, verifier=verifier, data_dir=str(tmp_path)) is None
    warnings: list[str] = []
    reg = CollectorRegistry()
    svc = start_for_server(CrrConfig("eu", str(tmp_path / "shared"), "", 0.05, 0.05), wal=wal, store=store,
                           verifier=verifier, data_dir=str(tmp_path), worker=3, volatile_store=True,
                           log=lambda event, **kw: warnings.append(event), registry=reg)
    try:
        assert svc is not None and svc.worker == 3 and svc.data_dir == str(tmp_path)
        assert 'flk_crr_shipped_records_total{worker="3"}' in generate_latest(reg).decode()
    finally:
        stop_for_server(svc)
        wal.close()


def test_divergence_check_and_audit_survive_a_clock_step_back(tmp_path):
    """SPEC 11.9 rule 5 for the service's own timers: a divergence deadline left ahead by
    a step back is due at once, and an audit entry is due on the local clock, not on a
    stamp from another region's (faster) clock."""
    shared = tmp_path / "shared"
    shared.mkdir()
    svc, _, _, _ = make(tmp_path, "eu", "us", shared)
    calls = []
    real = svc.divergence.step
    svc.divergence.step = lambda now: (calls.append(now), real(now))[1]
    t = 1_000_000.0
    svc.step(t)
    svc.step(t + 1.0)
    assert calls == [t]  # an ordinary period still waits
    back = t - 3600.0
    svc.step(back)
    assert calls == [t, back], "a deadline left an hour ahead by the step must be due now"
    svc.clock = lambda: back
    svc._enqueue_audit(region="us", tenant="ta", pcs_id="0" * 64, outcome="reconcile_conflict",
                       payload_digest="a" * 64, now=t + 7200.0)  # the entry's stamp: another clock, ahead
    before = svc.audit_queue.counters["processed"]
    svc.step(back)
    assert svc.audit_queue.counters["processed"] == before + 1
    svc.stop(final_ship=False)


def test_shipping_does_not_wait_behind_the_reader(tmp_path):
    """The shipper has a thread of its own: while the reading thread is busy (here: a replay
    that does not return, as a peer's backlog after a partition heals kept it for seconds), a
    record acked now still leaves the region within a few ship intervals. With one thread for
    both, its uploads waited for the replay (clock-skew-replicated on a real cluster)."""
    import threading

    shared = tmp_path / "shared"
    us, us_wal, us_store, us_v = make(tmp_path, "us", "eu", shared)
    entered, release = threading.Event(), threading.Event()
    step = us.reader.step

    def busy(now):
        entered.set()
        release.wait(30)
        return step(now)

    us.reader.step = busy
    us.start()
    try:
        assert entered.wait(5)
        raw, tenant, _, _ = variants(1, 1)[0]
        assert run_sync(us_v.handle(Request(raw, tenant), NOW), us_wal, us_store).status == 200
        deadline = time.monotonic() + 5.0
        while us.shipper.watermark == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert us.shipper.watermark == 1, "the record waited for the reader"
        assert any(p.name.endswith(".manifest.json") for p in (shared / "us").iterdir())
        assert sorted(t.name for t in us._threads) == ["crr-ship-w0", "crr-w0"]
    finally:
        release.set()
        us.stop(final_ship=False)
        us_wal.close()
        us_store.close()


def test_a_worker_that_reads_nothing_runs_only_its_shipping_thread(tmp_path):
    shared = tmp_path / "shared"
    d = tmp_path / "w1"
    d.mkdir()
    wal = SegmentedLog(str(d / "wal"))
    store = open_store(f"sqlite:///{d}/dedup.db")
    svc = CrrService(CrrConfig("eu", str(shared), "us", 0.05, 0.05), wal=wal, dedup_store=store,
                     verifier=Verifier(registry(), region="eu"), data_dir=str(d), worker=1)
    svc.start()
    try:
        assert [t.name for t in svc._threads] == ["crr-ship-w1"]
        assert svc.read_step(NOW) is None
    finally:
        svc.stop(final_ship=False)
        wal.close()
        store.close()
