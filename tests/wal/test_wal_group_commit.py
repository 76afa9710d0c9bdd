"""GroupCommitter: waiters are released only after the fsync covering their record."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.storage.groupcommitter import GroupCommitter
from flk.impl.storage.wal import SegmentedLog, WalError
from flk.impl.storage.walformat import scan_segment, segment_name
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from wal.helpers import CountingFileSystem

SEG = "w/" + segment_name(0)


def durable_records(fs: CrashableMemoryFileSystem) -> int:
    return scan_segment(fs.durable_view().get(SEG, b""), is_last=True).count


def test_inv_wal_first_waiter_blocks_while_its_fsync_is_held():
    fs = CountingFileSystem()
    log = SegmentedLog("w", fs=fs)
    gc = GroupCommitter(log, max_delay_s=0)
    fs.gate = threading.Event()
    done = threading.Event()

    def client():
        gc.append_and_wait(b"request")
        done.set()

    t = threading.Thread(target=client)
    t.start()
    assert fs.blocked.wait(5), "the commit thread never fsynced"
    assert not done.wait(0.3), "waiter released before its fsync returned"
    assert durable_records(fs.inner) == 0
    fs.gate.set()
    assert done.wait(5)
    t.join()
    assert durable_records(fs.inner) == 1
    gc.close()
    log.close()


@settings(max_examples=15, deadline=None)
@given(threads=st.integers(1, 6), per_thread=st.integers(1, 25),
       delay=st.sampled_from([0.0, 0.0005, 0.003]), batch=st.sampled_from([1, 4, 1000]))
def test_inv_wal_first_every_released_record_was_already_durable(threads, per_thread, delay, batch):
    fs = CountingFileSystem()
    fs.delay = 0.001
    log = SegmentedLog("w", fs=fs, segment_bytes=1 << 30)
    gc = GroupCommitter(log, max_delay_s=delay, max_batch=batch)
    violations: list[int] = []

    def client(k):
        for j in range(per_thread):
            idx = gc.append(b"t%d-%d" % (k, j))
            gc.wait(idx, timeout=10)
            # at release time the record must already be in the durable image
            if durable_records(fs.inner) <= idx:
                violations.append(idx)

    ts = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    gc.close()
    assert violations == []
    total = threads * per_thread
    assert durable_records(fs.inner) == total
    assert 1 <= fs.fsyncs <= total + 1  # never more than one fsync per record (+ open)
    log.close()


def test_group_commit_batches_many_appends_into_few_fsyncs():
    fs = CountingFileSystem()
    log = SegmentedLog("w", fs=fs, segment_bytes=1 << 30)
    gc = GroupCommitter(log, max_delay_s=0.5, max_batch=100_000)  # generous: loaded CI machines
    before = fs.fsyncs
    last = 0
    for i in range(2000):
        last = gc.append(b"%d" % i)
    gc.wait(last, timeout=10)
    assert fs.fsyncs - before <= 5
    assert durable_records(fs.inner) == 2000
    gc.close()
    log.close()


def test_max_batch_triggers_a_sync_before_the_delay():
    fs = CountingFileSystem()
    log = SegmentedLog("w", fs=fs)
    gc = GroupCommitter(log, max_delay_s=30.0, max_batch=4)
    first = gc.append_many([b"a", b"b", b"c", b"d"])
    gc.wait(first + 3, timeout=10)  # would time out if it waited the 30 s delay
    assert log.is_durable(first + 3)
    gc.close()
    log.close()


def test_waiters_on_many_threads_share_fsyncs():
    fs = CountingFileSystem()
    log = SegmentedLog("w", fs=fs, segment_bytes=1 << 30)
    gc = GroupCommitter(log, max_delay_s=0.001)
    idxs: list[int] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(30):
            idx = gc.append_and_wait(b"c%d-%d" % (k, i), timeout=30)
            with lock:
                idxs.append(idx)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(idxs) == list(range(300))
    first = gc.append_many([b"m1", b"m2", b"m3"])
    gc.wait(first + 2, timeout=30)
    assert first == 300 and log.is_durable(302)
    assert durable_records(fs.inner) == 303
    assert fs.fsyncs < 300
    gc.close()
    log.close()


def test_a_failed_fsync_fails_every_waiter_and_nothing_is_claimed_durable():
    fs = CrashableMemoryFileSystem()
    log = SegmentedLog("w", fs=fs)
    gc = GroupCommitter(log, max_delay_s=0)
    fs.fail_fsyncs(1)
    with pytest.raises(WalError):
        gc.append_and_wait(b"x", timeout=10)
    assert not log.is_durable(0)

    with pytest.raises(WalError):
        gc.wait(0, timeout=10)  # a later waiter of the failed record fails too
    got: list = []
    gc.on_durable(0, got.append)
    assert len(got) == 1 and isinstance(got[0], WalError)
    gc.close()


def test_bad_parameters_are_rejected():
    log = SegmentedLog("w", fs=CrashableMemoryFileSystem())
    with pytest.raises(WalError):
        GroupCommitter(log, max_delay_s=-1)
    with pytest.raises(WalError):
        GroupCommitter(log, max_batch=0)


def test_close_syncs_and_releases_waiters_then_refuses_new_waits():
    fs = CountingFileSystem()
    log = SegmentedLog("w", fs=fs)
    gc = GroupCommitter(log, max_delay_s=30.0, max_batch=10_000)  # only close() will sync
    results: list = []

    def client():
        try:
            gc.append_and_wait(b"late", timeout=20)
            results.append("ok")
        except Exception as exc:  # noqa: BLE001
            results.append(exc)

    t = threading.Thread(target=client)
    t.start()
    while log.next_index == 0:
        threading.Event().wait(0.01)
    gc.close()
    t.join(10)
    assert results == ["ok"] and log.is_durable(0)
    idx = gc.append(b"after close")
    with pytest.raises(WalError):
        gc.wait(idx, timeout=5)
    log.close()


def test_inv_wal_first_a_callback_for_a_record_not_yet_appended_waits_for_its_append_and_fsync():
    log = SegmentedLog("w", fs=CrashableMemoryFileSystem())
    released = threading.Event()
    outcome: list = []
    with GroupCommitter(log, max_delay_s=0) as gc:
        gc.append_and_wait(b"first")  # something synced before the early registration
        gc.on_durable(1, lambda err: (outcome.append((err, log.is_durable(1))), released.set()))
        assert not released.wait(0.05)  # record 1 does not exist yet: nothing to release
        gc.append(b"second")
        assert released.wait(10)
    assert outcome == [(None, True)]
