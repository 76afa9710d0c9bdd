"""The outbox compaction/append race held open at every step.

The older race test lets appends overlap one window of a compaction (between
its snapshot and its commit) and only by timing. Here a compaction is stopped,
deterministically, at each of its disk operations in turn -- sealing the
active segment, its manifest, the compacted file's open, write, fsync, rename,
the directory fsync, every removal of an old segment -- and while it is held
there another thread appends new records and acks old ones. Then the
compaction finishes, and the outbox (live, and reopened after a power cut)
must hold exactly the model's pending records: an append or ack that raced
with any step is neither lost nor resurrected.
"""

from __future__ import annotations

import threading

import pytest

from flk.impl.agent.outbox import Outbox
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


class _Handle:
    def __init__(self, fs, inner):
        self._fs, self._inner = fs, inner

    def write(self, data):
        self._fs.step("write")
        self._inner.write(data)

    def fsync(self):
        self._fs.step("fsync")
        self._inner.fsync()

    def close(self):
        self._inner.close()


class StepFileSystem:
    """Counts the disk operations of ONE thread (the compactor); at number ``hold`` it
    signals ``held`` and waits for ``release``. Other threads pass through."""

    MUTATING = ("write_atomic", "rename", "remove", "fsync_dir", "truncate", "chmod_readonly", "makedirs")

    def __init__(self, inner, hold: int | None = None):
        self.inner, self.hold = inner, hold
        self.thread: int | None = None
        self.ops: list[str] = []
        self.held, self.release = threading.Event(), threading.Event()

    def step(self, what: str) -> None:
        if threading.get_ident() != self.thread:
            return
        self.ops.append(what)
        if len(self.ops) == self.hold:
            self.held.set()
            assert self.release.wait(30), "never released"

    def open_append(self, path):
        self.step("open_append")
        return _Handle(self, self.inner.open_append(path))

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in self.MUTATING:
            def wrapped(*a, **k):
                self.step(name)
                return attr(*a, **k)
            return wrapped
        return attr


def prepared(fs) -> tuple[Outbox, dict[int, bytes]]:
    ob = Outbox("ob", fs=fs, segment_bytes=128, auto_compact_after=None)
    model = {}
    for i in range(12):
        model[ob.append(b"old-%d" % i)] = b"old-%d" % i
    for seq in (0, 3, 4, 7, 10):
        assert ob.ack(seq)
        del model[seq]
    return ob, model


def compaction_ops() -> list[str]:
    fs = StepFileSystem(CrashableMemoryFileSystem())
    ob, _ = prepared(fs)
    fs.thread = threading.get_ident()
    assert ob.compact()["compacted"]
    ob.close()
    return fs.ops


OPS = compaction_ops()


def test_the_compaction_has_the_steps_this_test_holds() -> None:
    assert {"fsync", "write_atomic", "open_append", "write", "rename", "fsync_dir", "remove"} <= set(OPS), OPS


@pytest.mark.parametrize("durability", ["always", "group"])
@pytest.mark.parametrize("hold", range(1, len(OPS) + 1), ids=[f"{k + 1}-{op}" for k, op in enumerate(OPS)])
def test_appends_and_acks_racing_with_each_compaction_step_are_kept(hold, durability) -> None:
    inner = CrashableMemoryFileSystem()
    fs = StepFileSystem(inner, hold)
    ob, model = prepared(fs)
    if durability == "group":
        ob.close()
        ob = Outbox("ob", fs=fs, segment_bytes=128, auto_compact_after=None, durability="group",
                    max_delay_s=0.0005)
    result: list = []

    def compactor():
        fs.thread = threading.get_ident()
        result.append(ob.compact())

    racer_done = threading.Event()
    racer_errors: list[BaseException] = []

    def racer():
        try:
            for i in range(6):  # > segment_bytes: the racer's records roll segments of their own
                data = b"new-%d-" % i + bytes(40)
                model[ob.append(data)] = data
            for seq in sorted(model)[:3]:
                assert ob.ack(seq)
                del model[seq]
        except BaseException as exc:  # noqa: BLE001
            racer_errors.append(exc)
        finally:
            racer_done.set()

    t = threading.Thread(target=compactor)
    t.start()
    assert fs.held.wait(10), f"the compaction never reached step {hold}"
    r = threading.Thread(target=racer)
    r.start()
    overlapped = racer_done.wait(2.0)  # False when the step holds the outbox lock (seal): legit
    fs.release.set()
    t.join(30)
    r.join(30)
    assert racer_errors == [] and result and result[0]["compacted"], (racer_errors, result)
    assert ob.pending() == sorted(model.items()), (OPS[hold - 1], overlapped)
    next_seq = ob.next_seq
    ob.close()
    inner.crash()
    again = Outbox("ob", fs=inner, auto_compact_after=None)
    assert again.pending() == sorted(model.items()), (OPS[hold - 1], "after a power cut")
    assert again.next_seq == next_seq
    again.close()
    HELD_OPEN.append(overlapped)


HELD_OPEN: list[bool] = []


def test_zz_most_steps_really_overlapped_the_racing_thread() -> None:
    """A "sometimes" check: the racer finished while the compaction was held at most steps
    (else the holds proved nothing). Runs after the parametrized test in this file."""
    if not HELD_OPEN:
        pytest.skip("run with the parametrized test")
    assert sum(HELD_OPEN) >= len(HELD_OPEN) // 2, HELD_OPEN
