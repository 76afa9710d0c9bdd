"""The agent outbox: acks survive restarts, compaction loses nothing."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent.outbox import (
    ACK,
    MARK,
    PCS,
    Outbox,
    OutboxError,
    decode_record,
    encode_record,
    fold,
)
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


class PowerCut(Exception):
    """Raised by CutFileSystem at the chosen operation: the machine stops here."""


class _CutHandle:
    def __init__(self, fs, inner):
        self._fs, self._inner = fs, inner

    def write(self, data):
        self._fs.tick("write")
        self._inner.write(data)

    def fsync(self):
        self._fs.tick("fsync")
        self._inner.fsync()

    def close(self):
        self._inner.close()


class CutFileSystem:
    """Counts every mutating disk operation; raises PowerCut at number ``cut``."""

    MUTATING = ("write_atomic", "rename", "remove", "fsync_dir", "truncate", "chmod_readonly", "makedirs")

    def __init__(self, inner, cut):
        self.inner, self.cut, self.ops = inner, cut, 0

    def tick(self, what):
        self.ops += 1
        if self.ops == self.cut:
            raise PowerCut(what)

    def open_append(self, path):
        self.tick("open_append")
        return _CutHandle(self, self.inner.open_append(path))

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in self.MUTATING:
            def wrapped(*a, **k):
                self.tick(name)
                return attr(*a, **k)
            return wrapped
        return attr


def test_record_codec_round_trips_and_rejects_nonsense():
    assert decode_record(encode_record(PCS, 7, b"data")) == (PCS, 7, b"data")
    assert decode_record(encode_record(ACK, 7)) == (ACK, 7, b"")
    assert decode_record(encode_record(MARK, 9)) == (MARK, 9, b"")
    for bad in (b"", b"\x09" + bytes(8), encode_record(ACK, 1) + b"x"):
        with pytest.raises(OutboxError):
            decode_record(bad)
    with pytest.raises(OutboxError):
        fold([encode_record(PCS, 5, b"a"), encode_record(PCS, 3, b"b")])  # seqs never go back


def test_append_ack_pending_and_reopen():
    fs = CrashableMemoryFileSystem()
    with Outbox("ob", fs=fs) as ob:
        seqs = [ob.append(b"pcs-%d" % i) for i in range(5)]
        assert seqs == [0, 1, 2, 3, 4]
        assert ob.ack(1) and ob.ack(3)
        assert not ob.ack(3) and not ob.ack(99)
        assert ob.pending() == [(0, b"pcs-0"), (2, b"pcs-2"), (4, b"pcs-4")]
    with Outbox("ob", fs=fs) as ob:
        assert ob.pending() == [(0, b"pcs-0"), (2, b"pcs-2"), (4, b"pcs-4")]
        assert ob.append(b"later") == 5


@pytest.mark.parametrize("durability", ["always", "group"])
def test_acks_survive_a_crash_right_after_they_return(durability):
    fs = CrashableMemoryFileSystem()
    ob = Outbox("ob", fs=fs, durability=durability, max_delay_s=0.001)
    for i in range(6):
        ob.append(b"r%d" % i)
    ob.ack(0)
    ob.ack(4)
    fs.crash()  # no close, no sync: only what append/ack made durable
    ob2 = Outbox("ob", fs=fs, durability=durability)
    assert [s for s, _ in ob2.pending()] == [1, 2, 3, 5]
    ob2.close()
    ob._committer and ob._committer.close()


def test_sequence_numbers_are_not_reused_after_everything_is_acked_and_compacted():
    fs = CrashableMemoryFileSystem()
    with Outbox("ob", fs=fs) as ob:
        for i in range(4):
            ob.ack(ob.append(b"x%d" % i))
        res = ob.compact()
        assert res["compacted"] and ob.pending() == []
    with Outbox("ob", fs=fs) as ob:
        assert ob.next_seq == 4
        assert ob.append(b"new") == 4


ops = st.lists(st.one_of(st.just(("append",)), st.tuples(st.just("ack"), st.integers(0, 30)),
                         st.just(("compact",)), st.just(("reopen",))), max_size=40)


@settings(max_examples=40, deadline=None)
@given(ops=ops)
def test_acks_and_appends_survive_restarts_and_compactions(ops):
    fs = CrashableMemoryFileSystem()
    ob = Outbox("ob", fs=fs, segment_bytes=128)
    model: dict[int, bytes] = {}
    nxt = 0
    for op in ops:
        if op[0] == "append":
            assert ob.append(b"d%d" % nxt) == nxt
            model[nxt] = b"d%d" % nxt
            nxt += 1
        elif op[0] == "ack":
            assert ob.ack(op[1]) == (op[1] in model)
            model.pop(op[1], None)
        elif op[0] == "compact":
            ob.compact()
        else:
            ob.close()
            fs.crash()
            ob = Outbox("ob", fs=fs, segment_bytes=128)
        assert ob.pending() == sorted(model.items())
        assert all(ob.holds(seq) == (seq in model) for seq in range(nxt + 1))
    ob.close()


class HookFileSystem:
    """Calls ``hook()`` when a compaction starts writing its temp file -- i.e.
    while the compaction holds no lock that an append needs."""

    def __init__(self, inner, hook):
        self.inner, self.hook = inner, hook

    def open_append(self, path):
        if "compact-" in path and path.endswith(".tmp"):
            self.hook()
        return self.inner.open_append(path)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(20, 160), ack_every=st.integers(1, 4), seed=st.integers(0, 2**16),
       durability=st.sampled_from(["always", "group"]))
def test_compaction_racing_with_appends_from_another_thread_loses_nothing(n, ack_every, seed, durability):
    inner = CrashableMemoryFileSystem()
    progress = [0]
    overlapped = []
    half, go, done = threading.Event(), threading.Event(), threading.Event()

    def hook():  # runs inside compact(), between snapshot and commit
        start = progress[0]
        go.set()
        deadline = time.monotonic() + 5
        while progress[0] < start + 5 and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.0002)
        overlapped.append(progress[0] - start)

    ob = Outbox("ob", fs=HookFileSystem(inner, hook), durability=durability, max_delay_s=0.0005,
                segment_bytes=256)
    model: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def writer():
        rng = random.Random(seed)
        try:
            for i in range(n):
                if i == n // 2:
                    half.set()
                    assert go.wait(5), "no compaction started"
                data = b"pcs-%d-" % i + bytes(rng.randrange(30))
                seq = ob.append(data)
                model[seq] = data
                if i % ack_every == 0:
                    victim = rng.choice(sorted(model))
                    assert ob.ack(victim)
                    del model[victim]
                progress[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert half.wait(10)
    while not done.is_set():
        ob.compact()
    t.join()
    assert errors == []
    assert sum(overlapped) >= 5, "no append ran during a compaction: the test proved nothing"
    assert ob.pending() == sorted(model.items())
    ob.close()
    inner.crash()
    ob = Outbox("ob", fs=inner)
    assert ob.pending() == sorted(model.items())
    assert ob.next_seq == n
    ob.close()


def _run_script(script, seed, cut):
    """Run ``script`` on a disk that loses power at operation ``cut``; return
    what was acknowledged, what was in flight, and the disk."""
    inner = CrashableMemoryFileSystem()
    fs = CutFileSystem(inner, cut)
    appended: dict[int, bytes] = {}
    acked: set[int] = set()
    inflight = None
    try:
        ob = Outbox("ob", fs=fs, segment_bytes=96, auto_compact_after=3)
        rng = random.Random(seed)
        for i, op in enumerate(script):
            live = sorted(set(appended) - acked)
            if op == "append":
                inflight = ("append", ob.next_seq)
                seq = ob.append(b"v%d" % i)
                appended[seq] = b"v%d" % i
            elif op == "ack" and live:
                s = rng.choice(live)
                inflight = ("ack", s)
                ob.ack(s)
                acked.add(s)
            elif op == "compact":
                inflight = ("compact", None)
                ob.compact()
            inflight = None
    except PowerCut:
        pass
    return inner, fs.ops, appended, acked, inflight


@settings(max_examples=12, deadline=None)
@given(script=st.lists(st.sampled_from(["append", "append", "ack", "compact"]), min_size=1, max_size=20),
       seed=st.integers(0, 2**32 - 1), torn=st.booleans())
def test_a_power_cut_at_every_disk_operation_keeps_every_acknowledged_append_and_ack(script, seed, torn):
    """Crash at EVERY mutating disk operation of a script (including inside
    compactions): every append/ack that returned is kept; only the one in
    flight may or may not be."""
    _, total, _, _, _ = _run_script(script, seed, cut=10**9)
    for cut in range(1, total + 1):
        inner, _, appended, acked, inflight = _run_script(script, seed, cut)
        inner.crash(rng=random.Random(seed + cut), torn_writes=torn, partial_dir_ops=torn)
        ob = Outbox("ob", fs=inner)
        got = dict(ob.pending())
        for s, data in appended.items():
            if s in acked:
                assert s not in got, f"cut {cut}: acked seq {s} came back"
            elif inflight != ("ack", s):
                assert got.get(s) == data, f"cut {cut}: acknowledged append {s} lost"
        extra = set(got) - set(appended)
        assert extra <= ({inflight[1]} if inflight and inflight[0] == "append" else set()), cut
        assert [s for s, _ in ob.pending()] == sorted(got)
        assert ob.next_seq >= max(appended, default=-1) + 1
        ob.close()


def test_auto_compaction_every_n_acks_keeps_pending_and_bounds_the_log():
    fs = CrashableMemoryFileSystem()
    ob = Outbox("ob", fs=fs, auto_compact_after=10)
    for i in range(200):
        seq = ob.append(b"rec-%d" % i)
        if i % 4:
            ob.ack(seq)
    st_ = ob.stats()
    assert ob.compactions >= 10
    assert st_["pending"] == 50 and st_["records"] < 200
    want = ob.pending()
    ob.close()
    fs.crash()
    with Outbox("ob", fs=fs) as ob2:
        assert ob2.pending() == want and ob2.next_seq == 200
    with pytest.raises(ValueError):
        Outbox("ob2", fs=fs, auto_compact_after=0)
    with pytest.raises(ValueError):
        Outbox("ob3", fs=fs, durability="sometimes")


def test_outbox_truncated_at_every_byte_offset_recovers_exactly_the_complete_records(tmp_path):
    """A crash (truncation) at any byte offset during append, on the real disk:
    the reopened outbox holds exactly the records fully written before it."""
    import os
    import shutil

    from flk.impl.storage.walformat import encode_frame, segment_name

    src = str(tmp_path / "src")
    datas = [b"p%d" % i + bytes(i) for i in range(6)]
    with Outbox(src, auto_compact_after=None) as ob:
        for d in datas:
            ob.append(d)
        ob.ack(1)
    seg = os.path.join(src, segment_name(0))
    blob = open(seg, "rb").read()
    # frame ends: six PCS records, then the ACK of seq 1
    ends, o = [], 0
    for payload in [encode_record(PCS, i, d) for i, d in enumerate(datas)] + [encode_record(ACK, 1)]:
        o += len(encode_frame(payload))
        ends.append(o)
    assert ends[-1] == len(blob)
    for cut in range(len(blob) + 1):
        d = str(tmp_path / f"cut{cut}")
        os.mkdir(d)
        with open(os.path.join(d, segment_name(0)), "wb") as f:
            f.write(blob[:cut])
        with Outbox(d, auto_compact_after=None) as ob:
            complete = sum(1 for e in ends if e <= cut)
            want = list(enumerate(datas[: min(complete, 6)]))
            if complete == 7:
                want = [w for w in want if w[0] != 1]
            assert ob.pending() == want, cut
            assert ob.next_seq == min(complete, 6)
        shutil.rmtree(d)
