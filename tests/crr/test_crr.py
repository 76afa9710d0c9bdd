"""Shipper and Reader: sealing, write-once upload, watermarks, backoff, lag,
verification of shipped segments (a flipped bit is rejected and reported,
never applied, never skipped), replay through the pipeline as the origin
region, idempotent re-reads, topologies."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verifier.pcsgen import HMAC_A, body, make_pcs, registry, sign

from flk.impl.core.backoff import Backoff
from flk.impl.replication.applying import ReplayApplier, verifier_for_region
from flk.impl.replication.reading import GAP_PATIENCE_S, Topology
from flk.impl.replication.stream import SegmentRejected, WatermarkFile
from flk.impl.storage.objectstore import DirectoryObjectStore, MemoryObjectStore
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.impl.verifier.pipeline import Verifier

from .regions import NOW, Region, variants


def two(objects=None):
    objects = objects or MemoryObjectStore()
    return objects, Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])


def shipped(n: int):
    """eu accepts ``n`` records, one a second from NOW, and ships each as a segment of its own."""
    objects, eu, us = two()
    for i, (raw, tenant, _, _) in enumerate(variants(n, 1)):
        eu.submit(raw, tenant, NOW + i)
        eu.shipper.step(NOW + i)
    return objects, eu, us


def test_backoff_is_exponential_capped_and_jitter_is_seeded():
    b = Backoff(0.5, 8.0)
    assert [b.delay(i) for i in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    import random

    assert b.delay(3, random.Random(1)) == b.delay(3, random.Random(1))
    assert 1.0 <= b.delay(3, random.Random(2)) <= 2.0


def test_shipper_seals_uploads_segment_and_manifest_and_persists_watermark():
    objects, eu, _ = two()
    for i, (raw, t, _, _) in enumerate(variants(3, 1)):
        assert eu.submit(raw, t, NOW + i).status == 200
    nxt = eu.shipper.step(NOW + 5)
    assert nxt == NOW + 6
    keys = objects.list("eu/")
    assert keys == ["eu/seg-00000000000000000000.log", "eu/seg-00000000000000000000.manifest.json"]
    assert objects.get_metadata(keys[0])["count"] == "3"
    assert eu.shipper.watermark == 3
    assert WatermarkFile("/eu/ship.json", eu.fs).load() == {"eu": 3}
    # replication lag: upload time minus received_at of each record
    assert sorted(eu.shipper.lag.samples) == [3.0, 4.0, 5.0]
    # nothing new: no new segment, same objects (idempotent)
    eu.shipper.step(NOW + 6)
    assert objects.list("eu/") == keys
    assert eu.shipper.lag_s(NOW + 7) == 0.0


def test_shipper_restart_resumes_from_watermark_and_reupload_is_a_noop():
    objects, eu, _ = two()
    raw, t, _, _ = variants(1, 1)[0]
    eu.submit(raw, t, NOW)
    eu.shipper.step(NOW)
    ops = objects.ops
    # forget the watermark (crash before it was saved): the re-upload hits the exists check
    eu.fs.remove("/eu/ship.json")
    eu2 = Region("eu", objects, ["eu"], fs=eu.fs)
    eu2.log.close()
    eu2.log = eu.log
    eu2.shipper.log = eu.log
    eu2.shipper.step(NOW + 1)
    assert eu2.shipper.watermark == 1
    assert objects.list("eu/") == ["eu/seg-00000000000000000000.log", "eu/seg-00000000000000000000.manifest.json"]
    assert objects.ops > ops


def test_shipper_backs_off_while_the_store_is_down_and_reports_lag():
    objects, eu, _ = two()
    raw, t, _, _ = variants(1, 1)[0]
    eu.submit(raw, t, NOW)
    objects.available = False
    assert eu.shipper.step(NOW + 1) == NOW + 1.5
    assert eu.shipper.failures == 1 and "Unavailable" in eu.shipper.last_error
    assert eu.shipper.step(NOW + 1.2) == NOW + 1.5  # not before the retry time
    assert eu.shipper.step(NOW + 1.5) == NOW + 2.5  # second failure: 1 s
    assert eu.shipper.step(NOW + 2.5) == NOW + 4.5
    objects.available = True
    eu.shipper.step(NOW + 4.5)
    assert eu.shipper.failures == 0 and eu.shipper.watermark == 1
    assert list(eu.shipper.lag.samples) == [4.5]


def test_shipper_paused_ships_nothing_and_lag_grows():
    objects, eu, _ = two()
    raw, t, _, _ = variants(1, 1)[0]
    eu.submit(raw, t, NOW)
    eu.shipper.step(NOW)  # ships
    raw2, t2, _, _ = variants(2, 1)[1]
    eu.submit(raw2, t2, NOW + 1)
    eu.shipper.paused = True
    eu.shipper.step(NOW + 5)
    assert eu.shipper.watermark == 1
    assert eu.shipper.lag_s(NOW + 5) == 4.0 and eu.shipper.lag_s(NOW + 9) == 8.0  # grows while paused
    eu.shipper.paused = False
    eu.shipper.step(NOW + 10)
    assert eu.shipper.watermark == 2 and eu.shipper.lag_s(NOW + 11) == 0.0


def test_inv_idempotent_replay_cross_region_identical_outcomes_and_second_read_is_a_noop():
    objects, eu, us = two()
    vs = variants(3, 2)
    for i, (raw, t, _, v) in enumerate(vs):
        if v == 0:
            eu.submit(raw, t, NOW + i)
    bad = sign(make_pcs(seed=9), HMAC_A)
    bad["sig"] = sign(make_pcs(seed=10), HMAC_A)["sig"]
    assert eu.submit(body(bad), "ta", NOW + 50).status == 401
    assert eu.submit(b'{"x":', "ta", NOW + 51).status == 400
    eu.shipper.step(NOW + 60)
    us.reader.step(NOW + 61)
    assert us.reader.applied_records == 5 and not us.rejects
    # the same outcomes, byte for byte: first_seen/region are eu's
    assert us.local() == eu.local() and len(eu.local()) == 3
    assert all(o.region == "eu" for o in us.local().values())
    snap = us.local()
    # re-read everything again (watermark lost): no change
    us.reader.watermarks.clear()
    us.reader.poll(NOW + 70)
    assert us.local() == snap
    assert us.applier.stored == 3  # stored once; the second pass stored nothing


def test_replay_never_bypasses_signature_verification():
    """A record with a forged signature in a (correctly checksummed) shipped
    segment is replayed but refused at step 4: nothing is stored -- whether it has no
    home answer (a WAL written before answer notes) or a home answer that claims it
    was stored (a lying or broken home: the answer never replaces verification)."""
    from flk.impl.storage.walformat import A_STORED, AnswerNote
    from flk.impl.verifier.pipeline import Request, run_sync

    objects, eu, us = two()
    forged = dict(sign(make_pcs(seed=5), HMAC_A), sig="AAAA" + sign(make_pcs(seed=5), HMAC_A)["sig"][4:])
    assert run_sync(eu.verifier.handle(Request(body(forged), "ta"), NOW), eu.log, eu.store).status == 401
    forged2 = dict(sign(make_pcs(seed=6), HMAC_A), sig="AAAA" + sign(make_pcs(seed=6), HMAC_A)["sig"][4:])
    assert run_sync(eu.verifier.handle(Request(body(forged2), "ta"), NOW), eu.log, eu.store).status == 401
    eu.log.note_answers([AnswerNote(1, A_STORED, 200)])
    eu.shipper.step(NOW + 1)
    us.reader.step(NOW + 2)
    assert us.reader.applied_records == 2 and us.local() == {}
    assert sum(e.get("kind") == "signature_error" for e in us.events) == 2


@pytest.mark.parametrize("what", ["segment", "manifest"])
def test_bit_flip_in_a_shipped_segment_is_rejected_reported_and_stops_the_stream(what):
    objects, eu, us = shipped(3)
    vs = variants(3, 1)
    segs = [k for k in objects.list("eu/") if k.endswith(".log")]
    assert len(segs) == 3
    victim = segs[1] if what == "segment" else segs[1].replace(".log", ".manifest.json")
    objects.corrupt(victim, 20, bit=3)
    us.reader.step(NOW + 3)
    assert len(us.rejects) == 1 and isinstance(us.rejects[0], SegmentRejected)
    assert us.rejects[0].segment == segs[1].split("/")[-1]
    assert "eu" in us.reader.metrics()["rejected"]
    # the first segment applied, the damaged one and everything after it not
    assert set(us.local()) == {(vs[0][1], vs[0][2])}
    assert us.reader.watermarks["eu"] == 1
    us.reader.step(NOW + 10)  # still stuck, reported once
    assert len(us.rejects) == 1 and us.reader.watermarks["eu"] == 1
    with pytest.raises(SegmentRejected):
        us.reader.strict = True
        us.reader.poll(NOW + 11)


def test_gap_in_shipped_segments_is_rejected():
    objects, eu, us = shipped(2)
    first = [k for k in objects.list("eu/")][:2]
    for k in first:
        objects.delete(k)
    # first a copy that may still be on its way: the stream waits, nothing applied, nothing reported
    us.reader.step(NOW + 2)
    assert not us.rejects and not us.reader.rejected and us.local() == {}
    us.reader.step(NOW + 2 + GAP_PATIENCE_S - 0.5)
    assert not us.rejects
    # a gap that lasted the patience is rejected: reported, the stream stops there, nothing skipped
    us.reader.step(NOW + 2 + GAP_PATIENCE_S)
    assert us.rejects and "gap" in str(us.rejects[0]) and "eu" in us.reader.rejected
    assert us.local() == {}


def test_a_segment_that_lands_after_a_later_one_is_waited_for_and_applied_in_order():
    """Copies between object stores need not land in order (S3 replication, a copier that retries):
    the later segment waits for the earlier one, then both are applied, and nothing is reported."""
    objects, eu, us = shipped(2)
    first = sorted(objects.list("eu/"))[:2]
    held = {k: (objects.get(k), objects.get_metadata(k)) for k in first}
    for k in first:
        objects.delete(k)
    us.reader.step(NOW + 2)
    assert us.local() == {} and us.reader.watermarks.get("eu", 0) == 0
    for k, (data, meta) in held.items():  # the first segment lands now
        objects.put(k, data, meta or None)
    us.reader.step(NOW + 3)
    assert not us.rejects and len(us.local()) == 2 and us.reader.watermarks["eu"] == 2


def test_reader_backs_off_when_the_dedup_store_is_down_and_does_not_skip():
    from flk.impl.dedup import StoreUnavailable

    class Flaky:
        def __init__(self, inner):
            self.inner, self.down = inner, True

        def put_if_absent(self, *a):
            if self.down:
                raise StoreUnavailable("down")
            return self.inner.put_if_absent(*a)

        def put_many_if_absent(self, *a):
            if self.down:
                raise StoreUnavailable("down")
            return self.inner.put_many_if_absent(*a)

    objects, eu, us = two()
    raw, t, _, _ = variants(1, 1)[0]
    eu.submit(raw, t, NOW)
    eu.shipper.step(NOW)
    flaky = Flaky(us.store)
    us.applier.store = flaky
    for batch in (0, 256):  # one record at a time, and batched
        us.reader.batch = batch
        us.reader._retry_at = 0.0
        assert us.reader.step(NOW + 1) == NOW + 1 + 0.5 * 2 ** (us.reader.failures - 1)
        assert us.reader.watermarks.get("eu", 0) == 0 and us.local() == {}
    flaky.down = False
    us.reader.step(NOW + 10)
    assert us.reader.watermarks["eu"] == 1 and len(us.local()) == 1


def test_selective_topology_reads_only_listed_tenants():
    objects = MemoryObjectStore()
    eu = Region("eu", objects, ["eu"])
    us = Region("us", objects, [], topology=Topology.parse("eu:tb", "us"))
    for i, (raw, t, _, _) in enumerate(variants(4, 1)):
        eu.submit(raw, t, NOW + i)
    eu.shipper.step(NOW + 10)
    us.reader.step(NOW + 11)
    assert {k[0] for k in us.local()} == {"tb"}
    assert us.reader.filtered_records == 2
    assert Topology.parse("eu:ta+tb, ap", "us").sources == {"ap": None, "eu": frozenset({"ta", "tb"}), "us": None}
    assert Topology.full_mesh(["b", "a", "c"], "a", include_self=False).sources == {"b": None, "c": None}


def test_worker_streams_are_read_as_part_of_their_region():
    objects = MemoryObjectStore()
    eu = Region("eu", objects, ["eu"])
    eu.shipper.stream = "eu/w1"
    raw, t, _, _ = variants(1, 1)[0]
    eu.submit(raw, t, NOW)
    eu.shipper.step(NOW)
    us = Region("us", objects, ["eu", "us"])
    assert list(us.reader.streams("eu")) == ["eu/w1"]
    us.reader.step(NOW + 1)
    assert len(us.local()) == 1


def test_multi_way_three_regions_on_a_shared_directory(tmp_path):
    objects = DirectoryObjectStore(str(tmp_path / "shared"))
    names = ["ap", "eu", "us"]
    regs = [Region(n, objects, names) for n in names]
    vs = variants(3, 1)
    for i, r in enumerate(regs):
        r.submit(vs[i][0], vs[i][1], NOW + i)
    for r in regs:
        r.shipper.step(NOW + 5)
    for r in regs:
        r.reader.step(NOW + 6)
    assert regs[0].local() == regs[1].local() == regs[2].local()
    assert len(regs[0].local()) == 3


def test_verifier_for_region_changes_only_the_region():
    v = Verifier(registry(), region="eu")
    w = verifier_for_region(v, "us")
    assert w.region == "us" and w.tenants is v.tenants and w.policy is v.policy and w.limits is v.limits
    assert verifier_for_region(v, "eu") is v


def test_watermark_file_rejects_foreign_content():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("/x")
    fs.write_atomic("/x/w.json", json.dumps({"format": "other"}).encode())
    from flk.impl.replication.stream import CrrError

    with pytest.raises(CrrError):
        WatermarkFile("/x/w.json", fs).load()


def test_replication_over_s3_moto_server(moto_url):
    from flk.impl.storage.objectstore import S3ObjectStore

    objects = S3ObjectStore("flk-crr-e2e", prefix="crr", endpoint_url=moto_url, create_bucket=True,
                            aws_access_key_id="test", aws_secret_access_key="test")
    eu, us = Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])
    (raw0, t0, pid, _), (raw1, _, _, _) = variants(1, 2)
    eu.submit(raw0, t0, NOW + 2)
    us.submit(raw1, t0, NOW + 1)
    for r in (eu, us):
        r.shipper.step(NOW + 3)
    for r in (eu, us):
        r.reader.step(NOW + 4)
    assert objects.list("eu/") == ["eu/seg-00000000000000000000.log", "eu/seg-00000000000000000000.manifest.json"]
    a, b = eu.reconciler.authoritative(t0, pid), us.reconciler.authoritative(t0, pid)
    assert a == b and a.authoritative.region == "us" and a.conflict
    assert eu.local()[(t0, pid)].region == "eu" and us.local()[(t0, pid)].region == "us"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["eu", "us"])), min_size=1, max_size=14))
def test_inv_idempotent_replay_batched_replay_equals_one_at_a_time(picks):
    """apply_many (one store transaction) leaves the same outcomes and reports the
    same candidates and answers as apply, record by record (duplicates, conflicts,
    bad signatures, bad JSON in the batch)."""
    from flk.impl.dedup import open_store
    from flk.impl.storage.inbox import InboxRecord

    pool = [(raw, t) for raw, t, _, _ in variants(2, 3)]
    forged = dict(sign(make_pcs(seed=5), HMAC_A), sig="AAAA" + sign(make_pcs(seed=5), HMAC_A)["sig"][4:])
    pool += [(body(forged), "ta"), (b'{"x":', "ta")]
    recs = [InboxRecord(pool[i][1], NOW + k, region, pool[i][0]) for k, (i, region) in enumerate(picks)]
    seen_a, seen_b = [], []
    a = ReplayApplier(Verifier(registry(), region="xx"), open_store("memory"),
                      lambda *x: seen_a.append(x))
    b = ReplayApplier(Verifier(registry(), region="xx"), open_store("memory"),
                      lambda *x: seen_b.append(x))
    now = NOW + 100
    ra = a.apply_many(recs, now)
    rb = [b.apply(r, now) for r in recs]
    assert [(x.response.status, x.response.body, x.stored, x.candidate, x.winner) for x in ra] == \
           [(x.response.status, x.response.body, x.stored, x.candidate, x.winner) for x in rb]
    assert seen_a == seen_b
    snap = lambda s: sorted(s.scan(None, 1000, now)[0], key=lambda e: (e[0], e[1]))  # noqa: E731
    assert snap(a.store) == snap(b.store)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["eu", "us"])), min_size=1, max_size=14),
       split=st.integers(0, 14))
def test_replay_batch_equals_apply_many_and_a_memo_changes_nothing(picks, split):
    """replay_batch (no answers) leaves the same store and reports the same outcomes to the
    reconciler as apply_many (one observer call each, or one observe_batch call per batch);
    three appliers sharing one ReplayMemo end exactly as an applier without one, whether
    they read the records in the same chunks (then each record is verified once) or each
    in its own."""
    from flk.impl.dedup import open_store
    from flk.impl.replication.applying import ReplayMemo
    from flk.impl.storage.inbox import InboxRecord

    pool = [(raw, t) for raw, t, _, _ in variants(2, 3)]
    forged = dict(sign(make_pcs(seed=5), HMAC_A), sig="AAAA" + sign(make_pcs(seed=5), HMAC_A)["sig"][4:])
    pool += [(body(forged), "ta"), (b'{"x":', "ta")]
    recs = [InboxRecord(pool[i][1], NOW + k, region, pool[i][0]) for k, (i, region) in enumerate(picks)]
    now = NOW + 100
    snap = lambda s: sorted(s.scan(None, 1000, now)[0], key=lambda e: (e[0], e[1]))  # noqa: E731

    tenants = registry()  # one configuration: a memo is shared only between equal ones

    def applier(seen, memo=None):
        return ReplayApplier(Verifier(tenants, region="xx"), open_store("memory"), lambda *x: seen.append(x),
                             memo=memo)

    ref_seen: list = []
    ref = applier(ref_seen)
    ref.apply_many(recs, now)
    for same_chunks in (True, False):
        memo = ReplayMemo(uses=3)
        for k in range(3):
            seen: list = []
            batched: list = []
            a = applier(seen, memo)
            if k == 1:  # the reports in one call per batch: the same calls in the same order
                a.observe_batch = lambda reports, at, out=batched: out.extend((*r, at) for r in reports)
            cut = (split + (0 if same_chunks else k)) % (len(recs) + 1)
            for chunk in (recs[:cut], recs[cut:]):
                if chunk:
                    a.replay_batch(chunk, now)
            assert (batched if k == 1 else seen) == ref_seen and snap(a.store) == snap(ref.store)
            assert (a.applied, a.stored, a.home_rejected) == (ref.applied, ref.stored, ref.home_rejected)
        assert memo.misses + memo.hits == 3 * len(recs)
        if same_chunks:  # the same record objects in the same chunks: computed once, taken twice
            assert memo.misses == len(recs) and memo.hits == 2 * len(recs) and not memo._runs


def _shipped(region, now):
    """The region's inbox records as a peer reads them: shipped, verified, each with its home answer."""
    from flk.impl.replication.stream import verify_segment

    region.shipper.step(now)
    keys = region.objects.list(region.name + "/")
    recs = []
    for seg_key in [k for k in keys if k.endswith(".log")]:
        man_key = seg_key[: -len(".log")] + ".manifest.json"
        recs += verify_segment(region.name, seg_key.split("/")[-1], region.objects.get(man_key),
                               region.objects.get(seg_key))[1]
    return recs


@pytest.mark.parametrize("batch", [False, True])
def test_a_record_its_home_answered_409_is_replayed_as_that_rejection_not_as_a_new_write(batch):
    """eu stores payload 0 of a key, then answers 409 to payload 1 of the same key; us
    replays eu's inbox (both records) with the home answers eu shipped beside them:
    payload 1 is not stored and the reconciler flags no conflict. Without the home's
    answer (a WAL written before answer notes) the same replay flags one (the rejected
    payload replayed as if new)."""
    from flk.impl.dedup import open_store
    from flk.impl.replication.reconcile import Reconciler
    from flk.impl.storage.inbox import with_home
    from flk.impl.storage.walformat import A_CONFLICT, A_STORED

    (raw0, tenant, pid, _), (raw1, _, _, _) = variants(1, 2)
    _, eu, _ = two()
    assert eu.submit(raw0, tenant, NOW).status in (200, 202)
    assert eu.submit(raw1, tenant, NOW + 1).status == 409
    shipped = _shipped(eu, NOW + 2)
    assert [(r.body, r.home.answer) for r in shipped] == [(raw0, A_STORED), (raw1, A_CONFLICT)]
    flagged = {}
    for asks_home in (True, False):
        recs = shipped if asks_home else [with_home(r, None, r.index) for r in shipped]
        store, reconciler = open_store("memory"), Reconciler("us")
        applier = ReplayApplier(Verifier(registry(), region="us"), store, reconciler.observe)
        results = applier.apply_many(recs, NOW + 5) if batch else [applier.apply(r, NOW + 5) for r in recs]
        flagged[asks_home] = reconciler.metrics()["conflicts"]
        if asks_home:
            assert [r.home_rejected for r in results] == [False, True]
            assert results[1].response.status == 409 and not results[1].stored
            assert results[1].candidate is None and applier.home_rejected == 1
            held = store.get(tenant, pid, NOW + 5)
            assert held == eu.store.get(tenant, pid, NOW + 5), "us holds what eu acked"
            assert reconciler.authoritative(tenant, pid).authoritative == held
    assert flagged == {True: 0, False: 1}


def test_a_conflict_both_homes_acked_is_still_flagged_when_homes_are_asked():
    """eu and us each accept their own payload of one key (a split brain): the home
    answers shipped with the records say each was stored at home, so both are writes
    and each side's reconciler flags the conflict."""
    from flk.impl.replication.reconcile import Reconciler
    from flk.impl.storage.walformat import A_STORED

    (raw0, tenant, pid, _), (raw1, _, _, _) = variants(1, 2)
    _, eu, us = two()
    assert eu.submit(raw0, tenant, NOW).status in (200, 202)
    assert us.submit(raw1, tenant, NOW + 1).status in (200, 202)
    for region, other, source in (("us", us, eu), ("eu", eu, us)):
        [rec] = _shipped(source, NOW + 2)
        assert rec.home.answer == A_STORED
        reconciler = Reconciler(region)
        reconciler.observe(tenant, pid, other.store.get(tenant, pid, NOW + 5), NOW + 5)
        applier = ReplayApplier(Verifier(registry(), region=region), other.store, reconciler.observe)
        result = applier.apply(rec, NOW + 5)
        assert not result.home_rejected and result.response.status == 409  # the local store keeps its own
        assert reconciler.metrics()["conflicts"] == 1


def test_replay_memo_shares_a_segment_verification_only_for_the_same_bytes_and_first_index():
    """ReplayMemo.verified answers as verify_segment: the very same manifest and segment objects
    reuse the result (with no expected first index or the segment's own), anything else --
    other bytes (a flipped bit), another expected first index (a gap) -- is verified again."""
    from flk.impl.replication.applying import ReplayMemo
    from flk.impl.replication.stream import verify_segment

    objects, eu, _ = two()
    for i, (raw, t, _, _) in enumerate(variants(3, 1)):
        eu.submit(raw, t, NOW + i)
    eu.shipper.step(NOW + 5)
    seg_key, man_key = objects.list("eu/")
    data, mraw = objects.get(seg_key), objects.get(man_key)
    name = seg_key.split("/")[-1]
    memo = ReplayMemo(uses=3, segment_uses=3)
    first = memo.verified("eu", name, mraw, data, None)
    assert first == verify_segment("eu", name, mraw, data)
    assert memo.verified("eu", name, mraw, data, 0) is first  # its own first index: shared
    with pytest.raises(SegmentRejected, match="gap"):
        memo.verified("eu", name, mraw, data, 7)
    flipped = bytearray(data)
    flipped[20] ^= 8
    with pytest.raises(SegmentRejected):
        memo.verified("eu", name, mraw, bytes(flipped), None)
    assert memo.verified("eu", name, mraw, data, None) is first  # the third use: dropped after it
    assert not memo._segments
