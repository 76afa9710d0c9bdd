"""SegmentedLog on the real disk and on the crashable memory disk."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flk.impl.storage.fs import OsFileSystem
from flk.impl.storage.inbox import InboxRecord, decode_inbox_record, encode_inbox_record
from flk.impl.storage.wal import SegmentedLog, WalCorruption, WalError
from flk.impl.storage.walformat import compact_name, encode_frame, manifest_name, segment_name
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


def payloads_of(log: SegmentedLog) -> list[bytes]:
    return [p for _, p in log.records()]


def test_append_sync_reopen_round_trip_on_the_real_disk(tmp_path):
    d = str(tmp_path / "wal")
    with SegmentedLog(d, segment_bytes=200) as log:
        idx = [log.append(b"rec-%03d" % i) for i in range(40)]
        assert idx == list(range(40))
        assert not log.is_durable(39)
        assert log.sync() == 40 and log.is_durable(39)
        assert len(log.sealed_segments()) >= 2
    with SegmentedLog(d, segment_bytes=200) as log:
        assert payloads_of(log) == [b"rec-%03d" % i for i in range(40)]
        assert log.recovery["torn_tail"] is None
        assert log.append(b"next") == 40
        assert list(log.records(from_index=38)) == [(38, b"rec-038"), (39, b"rec-039"), (40, b"next")]
    sealed = [n for n in os.listdir(d) if n.endswith(".manifest.json")]
    assert sealed
    for n in sealed:  # sealed segments are read-only
        log_name = n.replace(".manifest.json", ".log")
        assert not os.stat(os.path.join(d, log_name)).st_mode & 0o222


def test_torn_tail_on_the_real_disk_is_truncated_and_reported(tmp_path):
    d = str(tmp_path / "wal")
    with SegmentedLog(d) as log:
        for i in range(5):
            log.append(b"x" * i)
    seg = os.path.join(d, segment_name(0))
    with open(seg, "ab") as f:
        f.write(encode_frame(b"half-written")[:9])
    with SegmentedLog(d) as log:
        assert log.recovery["torn_tail"]["dropped_bytes"] == 9
        assert payloads_of(log) == [b"x" * i for i in range(5)]
        assert log.append(b"after") == 5
    with SegmentedLog(d) as log:
        assert payloads_of(log)[-1] == b"after"


def test_bit_flip_in_the_middle_raises_with_segment_and_offset():
    fs = CrashableMemoryFileSystem()
    with SegmentedLog("w", fs=fs) as log:
        for i in range(10):
            log.append(b"payload-%d" % i)
    frame = len(encode_frame(b"payload-0"))
    fs.flip_bit("w/" + segment_name(0), 3 * frame + 14, bit=3)
    with pytest.raises(WalCorruption) as ei:
        SegmentedLog("w", fs=fs)
    assert ei.value.segment == segment_name(0) and ei.value.offset == 3 * frame
    assert "payload checksum" in ei.value.reason


def test_damage_in_a_non_last_segment_is_corruption_not_a_torn_tail():
    fs = CrashableMemoryFileSystem()
    with SegmentedLog("w", fs=fs, segment_bytes=100) as log:
        for i in range(20):
            log.append(b"%05d" % i)
    first = "w/" + segment_name(0)
    data = fs.read(first)
    fs.truncate(first, len(data) - 3)
    with pytest.raises(WalCorruption) as ei:
        SegmentedLog("w", fs=fs, segment_bytes=100)
    assert ei.value.segment == segment_name(0)


def test_manifest_detects_tampering_with_recomputed_crcs():
    fs = CrashableMemoryFileSystem()
    with SegmentedLog("w", fs=fs) as log:
        for i in range(6):
            log.append(b"amount=%d" % i)
        log.seal()
        log.append(b"tail")
    # rewrite record 2 with a *valid* frame (CRCs recomputed): only the manifest can tell
    path = "w/" + segment_name(0)
    payloads = [b"amount=%d" % i for i in range(6)]
    payloads[2] = b"amount=9"
    fs.remove(path)  # the file is read-only; a tamperer replaces it
    h = fs.open_append(path)
    h.write(b"".join(encode_frame(p) for p in payloads))
    h.fsync()
    fs.fsync_dir("w")
    with pytest.raises(WalCorruption) as ei:
        SegmentedLog("w", fs=fs)
    assert ei.value.segment == segment_name(0) and "sha256" in ei.value.reason


def test_deleted_middle_segment_is_a_gap():
    fs = CrashableMemoryFileSystem()
    with SegmentedLog("w", fs=fs, segment_bytes=60) as log:
        for i in range(30):
            log.append(b"%04d" % i)
        names = [s.name for s in log.segments()]
    assert len(names) >= 3
    fs.remove("w/" + names[1])
    with pytest.raises(WalCorruption) as ei:
        SegmentedLog("w", fs=fs, segment_bytes=60)
    assert "gap" in ei.value.reason


def test_retention_drops_whole_sealed_segments_only():
    fs = CrashableMemoryFileSystem()
    log = SegmentedLog("w", fs=fs, segment_bytes=60)
    for i in range(30):
        log.append(b"%04d" % i)
    segs = log.segments()
    cut = segs[2].first_index + 1  # inside the third segment
    dropped = log.drop_sealed_before(cut)
    assert dropped == [segs[0].name, segs[1].name]
    assert log.first_index == segs[2].first_index
    assert [i for i, _ in log.records()][0] == segs[2].first_index
    log.close()
    fs.crash()
    log = SegmentedLog("w", fs=fs, segment_bytes=60)
    assert [i for i, _ in log.records()] == list(range(segs[2].first_index, 30))
    assert not any(manifest_name(s.name) in fs.listdir("w") for s in segs[:2])


def test_compact_prefix_replaces_records_and_keeps_indexes_contiguous():
    fs = CrashableMemoryFileSystem()
    log = SegmentedLog("w", fs=fs)
    for i in range(10):
        log.append(b"old%d" % i)
    log.seal()
    log.append(b"new10")
    seg = log.compact_prefix(10, [b"keep7", b"keep9"])
    assert (seg.name, seg.first_index, seg.count) == (compact_name(10), 8, 2)
    assert list(log.records()) == [(8, b"keep7"), (9, b"keep9"), (10, b"new10")]
    log.close()
    fs.crash()
    log = SegmentedLog("w", fs=fs)
    assert list(log.records()) == [(8, b"keep7"), (9, b"keep9"), (10, b"new10")]
    with pytest.raises(WalError):
        log.compact_prefix(11, [])  # 11 is inside the active segment


def test_a_failed_fsync_poisons_the_log_until_reopen():
    fs = CrashableMemoryFileSystem()
    log = SegmentedLog("w", fs=fs)
    log.append(b"a")
    log.sync()
    log.append(b"b")
    fs.fail_fsyncs(1)
    with pytest.raises(WalError):
        log.sync()
    assert log.failed is not None
    with pytest.raises(WalError):
        log.append(b"c")
    fs.crash()
    log = SegmentedLog("w", fs=fs)
    assert payloads_of(log) == [b"a"]


def test_not_a_directory_is_an_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(WalError):
        SegmentedLog(str(f), fs=OsFileSystem())


class CrashMachine(RuleBasedStateMachine):
    """INV-WAL-FIRST at the storage level: after a crash at any point the log
    holds exactly the fsynced prefix, plus possibly later complete records (a
    prefix of what was appended after it), never a corrupt or reordered one."""

    def __init__(self) -> None:
        super().__init__()
        self.fs = CrashableMemoryFileSystem()
        self.seg_bytes = 120
        self.log = SegmentedLog("w", fs=self.fs, segment_bytes=self.seg_bytes)
        self.appended: list[bytes] = []  # everything appended, in index order
        self.durable = 0  # how many of them a sync has confirmed
        self.counter = 0

    @rule(size=st.integers(0, 40))
    def append(self, size):
        p = (b"%d:" % self.counter) + bytes([self.counter % 251]) * size
        self.counter += 1
        assert self.log.append(p) == len(self.appended)
        self.appended.append(p)

    @rule()
    def sync(self):
        self.durable = self.log.sync()
        assert self.durable == len(self.appended)

    @rule()
    def seal(self):
        self.log.seal()
        self.durable = len(self.appended)

    @rule(seed=st.integers(0, 2**32 - 1), torn=st.booleans(), flush=st.booleans(), partial=st.booleans())
    def crash_and_recover(self, seed, torn, flush, partial):
        if flush:  # push buffered bytes to the "page cache" so the crash can tear them
            with self.log._lock:
                self.log._flush_locked()
        self.fs.crash(rng=random.Random(seed), torn_writes=torn, partial_dir_ops=partial)
        self.log = SegmentedLog("w", fs=self.fs, segment_bytes=self.seg_bytes)
        got = payloads_of(self.log)
        assert len(got) >= self.durable, "lost a synced record"
        assert got == self.appended[: len(got)], "recovered records are not a prefix of the appends"
        self.appended = got
        self.durable = len(got)
        assert self.log.next_index == len(got)

    @precondition(lambda self: len(self.appended) > 0)
    @rule()
    def reopen_cleanly(self):
        self.log.close()
        self.log = SegmentedLog("w", fs=self.fs, segment_bytes=self.seg_bytes)
        assert payloads_of(self.log) == self.appended
        self.durable = len(self.appended)

    @invariant()
    def durable_index_is_honest(self):
        assert self.log.durable_index >= self.durable

    def teardown(self):
        self.log.close()


CrashMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_inv_wal_first_crash_keeps_exactly_the_fsynced_prefix = CrashMachine.TestCase


class _Cut(Exception):
    pass


class _CutHandle:
    def __init__(self, fs, inner):
        self._fs, self._inner = fs, inner

    def write(self, data):
        self._fs.tick()
        self._inner.write(data)

    def fsync(self):
        self._fs.tick()
        self._inner.fsync()

    def close(self):
        self._inner.close()


class _CutFS:
    """Power cut at the ``cut``-th mutating disk operation."""

    def __init__(self, inner, cut):
        self.inner, self.cut, self.ops = inner, cut, 0

    def tick(self):
        self.ops += 1
        if self.ops == self.cut:
            raise _Cut()

    def open_append(self, path):
        self.tick()
        return _CutHandle(self, self.inner.open_append(path))

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in ("write_atomic", "rename", "remove", "fsync_dir", "truncate", "chmod_readonly"):
            def wrapped(*a, **k):
                self.tick()
                return attr(*a, **k)
            return wrapped
        return attr


def _log_script(script, cut):
    inner = CrashableMemoryFileSystem()
    fs = _CutFS(inner, cut)
    appended: list[bytes] = []
    durable = 0
    dropped_below = 0
    try:
        log = SegmentedLog("w", fs=fs, segment_bytes=64)
        for i, op in enumerate(script):
            if op == "append":
                p = b"p%d" % i
                appended.append(p)  # before: an append cut short may still survive
                log.append(p)
            elif op == "sync":
                durable = log.sync()
            elif op == "seal":
                log.seal()
                durable = len(appended)
            elif op == "flush":
                with log._lock:
                    log._flush_locked()
            else:
                dropped_below = len(appended) // 2  # before: a cut retention may have dropped some
                log.drop_sealed_before(dropped_below)
            durable = log.durable_index
    except _Cut:
        pass
    return inner, fs.ops, appended, durable, dropped_below


@settings(max_examples=40, deadline=None)
@given(script=st.lists(st.sampled_from(["append", "append", "append", "sync", "seal", "flush", "retain"]),
                       min_size=4, max_size=25),
       seed=st.integers(0, 2**32 - 1), torn=st.booleans())
def test_inv_wal_first_power_cut_at_every_disk_operation(script, seed, torn):
    """Crash at EVERY mutating disk operation (writes, fsyncs, rolls, manifests,
    retention): the log opens, holds every synced record not deliberately
    dropped by retention, and only whole records that were appended, in order."""
    _, total, _, _, _ = _log_script(script, 10**9)
    for cut in range(1, total + 1):
        inner, _, appended, durable, dropped_below = _log_script(script, cut)
        inner.crash(rng=random.Random(seed ^ cut), torn_writes=torn, partial_dir_ops=torn)
        log = SegmentedLog("w", fs=inner, segment_bytes=64)
        got = list(log.records())
        first = got[0][0] if got else log.next_index
        assert first <= max(dropped_below, 0) or first == 0, (cut, first, "dropped too much")
        assert [i for i, _ in got] == list(range(first, first + len(got))), cut
        assert all(appended[i] == p for i, p in got), cut
        assert first + len(got) >= durable, (cut, "lost a synced record")
        log.close()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), data=st.data())
def test_a_bit_flip_in_any_segment_is_reported_with_that_segment_and_frame_offset(n, data):
    fs = CrashableMemoryFileSystem()
    payloads = [b"r%d" % i * (i % 5 + 1) for i in range(n)]
    with SegmentedLog("w", fs=fs, segment_bytes=80) as log:
        for p in payloads:
            log.append(p)
        segs = [s for s in log.segments() if s.bytes > 0]
    seg = data.draw(st.sampled_from(segs))
    pos = data.draw(st.integers(0, seg.bytes - 1))
    fs.flip_bit("w/" + seg.name, pos, bit=data.draw(st.integers(0, 7)))
    # the offset of the frame that contains pos
    o = 0
    for p in payloads[seg.first_index : seg.first_index + seg.count]:
        size = len(encode_frame(p))
        if o + size > pos:
            break
        o += size
    with pytest.raises(WalCorruption) as ei:
        SegmentedLog("w", fs=fs, segment_bytes=80)
    assert (ei.value.segment, ei.value.offset) == (seg.name, o)


@settings(max_examples=25, deadline=None)
@given(recs=st.lists(st.builds(InboxRecord, tenant=st.text(max_size=12).filter(lambda t: t.isprintable()),
                               received_at=st.floats(0, 4e9), region=st.sampled_from(["eu", "us", "ap"]),
                               body=st.binary(max_size=300)), max_size=20),
       seed=st.integers(0, 2**32 - 1))
def test_inbox_records_replay_verbatim_after_a_crash(recs, seed):
    fs = CrashableMemoryFileSystem(rng=random.Random(seed), torn_writes=True)
    log = SegmentedLog("inbox", fs=fs, segment_bytes=400)
    for r in recs:
        log.append(encode_inbox_record(r))
    log.sync()
    log.append(encode_inbox_record(InboxRecord("t", 1.0, "eu", b"unsynced")))
    with log._lock:
        log._flush_locked()
    fs.crash()
    log = SegmentedLog("inbox", fs=fs, segment_bytes=400)
    got = [decode_inbox_record(p) for _, p in log.records()]
    assert got[: len(recs)] == recs
    assert len(got) in (len(recs), len(recs) + 1)


class LogModelMachine(RuleBasedStateMachine):
    """The log agrees with a dict model (index -> payload) through appends,
    syncs, seals, retention, compacted prefixes, clean reopens and crashes."""

    def __init__(self) -> None:
        super().__init__()
        self.fs = CrashableMemoryFileSystem()
        self.log = SegmentedLog("m", fs=self.fs, segment_bytes=90)
        self.model: dict[int, bytes] = {}
        self.next = 0
        self.durable = 0

    def check(self):
        got = list(self.log.records())
        assert got == sorted(self.model.items())
        assert self.log.next_index == self.next
        # the bisected reads (a shipper's watermark, a replay's start) agree with the filtered whole
        sealed = self.log.sealed_segments()
        assert sealed == [s for s in self.log.segments() if s.sealed]
        for mark in range(-1, self.next + 2):
            assert self.log.sealed_segments(mark) == [s for s in sealed if s.end_index > mark]
            assert list(self.log.records(mark)) == [(i, p) for i, p in got if i >= mark]

    @rule(size=st.integers(0, 30))
    def append(self, size):
        p = b"%d|" % self.next + b"z" * size
        assert self.log.append(p) == self.next
        self.model[self.next] = p
        self.next += 1

    @rule()
    def sync(self):
        self.durable = self.log.sync()

    @rule()
    def seal(self):
        self.log.seal()
        self.durable = self.next

    @rule(frac=st.floats(0, 1))
    def retain(self, frac):
        target = int(self.next * frac)
        dropped = self.log.drop_sealed_before(target)
        first = self.log.first_index
        assert first <= max(target, min(self.model, default=first))
        if dropped:
            self.model = {i: p for i, p in self.model.items() if i >= first}
        self.check()

    @rule(keep_every=st.integers(1, 4))
    def compact(self, keep_every):
        self.log.seal()
        self.durable = self.next
        end = self.log.next_index
        below = sorted(i for i in self.model if i < end)
        keep = [self.model[i] for i in below[::keep_every]]
        try:
            seg = self.log.compact_prefix(end, keep)
        except WalError:
            # only when nothing lies below `end` but, at most, the same compaction
            segs = self.log.segments()
            assert segs[0].first_index == end or (segs[0].name == compact_name(end) and len(segs) == 2)
            return
        for i in below:
            del self.model[i]
        for k, p in enumerate(keep):
            self.model[seg.first_index + k] = p
        self.check()

    @rule()
    def reopen(self):
        self.log.close()
        self.log = SegmentedLog("m", fs=self.fs, segment_bytes=90)
        self.durable = self.next
        self.check()

    @rule(seed=st.integers(0, 2**32 - 1))
    def crash(self, seed):
        self.fs.crash(rng=random.Random(seed), torn_writes=True, partial_dir_ops=True)
        self.log = SegmentedLog("m", fs=self.fs, segment_bytes=90)
        got = dict(self.log.records())
        assert all(self.model[i] == p for i, p in got.items())
        assert all(i in got for i in self.model if i < self.durable), "lost a durable record"
        self.model = got
        self.next = self.durable = self.log.next_index

    def teardown(self):
        self.log.close()


LogModelMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_log_agrees_with_a_model_through_retention_compaction_and_crashes = LogModelMachine.TestCase


@settings(max_examples=15, deadline=None)
@given(script=st.lists(st.sampled_from(["append", "append", "sync", "seal", "flush", "retain"]),
                       min_size=4, max_size=20),
       seed=st.integers(0, 2**32 - 1))
def test_a_power_cut_during_recovery_itself_is_harmless(script, seed):
    """Recovery (removing leftovers, truncating a torn tail, sealing, creating
    the active segment) can itself be cut at any operation; the next open
    recovers the same records."""
    _, total, _, _, _ = _log_script(script, 10**9)
    inner, *_ = _log_script(script, random.Random(seed).randint(1, total))
    inner.crash(rng=random.Random(seed), torn_writes=True, partial_dir_ops=True)
    reference = inner.clone()
    with SegmentedLog("w", fs=reference, segment_bytes=64) as log:
        want = list(log.records())
    cut = 1
    while True:
        disk = inner.clone()
        fs = _CutFS(disk, cut)
        try:
            SegmentedLog("w", fs=fs, segment_bytes=64).close()
            break  # recovery finished without reaching the cut: every point was tried
        except _Cut:
            pass
        disk.crash(rng=random.Random(seed + cut), torn_writes=True, partial_dir_ops=True)
        with SegmentedLog("w", fs=disk, segment_bytes=64) as log:
            assert list(log.records()) == want, cut
        cut += 1
