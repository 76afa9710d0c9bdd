"""Async audit workers: at-least-once through a crash, idempotency, retries with
backoff, dead letters, batch anchoring, backlog; the thread driver on a real audit log."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent.outbox import Outbox
from flk.impl.core.backoff import Backoff
from flk.impl.core.errors import InvalidInput
from flk.impl.governance.audit import AttestationStore, AuditLog, verify_directory
from flk.impl.governance.auditworkers import (
    AuditItem,
    AuditQueue,
    AuditWorker,
    SqliteIdempotencyStore,
    anchor_fn,
    audit_log_handler,
)
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


def item(i: int) -> AuditItem:
    return AuditItem(f"id-{i}", {"tenant": "ta", "pcs_id": f"{i:064x}", "outcome": "reconcile_conflict",
                                 "payload_digest": "a" * 64, "now": 1000.0 + i, "status": 200, "region": "eu"})


def entries(fs, d="/audit"):
    return [json.loads(line) for n in sorted(fs.listdir(d)) if n.endswith(".log")
            for line in fs.read(f"{d}/{n}").splitlines()]


def test_retries_with_backoff_then_dead_letter_and_redrive():
    calls = []
    fail = {"on": True}

    def handler(it):
        calls.append(it.id)
        if fail["on"]:
            raise OSError("audit disk full")

    q = AuditQueue(handler, backoff=Backoff(1.0, 4.0), max_attempts=3)
    q.enqueue(item(1), 0.0)
    assert q.backlog() == 1
    assert q.step(0.0) == 1.0
    assert q.step(0.5) == 1.0  # not due yet
    assert q.step(1.0) == 3.0
    assert q.step(3.0) is None
    assert calls == ["id-1"] * 3 and len(q.dead) == 1 and q.dead[0].attempts == 3
    assert "disk full" in q.dead[0].last_error
    assert q.metrics()["backlog"] == 0 and q.metrics()["dead_letters"] == 1
    fail["on"] = False
    assert q.redrive(10.0) == 1
    q.step(10.0)
    assert q.metrics()["processed"] == 1 and q.dead == []
    with pytest.raises(InvalidInput):
        AuditQueue(handler, max_attempts=0)


def test_idempotency_a_redelivered_item_is_appended_once(tmp_path):
    got = []
    idem = SqliteIdempotencyStore(str(tmp_path / "idem.db"))
    q = AuditQueue(got.append, idem)
    for i in (1, 2, 1, 1, 3):
        q.enqueue(item(i), 0.0)
    q.step(0.0)
    assert [x.id for x in got] == ["id-1", "id-2", "id-3"] and q.counters["duplicates"] == 2
    idem.close()
    q2 = AuditQueue(got.append, SqliteIdempotencyStore(str(tmp_path / "idem.db")))  # survives a restart
    q2.enqueue(item(2), 0.0)
    q2.step(0.0)
    assert len(got) == 3


def test_at_least_once_through_a_crash_with_a_durable_journal():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("/q")
    journal = Outbox("/q/journal", fs=fs)
    got = []
    q = AuditQueue(got.append, journal=journal)
    for i in range(5):
        q.enqueue(item(i), 0.0)
    # the worker handles two items, then the machine loses power
    q._heap.sort()
    first_two = q._heap[:2]
    q._heap = first_two
    q.step(0.0)
    assert [x.id for x in got] == ["id-0", "id-1"]
    fs.crash()
    journal2 = Outbox("/q/journal", fs=fs)
    q2 = AuditQueue(got.append, journal=journal2)
    assert q2.recover(1.0) == 3
    q2.step(1.0)
    assert sorted(x.id for x in got) == [f"id-{i}" for i in range(5)]
    assert journal2.pending() == []


def test_batch_anchoring_every_n_entries_on_a_real_audit_log():
    fs = CrashableMemoryFileSystem()
    log = AuditLog("/audit", fs=fs)
    anchors = AttestationStore("/anchors", fs=fs)
    q = AuditQueue(audit_log_handler(log), anchor=anchor_fn(log, anchors), anchor_every=3)
    for i in range(7):
        q.enqueue(item(i), float(i))
    q.step(100.0)
    assert q.counters["anchors"] == 2 and len(anchors.names()) == 2
    log.close(101.0)
    assert len(entries(fs)) == 7
    rep = verify_directory("/audit", anchors_dir="/anchors", fs=fs)
    assert rep.ok


@settings(max_examples=30, deadline=None)
@given(fails=st.lists(st.integers(0, 4), min_size=1, max_size=12), dup=st.lists(st.integers(0, 11), max_size=6))
def test_every_item_is_processed_exactly_once_or_dead_lettered(fails, dup):
    remaining = dict(enumerate(fails))  # item i fails that many times first
    got = []

    def handler(it):
        i = int(it.id.split("-")[1])
        if remaining[i] > 0:
            remaining[i] -= 1
            raise RuntimeError("transient")
        got.append(it.id)

    q = AuditQueue(handler, backoff=Backoff(1.0, 8.0), max_attempts=4)
    for i in range(len(fails)):
        q.enqueue(item(i), 0.0)
    for i in dup:
        if i < len(fails):
            q.enqueue(item(i), 0.5)  # re-delivery
    t = 0.0
    while (nxt := q.step(t)) is not None:
        t = nxt
    dead = {d.item.id for d in q.dead}
    assert len(got) == len(set(got))
    assert set(got) | dead == {f"id-{i}" for i in range(len(fails))}
    assert {f"id-{i}" for i, f in enumerate(fails) if f < 4} <= set(got)
    once = [i for i in range(len(fails)) if i not in dup]
    assert {f"id-{i}" for i in once if fails[i] >= 4} == {f"id-{i}" for i in once} & dead
    assert not ({f"id-{i}" for i in once} & dead & set(got))
    assert q.backlog() == 0


def test_thread_worker_as_the_reconcilers_audit_sink():
    from flk.impl.dedup import StoredOutcome
    from flk.impl.replication.reconcile import Reconciler

    fs = CrashableMemoryFileSystem()
    log = AuditLog("/audit", fs=fs)
    worker = AuditWorker(AuditQueue(audit_log_handler(log))).start()
    rec = Reconciler("eu", audit=worker)
    rec.observe("ta", "p" * 64, StoredOutcome("a" * 64, 200, b"{}", 2.0, "eu", "v"), 10.0)
    rec.observe("ta", "p" * 64, StoredOutcome("b" * 64, 200, b"{}", 1.0, "us", "v"), 11.0)
    assert worker.drain(5.0)
    worker.stop()
    log.close(12.0)
    assert [e["outcome"] for e in entries(fs)] == ["reconcile_conflict", "reconcile_auto_resolved"]
    assert verify_directory("/audit", fs=fs).ok


def test_an_item_left_ahead_by_a_clock_step_back_is_due_at_once():
    """SPEC 11.9 rule 5: a due time further ahead than the backoff cap can only have been
    left there by the wall clock stepping back; the queue processes it now, while an
    ordinary retry wait (within the cap) still waits."""
    seen = []
    q = AuditQueue(lambda it: seen.append(it.id), backoff=Backoff(0.25, 30.0))
    t = 1_000_000.0
    q.enqueue(item(1), t + 3600.0)  # enqueued an hour ahead of the clock now read
    assert q.step(t) is None and seen == ["id-1"]
    fails = {"n": 0}

    def flaky(it):
        fails["n"] += 1
        if fails["n"] == 1:
            raise OSError("down")
        seen.append(it.id)

    q2 = AuditQueue(flaky, backoff=Backoff(10.0, 30.0))
    q2.enqueue(item(2), t)
    nxt = q2.step(t)
    assert nxt == t + 10.0 and seen == ["id-1"]  # a retry within the cap waits
    assert q2.step(t + 5.0) == t + 10.0 and seen == ["id-1"]
    assert q2.step(t + 10.0) is None and seen == ["id-1", "id-2"]
