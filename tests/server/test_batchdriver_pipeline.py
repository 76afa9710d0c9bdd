"""The pipelined submit batch driver: batch N+1 is appended while batch N's fsync runs,
yet nothing is looked up, stored or answered before the sync covering its record
(INV-WAL-FIRST), the earlier record of a key wins across two batches in flight
(INV-FWW), and the seal lock waits for the batches in flight (a sealed segment's
manifest has the answers of all its records)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

from flk.impl.agent import factory
from flk.impl.dedup.memory import MemoryStore
from flk.impl.server.batchdriver import BatchDriver, GuardedStore, LoggedWal
from flk.impl.storage.inbox import decode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import decode_answers
from flk.impl.verifier.admission import CircuitBreaker
from flk.impl.verifier.metrics import Metrics
from flk.impl.verifier.pipeline import Verifier

from .test_batchdriver import SECRET, FakeServer, body, registry


class SpyStore(MemoryStore):
    """Records, at every ``get_many`` / ``put_many_if_absent``, the WAL's durable index."""

    def __init__(self, wal_of) -> None:
        super().__init__()
        self.wal_of = wal_of
        self.reads: list[tuple[list, int]] = []
        self.writes: list[tuple[list, int]] = []

    def get_many(self, keys, now):
        self.reads.append((list(keys), self.wal_of().durable_index))
        return super().get_many(keys, now)

    def put_many_if_absent(self, items, now, ttl_s):
        self.writes.append(([(t, p) for t, p, _ in items], self.wal_of().durable_index))
        return super().put_many_if_absent(items, now, ttl_s)


def make(tmp_path, delay_s=0.001, max_batch=256, **wal_kw):
    srv = FakeServer(SegmentedLog(str(tmp_path / "wal"), **wal_kw))
    store = SpyStore(lambda: srv.wal)
    guarded = GuardedStore(store, CircuitBreaker())
    driver = BatchDriver(Verifier(registry(), region="r1"), LoggedWal(lambda: srv.wal, srv.log.error), guarded,
                         Metrics(), max_delay_s=delay_s, max_batch=max_batch, depth=2)
    return driver, srv, store


class HeldSync:
    """``wal.sync`` replaced: the first sync is held until ``appended_beyond`` records were
    appended (a second batch is appended while the first batch's fsync runs -- forced,
    not hoped for); later syncs are slowed by ``slow_s``. Counts appends seen mid-sync."""

    def __init__(self, wal, appended_beyond: int, slow_s: float = 0.01) -> None:
        self.wal, self.real = wal, wal.sync
        self.appended_beyond, self.slow_s = appended_beyond, slow_s
        self.entered = threading.Event()
        self.syncing = False
        self.appends_during_sync = 0
        self.first = True
        real_append = wal.append_framed  # every append ends here (append_many frames, then calls it)

        def append_framed(data, count, roll=True):
            if self.syncing:
                self.appends_during_sync += 1
            return real_append(data, count, roll)

        wal.append_framed = append_framed
        wal.sync = self.sync

    def sync(self):
        self.syncing = True
        try:
            if self.first:
                self.first = False
                self.entered.set()
                deadline = time.monotonic() + 10
                while self.wal.next_index < self.appended_beyond and time.monotonic() < deadline:
                    time.sleep(0.001)
            else:
                time.sleep(self.slow_s)
            return self.real()
        finally:
            self.syncing = False


def _indexes(wal) -> dict[bytes, int]:
    """Each body's first WAL index."""
    out: dict[bytes, int] = {}
    for i, p in wal.records(0):
        out.setdefault(decode_inbox_record(p).body, i)
    return out


def _other_payload(i: int) -> bytes:
    """``body(i)``'s PCS (same root, epoch, shard: same pcs_id) with other signals, signed."""
    root = hashlib.sha256(f"root-{i}".encode()).hexdigest()
    doc = factory.synthetic_pcs(root, "shard-001", 1, scales=(2, 4, 8, 16, 32), counts=(3, 5, 9, 17, 31),
                                coh=0.61, r=0.5)
    return json.dumps(factory.sign(doc, SECRET, "hmac")).encode()


def _pcs_id(b: bytes) -> str:
    return json.loads(b)["pcs_id"]


def test_inv_wal_first_pipelined_answers_and_dedup_only_after_the_sync_covering_the_record(tmp_path) -> None:
    """Requests arrive in waves while every sync is slowed (the first one held until a later
    batch appended): batches overlap their fsyncs -- yet every answer, every dedup read and
    every dedup write of a request comes after its own record is durable (INV-WAL-FIRST)."""
    driver, srv, store = make(tmp_path, delay_s=0.001)
    held = HeldSync(srv.wal, appended_beyond=4, slow_s=0.015)
    bodies = [body(i) for i in range(40)]
    seen: dict[bytes, int] = {}

    async def main():
        futs = []
        for k in range(0, len(bodies), 4):
            for b in bodies[k:k + 4]:
                f = driver.submit(b, "ta")
                f.add_done_callback(lambda _f, b=b: seen.__setitem__(b, srv.wal.durable_index))
                futs.append(f)
            await asyncio.sleep(0.004)
        return await asyncio.gather(*futs)

    try:
        got = asyncio.run(main())
    finally:
        driver.close()
    assert {r.status for r in got} == {200} and len(seen) == len(bodies)
    index = _indexes(srv.wal)
    assert all(seen[b] > index[b] for b in bodies), "an answer came before the sync covering its record"
    by_id = {_pcs_id(b): index[b] for b in bodies}
    assert store.writes  # (no reads: without hooks the core skips step 5, put-if-absent decides)
    for calls in (store.reads, store.writes):
        for keys, durable in calls:
            assert all(durable > by_id[pcs_id] for _, pcs_id in keys), "a dedup call before the record was durable"
    # the pipeline really overlapped: records were appended while a sync ran, and answers
    # arrived while later records were still not durable (the window the test widens)
    assert held.appends_during_sync >= 1
    assert any(seen[b] < srv.wal.next_index for b in bodies)
    assert driver.syncs <= driver.batches


def _two_batches_in_flight_with_one_key(tmp_path, driver_cls=BatchDriver):
    """Batch 1 holds PCS X; its sync is held until batch 2 -- the same X re-sent and X with
    another payload (same key) -- was appended behind it. Returns the three answers, the
    store, the WAL, the driver and the held sync."""
    srv = FakeServer(SegmentedLog(str(tmp_path / "wal")))
    store = SpyStore(lambda: srv.wal)
    driver = driver_cls(Verifier(registry(), region="r1"), LoggedWal(lambda: srv.wal, srv.log.error),
                        GuardedStore(store, CircuitBreaker()), Metrics(), max_delay_s=0.005, depth=2)  # f2, f3: one batch
    held = HeldSync(srv.wal, appended_beyond=3)
    first = body(7)
    other = _other_payload(7)  # same pcs_id, another signed payload
    assert _pcs_id(first) == _pcs_id(other) and first != other

    async def main():
        f1 = driver.submit(first, "ta")
        while not held.entered.is_set():  # batch 1 is in its fsync
            await asyncio.sleep(0.001)
        driver.formation.expect = 2  # as after a batch of two: f2 and f3 form one batch
        f2 = driver.submit(first, "ta")
        f3 = driver.submit(other, "ta")
        return await asyncio.gather(f1, f2, f3)

    try:
        answers = asyncio.run(main())
    finally:
        driver.close()
    return answers, store, srv.wal, driver, held, (first, other)


def _earlier_record_won(answers, wal, bodies) -> bool:
    r1, r2, r3 = answers
    first, other = bodies
    index = _indexes(wal)
    return (index[first] == 0 and index[other] == 2
            and r1.status == 200 and r1.header("Idempotent-Replayed") is None
            and r2.status == 200 and r2.header("Idempotent-Replayed") == "true" and r2.body == r1.body
            and r3.status == 409)


def test_inv_fww_two_batches_in_flight_with_one_key_the_earlier_record_wins(tmp_path) -> None:
    """Both batches are in flight at once (batch 2 appended during batch 1's fsync); batch
    1's record is first in the WAL and is what is stored; batch 2 answers the replay and
    the conflict (INV-FWW, as a replay of the WAL would decide)."""
    answers, store, wal, driver, held, bodies = _two_batches_in_flight_with_one_key(tmp_path)
    assert held.appends_during_sync == 1  # batch 2 appended while batch 1 synced: both in flight
    assert driver.batches == 2
    assert _earlier_record_won(answers, wal, bodies), [(r.status, r.header("Idempotent-Replayed")) for r in answers]
    # batch 2 wrote the key only after batch 1 had stored it (one batch thread, WAL order; without
    # hooks the core skips step 5: put-if-absent answers the replay and the conflict)
    (k1, _), (k2, _) = store.writes
    assert k1 == [("ta", _pcs_id(bodies[0]))] and len(k2) == 2


class NewestFirst(BatchDriver):
    """Planted bug: synced batches are finished newest first (not in WAL order)."""

    def _synced(self, count, error, took=0.0):
        from flk.impl.verifier.core import finish_batch

        for _ in range(count):
            job = self._appended.pop()
            self._answer(job.batch, job.loop, finish_batch(job.core, job.first, self.store, self.wal, error is None),
                         None)


def test_quality_a_driver_that_finishes_batches_out_of_wal_order_is_caught(tmp_path) -> None:
    answers, _, wal, _, held, bodies = _two_batches_in_flight_with_one_key(tmp_path, NewestFirst)
    assert held.appends_during_sync == 1
    assert not _earlier_record_won(answers, wal, bodies)


def test_the_seal_lock_waits_for_batches_in_flight_and_holds_new_ones_back(tmp_path) -> None:
    """``driver.lock`` (the shipper's seal lock) is granted only when no batch is between its
    append and its answers; while it is held a new batch does not append."""
    driver, srv, _ = make(tmp_path, delay_s=0.0)
    held = HeldSync(srv.wal, appended_beyond=2)
    got_lock = threading.Event()
    order: list[str] = []

    def sealer():
        held.entered.wait(10)
        with driver.lock:
            order.append(f"sealed with {srv.wal.next_index} records, durable {srv.wal.durable_index}")
            got_lock.set()
            time.sleep(0.05)
            order.append(f"still {srv.wal.next_index} records")

    async def main():
        t = threading.Thread(target=sealer)
        t.start()
        f1 = driver.submit(body(1), "ta")
        await asyncio.sleep(0.02)
        f2 = driver.submit(body(2), "ta")  # the sealer wants the lock: this batch waits
        r = await asyncio.gather(f1, f2)
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        return r

    try:
        r1, r2 = asyncio.run(main())
    finally:
        driver.close()
    assert r1.status == 200 and r2.status == 200 and got_lock.is_set()
    assert order == ["sealed with 1 records, durable 1", "still 1 records"]


def test_segments_roll_only_between_batches_so_every_manifest_has_all_its_answers(tmp_path) -> None:
    """Small segments under a pipelined load: every sealed segment's manifest carries the
    home answer of every record it holds. Batches of at most 6 records (about 3 KB) into
    4 KB segments: a segment holds at most about 7 KB, so the 60 records (about 31 KB) fill
    at least four segments however the scheduler groups them (a slow machine once made
    one batch of 51 and only two segments)."""
    driver, srv, _ = make(tmp_path, delay_s=0.001, max_batch=6, segment_bytes=4096)
    HeldSync(srv.wal, appended_beyond=3, slow_s=0.003)
    bodies = [body(i) for i in range(60)]

    async def main():
        futs = []
        for k in range(0, len(bodies), 3):
            futs += [driver.submit(b, "ta") for b in bodies[k:k + 3]]
            await asyncio.sleep(0.002)
        return await asyncio.gather(*futs)

    try:
        got = asyncio.run(main())
    finally:
        driver.close()
    assert {r.status for r in got} == {200}
    srv.wal.seal()
    sealed = srv.wal.sealed_segments()
    assert len(sealed) >= 3
    for seg in sealed:
        manifest = json.loads(srv.wal.fs.read(str(tmp_path / "wal" / seg.name.replace(".log", ".manifest.json"))))
        answers = decode_answers(manifest)
        assert answers is not None and len(answers) == seg.count, seg.name


def test_depth_one_runs_one_batch_at_a_time(tmp_path) -> None:
    """``depth=1`` is the unpipelined driver: no append while a sync runs."""
    srv = FakeServer(SegmentedLog(str(tmp_path / "wal")))
    driver = BatchDriver(Verifier(registry(), region="r1"), LoggedWal(lambda: srv.wal, srv.log.error),
                         GuardedStore(MemoryStore(), CircuitBreaker()), Metrics(), max_delay_s=0.0, depth=1)
    held = HeldSync(srv.wal, appended_beyond=1, slow_s=0.005)

    async def main():
        futs = []
        for i in range(12):
            futs.append(driver.submit(body(i), "ta"))
            await asyncio.sleep(0.001)
        return await asyncio.gather(*futs)

    try:
        got = asyncio.run(main())
    finally:
        driver.close()
    assert {r.status for r in got} == {200}
    assert held.appends_during_sync == 0 and driver.syncs == driver.batches >= 2
