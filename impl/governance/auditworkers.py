"""Async audit workers: audit entries off the request path (SPEC.md section 11.7).

Why this module exists: appending and fsyncing the WORM audit log
(``flk.impl.governance.audit``) on every request or reconcile decision would put disk
latency and audit-log outages on the hot path. Producers enqueue audit items;
workers append them later, and nothing is lost or doubled on the way.

Theory of operation (:class:`AuditQueue`, sans-I/O: time passed in,
``step(now) -> next_wakeup``)::

    enqueue(item) --> [durable journal (Outbox), optional] --> ready queue
    step(now): for each due item
        idempotency store has item.id?  -> ack, drop        (a re-delivery)
        handler(item) ok                -> mark id, ack      (at-least-once: ack only after success)
        handler raised                  -> attempts += 1; retry at now + backoff(attempts)
                                           attempts == max_attempts -> dead-letter queue
    every ``anchor_every`` appended entries -> anchor(now)   (batch anchoring)

* **At-least-once**: an item leaves the journal only after its handler
  returned (``Outbox.ack``); after a crash :meth:`AuditQueue.recover` puts every
  unacknowledged item back.
* **Idempotency**: the idempotency store remembers processed item ids, so a
  re-delivered item is not appended twice. (The only window for a duplicate
  is a crash between the handler's return and the mark; the mark is written
  first thing after.)
* **Dead letters** keep the item, its attempts and last error, in memory and
  (with a journal) as a durable DLQ file line; :meth:`redrive` re-enqueues.
* **Backlog** = ready + waiting-for-retry items (a metric).

:class:`AuditWorker` is the thread driver (wall clock, condition variable).
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core import textdata
from ..core.backoff import Backoff
from ..core.errors import InvalidInput
from ..storage.threads import NamedThread


@dataclass(frozen=True)
class AuditItem:
    """``id`` (unique per logical entry, e.g. ``"<region>:<tenant>:<pcs_id>:<kind>"``)
    and ``entry``: the keyword arguments of ``AuditLog.append`` (metadata only)."""

    id: str
    entry: Mapping[str, Any]

    def to_bytes(self) -> bytes:
        return json.dumps({"id": self.id, "entry": dict(self.entry)}, sort_keys=True).encode()

    @staticmethod
    def from_bytes(raw: bytes) -> AuditItem:
        d = textdata.json_loads(raw)
        return AuditItem(str(d["id"]), d["entry"])


class IdempotencyStore(Protocol):
    def seen(self, item_id: str) -> bool: ...

    def mark(self, item_id: str) -> None: ...


class MemoryIdempotencyStore:
    def __init__(self) -> None:
        self._ids: set[str] = set()

    def seen(self, item_id: str) -> bool:
        return item_id in self._ids

    def mark(self, item_id: str) -> None:
        self._ids.add(item_id)


class SqliteIdempotencyStore:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS processed (id TEXT PRIMARY KEY)")

    def seen(self, item_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM processed WHERE id=?", (item_id,)).fetchone() is not None

    def mark(self, item_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO processed VALUES (?)", (item_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(order=True)
class _Pending:
    due: float
    order: int
    item: AuditItem = field(compare=False)
    seq: int | None = field(compare=False, default=None)  # journal sequence number
    attempts: int = field(compare=False, default=0)
    last_error: str | None = field(compare=False, default=None)


@dataclass(frozen=True)
class DeadLetter:
    item: AuditItem
    attempts: int
    last_error: str


class AuditQueue:
    def __init__(self, handler: Callable[[AuditItem], None], idempotency: IdempotencyStore | None = None,
                 backoff: Backoff = Backoff(0.1, 30.0), max_attempts: int = 5, journal: Any = None,
                 anchor: Callable[[float], Any] | None = None, anchor_every: int = 0,
                 dlq_journal: Any = None) -> None:
        if max_attempts < 1:
            raise InvalidInput("max_attempts", "must be >= 1")
        self.handler = handler
        self.idem = idempotency if idempotency is not None else MemoryIdempotencyStore()
        self.backoff, self.max_attempts = backoff, max_attempts
        self.journal, self.dlq_journal = journal, dlq_journal
        self.anchor, self.anchor_every = anchor, anchor_every
        self._heap: list[_Pending] = []
        self._order = 0
        self.dead: list[DeadLetter] = []
        self.counters = {"enqueued": 0, "processed": 0, "duplicates": 0, "retries": 0, "dead_lettered": 0,
                         "anchors": 0}
        self._since_anchor = 0

    def _push(self, p: _Pending) -> None:
        heapq.heappush(self._heap, p)

    def enqueue(self, item: AuditItem, now: float) -> None:
        seq = self.journal.append(item.to_bytes()) if self.journal is not None else None
        self._order += 1
        self._push(_Pending(now, self._order, item, seq))
        self.counters["enqueued"] += 1

    def recover(self, now: float) -> int:
        """Re-enqueue every unacknowledged journal item (after a restart)."""
        n = 0
        for seq, raw in self.journal.pending() if self.journal is not None else []:
            self._order += 1
            self._push(_Pending(now, self._order, AuditItem.from_bytes(raw), seq))
            n += 1
        return n

    def backlog(self) -> int:
        return len(self._heap)

    def _ack(self, p: _Pending) -> None:
        if self.journal is not None and p.seq is not None:
            self.journal.ack(p.seq)

    def step(self, now: float) -> float | None:
        """Process every due item; returns the next due time (None when idle). ``now`` is
        a wall clock that may step back: a due time further ahead than the longest wait
        this queue sets (the backoff cap) was left behind by such a step and is due now
        (spec/SPEC.md 11.9 rule 5); otherwise audit entries would wait for the clock."""
        if self._heap and self._heap[0].due - now > self.backoff.cap_s:
            for p in self._heap:
                if p.due - now > self.backoff.cap_s:
                    p.due = now
            heapq.heapify(self._heap)
        while self._heap and self._heap[0].due <= now:
            p = heapq.heappop(self._heap)
            if self.idem.seen(p.item.id):
                self.counters["duplicates"] += 1
                self._ack(p)
                continue
            try:
                self.handler(p.item)
            except Exception as exc:  # noqa: BLE001 -- any handler failure is retried
                p.attempts += 1
                p.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if p.attempts >= self.max_attempts:
                    dl = DeadLetter(p.item, p.attempts, p.last_error)
                    self.dead.append(dl)
                    if self.dlq_journal is not None:
                        self.dlq_journal.append(json.dumps({"id": dl.item.id, "entry": dict(dl.item.entry),
                                                            "attempts": dl.attempts, "error": dl.last_error},
                                                           sort_keys=True).encode())
                    self._ack(p)
                    self.counters["dead_lettered"] += 1
                else:
                    self.counters["retries"] += 1
                    p.due = now + self.backoff.delay(p.attempts)
                    self._push(p)
                continue
            self.idem.mark(p.item.id)
            self._ack(p)
            self.counters["processed"] += 1
            self._since_anchor += 1
            if self.anchor is not None and self.anchor_every and self._since_anchor >= self.anchor_every:
                self.anchor(now)
                self.counters["anchors"] += 1
                self._since_anchor = 0
        return self._heap[0].due if self._heap else None

    def redrive(self, now: float) -> int:
        """Move every dead letter back to the queue (after the cause was fixed)."""
        dead, self.dead = self.dead, []
        for dl in dead:
            self.enqueue(dl.item, now)
        return len(dead)

    def metrics(self) -> dict[str, int]:
        return {**self.counters, "backlog": self.backlog(), "dead_letters": len(self.dead)}


def audit_log_handler(log: Any) -> Callable[[AuditItem], None]:
    """Append to a :class:`flk.impl.governance.audit.AuditLog` and fsync."""

    def handle(item: AuditItem) -> None:
        log.append(**item.entry)
        log.sync()

    return handle


def anchor_fn(log: Any, store: Any, tsa: Callable[[str], bytes] | None = None) -> Callable[[float], Any]:
    """Seal the active audit segment and anchor every sealed, unanchored one."""

    def run(now: float) -> Any:
        log.seal(now)
        return log.anchor(store, now, tsa)

    return run


class AuditWorker:
    """Thread driver: ``submit(item)`` from any thread; the worker thread runs
    ``queue.step(clock())`` when woken or when a retry is due."""

    def __init__(self, queue: AuditQueue, clock: Callable[[], float] = time.time) -> None:
        self.queue, self.clock = queue, clock
        self._cv = threading.Condition()
        self._stop = False
        self._thread = NamedThread(target=self._run, name="audit-worker", daemon=True)

    def start(self) -> AuditWorker:
        self._thread.start()
        return self

    def submit(self, item: AuditItem) -> None:
        with self._cv:
            self.queue.enqueue(item, self.clock())
            self._cv.notify()

    def __call__(self, **entry: Any) -> None:
        """Use as a reconciler ``audit`` callable: the id is derived from the entry."""
        iid = "|".join(str(entry.get(k, "")) for k in ("region", "tenant", "pcs_id", "outcome", "payload_digest", "now"))
        self.submit(AuditItem(iid, entry))

    def _run(self) -> None:
        with self._cv:
            while not self._stop:
                nxt = self.queue.step(self.clock())
                timeout = None if nxt is None else max(0.0, nxt - self.clock())
                self._cv.wait(timeout if timeout is None else min(timeout, 1.0))

    def drain(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                if self.queue.backlog() == 0:
                    return True
                self._cv.notify()
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(10)
