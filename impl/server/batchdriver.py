"""The submit path's batch driver: batches of requests through the verification core
(:class:`flk.impl.verifier.core.VerifyBatch`), pipelined over the WAL's fsync.

Why this module exists: driving one pipeline generator per request from the event
loop costs three futures and three thread round trips per request (WAL fsync,
dedup read, dedup write) plus the generator and its effect objects. Here the loop
only queues ``(request, future)`` (or a callback: :meth:`BatchDriver.submit_then`); batches form under the rule of
:class:`flk.impl.verifier.batching.BatchFormation` (a batch starts ``max_delay_s``
after its oldest request, or at once when as many wait as the last batch held, at most
``max_batch``; at most ``depth`` batches run at once, what arrives meanwhile is the
next batch) -- the same state machine the simulator's regions drive under SimPy time.

Theory of operation (two threads; the event loop only queues and answers):

* the **batch thread** runs every step of the core that touches the store, the
  per-tenant buckets or the WAL's append: for a new batch, step 1 and the append
  of its inbox WAL records (:func:`flk.impl.verifier.core.append_batch`, no sync);
  for a batch whose records a sync covered, steps 2-8
  (:func:`flk.impl.verifier.core.finish_batch`: one ``get_many``, one
  ``put_many_if_absent``, the answers and the home answers);
* the **sync thread** fsyncs the inbox WAL (``wal.sync()``) whenever records were
  appended since its last sync; one sync covers every batch appended before it
  began (a group commit across batches) and hands them back to the batch thread.
  At ``depth=1`` there is nothing to overlap the fsync with: the batch thread runs
  that same sync itself right after the append (two thread hand-offs fewer per batch).

So with ``depth=2`` batch N+1 is appended while batch N's fsync runs, and batch N
is verified while batch N+1's fsync runs; the fsync no longer serialises with the
CPU work. What stays as before: nothing of a request is parsed, verified, looked
up, stored or answered before a sync that began after its record's append
succeeded (INV-WAL-FIRST; a failed sync fails every batch it covered with the WAL
problem response, logged ``wal_append_failed``); batches are finished in WAL
order on the one batch thread, so of two in-flight batches holding one key the
earlier record wins (INV-FWW) -- the order a replay of the WAL would find.

The batch's home answers (:class:`flk.impl.storage.walformat.AnswerNote`) go to the
WAL for the manifest of the segment holding its records, so that they travel with
the records to the other regions. :attr:`BatchDriver.lock` (a :class:`SealGate`) is
the shipper's seal lock and the WAL recovery's lock: it is granted only when no
batch is between its append and its answers, and a batch waits to append while it
is held or wanted; the segment rolls only at such a moment (before a batch's
append, when no other batch is in flight), so a sealed segment's manifest has the
answers of all its records. ONE ``call_soon_threadsafe`` per batch sets all the
futures.

Every store access of the serving path is on the batch thread (the in-memory
store needs no lock). :class:`GuardedStore` (the core's drivers' one breaker
wrapping, :class:`flk.impl.verifier.admission.GuardedStore`) keeps the circuit
breaker and the batch counters of the metrics; :class:`LoggedWal` logs
``wal_append_failed``. :meth:`BatchDriver.close` lets the running batches finish,
runs what is queued and stops both threads.

:attr:`BatchDriver.stages`
(:class:`StageTimes`) sums where the submissions' time went (queued, hand-offs, append,
sync, verify and store); the server logs it at stop (``submit_stages``) and ``flk bench
serve`` reports it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from ..dedup import StoreUnavailable, answered_part
from ..storage.threads import NamedThread
from ..storage.wal import WalError
from ..verifier.admission import GuardedStore as _GuardedStore
from ..verifier.batching import BatchFormation
from ..verifier.core import append_batch, finish_batch
from ..verifier.pipeline import Request

_NO_HEADERS = MappingProxyType({})  # the submit route passes the tenant, not the headers
_STOP = object()
_WAKE = object()  # the seal gate opened again: parked batches may append


class GuardedStore(_GuardedStore):
    """:class:`flk.impl.verifier.admission.GuardedStore` on the server's monotonic clock, which
    says in the log when the dedup store began to fail and when it answered again -- once
    each, not per request: ``log("warning", "dedup_store_failing", reason=...)`` at the first
    failed call after a success (the failure's reason), ``log("info", "dedup_store_recovered",
    down_s=..., failed_requests=..., refused_requests=..., breaker_opens=...)`` at the next
    call that succeeds (seconds since the first failure; requests of failed calls; requests
    the open breaker answered 503 without a call; how often it opened). Without them an
    operator saw 503s and no cause."""

    def __init__(self, store: Any, breaker: Any, monotonic: Callable[[], float] = time.monotonic,
                 log: Callable[..., None] | None = None) -> None:
        super().__init__(store, breaker, monotonic)
        self.log = log
        # while failing: [since, requests of failed calls, breaker_rejected and breaker.opens at the start]
        self._failing: list | None = None

    def call(self, fn: Any, items: list, *args: Any) -> list:
        try:
            results = super().call(fn, items, *args)
        except StoreUnavailable as exc:
            if self._failing is None:
                self._failing = [self.clock(), 0, self.breaker_rejected, self.breaker.opens]
                if self.log is not None:
                    self.log("warning", "dedup_store_failing", reason=str(exc)[:200],
                             detail="requests are answered 503 until it answers again")
            part = answered_part(exc, items)  # a shard down: its items alone failed
            self._failing[1] += len(items) if part is None else len(part[1])
            raise
        if self._failing is not None:
            since, failed, rejected, opens = self._failing
            self._failing = None
            if self.log is not None:
                self.log("info", "dedup_store_recovered", down_s=round(self.clock() - since, 3),
                         failed_requests=failed, refused_requests=self.breaker_rejected - rejected,
                         breaker_opens=self.breaker.opens - opens)
        return results


class LoggedWal:
    """The inbox WAL as the core's batches write it (``append_framed`` -- or ``append_many``
    on the pure path -- then one ``sync``):
    failures are logged (``log_error("wal_append_failed", reason=...)``, no payload) and
    re-raised; after :meth:`close` every append fails. ``wal()`` answers the worker's
    current log (a recovery reopens it)."""

    def __init__(self, wal: Callable[[], Any], log_error: Callable[..., None]) -> None:
        self.wal = wal
        self.log_error = log_error
        self.closed = False

    def append_many(self, payloads: list, roll: bool = True) -> int:
        return self._call("append_many", payloads, roll)

    def append_framed(self, data: bytes, count: int, roll: bool = True) -> int:
        """``count`` records already framed (the verifier's compiled ``frame_records``:
        the same bytes ``append_many`` would write), appended to the same log -- its
        checkpointer and shipper read them like any others; durable only after ``sync``."""
        return self._call("append_framed", data, count, roll)

    def sync(self) -> None:
        self._call("sync")

    def roll_if_full(self) -> None:
        self._call("roll_if_full")

    def note_answers(self, notes: list) -> None:
        self.wal().note_answers(notes)

    @property
    def active_full(self) -> bool:
        return bool(getattr(self.wal(), "active_full", False))

    def _call(self, name: str, *args: Any) -> Any:
        try:
            if self.closed:
                raise WalError("inbox WAL closed")
            return getattr(self.wal(), name)(*args)
        except (WalError, OSError) as exc:
            self.log_error("wal_append_failed", reason=type(exc).__name__)
            raise


class SealGate:
    """:attr:`BatchDriver.lock`: a lock (``acquire(blocking, timeout)``, ``release``, ``with``)
    granted only when no batch is between its WAL append and its answers; while it is
    held or wanted, batches wait to append (a seal or a recovery never waits behind a
    pipeline that keeps refilling). ``wake()`` is called when batches may append again."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._cond = threading.Condition()
        self._inflight = 0  # batches between their append and their answers
        self._wanted = 0  # acquire() calls waiting
        self._held = False
        self._wake = wake

    @property
    def inflight(self) -> int:
        return self._inflight

    def try_enter(self) -> bool:
        """(Batch thread.) A batch may append now (counted in flight until :meth:`leave`)."""
        with self._cond:
            if self._held or self._wanted:
                return False
            self._inflight += 1
            return True

    def leave(self) -> None:
        """(Batch thread.) A batch was answered."""
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._cond:
            self._wanted += 1
            try:
                free = lambda: not self._held and self._inflight == 0  # noqa: E731
                if not blocking:
                    ok = free()
                else:
                    ok = self._cond.wait_for(free, None if timeout is None or timeout < 0 else timeout)
                if ok:
                    self._held = True
            finally:
                self._wanted -= 1
            reopen = not ok and not self._held and self._wanted == 0
        if reopen:
            self._wake()
        return ok

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()
            reopen = self._wanted == 0
        if reopen:
            self._wake()

    def locked(self) -> bool:
        return self._held

    def __enter__(self) -> SealGate:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class _InFlight:
    """A batch between its WAL append and its answers (``appended``: when its append ended)."""

    __slots__ = ("batch", "loop", "core", "first", "appended")

    def __init__(self, batch: list, loop: asyncio.AbstractEventLoop, core: Any, first: int,
                 appended: float) -> None:
        self.batch, self.loop, self.core, self.first, self.appended = batch, loop, core, first, appended


#: where a submission's time in the driver goes (:attr:`BatchDriver.stages`, seconds summed over requests)
STAGES = ("wait", "handoff", "append", "sync", "finish", "answer")


class StageTimes:
    """Where the submissions' time in the batch driver went, summed over requests
    (``perf_counter`` seconds; two clock reads per stage per batch, none per request):

    * ``wait`` -- queued on the event loop until its batch started (the formation rule), or
      until the batch thread took it into the running batch (joined before the append);
    * ``handoff`` -- the batch's start until the batch thread took it (queue hop, seal gate);
    * ``append`` -- step 1 and the WAL append (:func:`flk.impl.verifier.core.append_batch`);
    * ``sync`` -- the append's end until a covering sync ended (the fsync, and any wait for
      the sync thread or for the batch before it);
    * ``finish`` -- steps 2-8 (:func:`flk.impl.verifier.core.finish_batch`: verify, store);
    * ``answer`` -- the answers' hand-off to the event loop until it set the futures.

    Of ``sync``, ``sync_wal`` is the part inside the covering ``wal.sync()`` call (the buffer's
    write and the fsync: the disk's latency under this load, beside the idle disk's of ``flk
    bench serve``'s probe); the rest is the wait for the sync thread or a core. ``wal_syncs``
    and ``wal_sync_s`` count the calls and their summed duration (per call, not per request).

    ``answer`` is written on the event loop; ``wait`` and ``requests`` on the event loop
    and on the batch thread, always under the queue's lock; ``wal_syncs`` and ``wal_sync_s``
    by the thread that syncs (the sync thread, or the batch thread at depth 1); the rest on
    the batch thread.
    How many batches started is the formation's
    count (:attr:`flk.impl.verifier.batching.BatchFormation.batches`), read, not kept twice."""

    __slots__ = ("formation", "requests", *STAGES, "sync_wal", "wal_syncs", "wal_sync_s")

    def __init__(self, formation: BatchFormation) -> None:
        self.formation = formation
        self.requests = 0
        for name in STAGES:
            setattr(self, name, 0.0)
        self.sync_wal = 0.0
        self.wal_syncs = 0
        self.wal_sync_s = 0.0

    def as_dict(self) -> dict:
        """Totals, the mean microseconds per request of each stage (``sync_wal_us``: the part
        of ``sync_us`` inside ``wal.sync()``), and the mean ``wal.sync()`` call (``wal_sync_call_us``)."""
        n, batches = max(1, self.requests), self.formation.batches
        return {"requests": self.requests, "batches": batches,
                "mean_batch": round(self.requests / max(1, batches), 2),
                **{f"{name}_us": round(getattr(self, name) * 1e6 / n, 1) for name in STAGES},
                "sync_wal_us": round(self.sync_wal * 1e6 / n, 1), "wal_syncs": self.wal_syncs,
                "wal_sync_call_us": round(self.wal_sync_s * 1e6 / max(1, self.wal_syncs), 1)}


class BatchDriver:
    """``await submit(body, tenant)``: the pipeline's ``Response`` of one request, run
    in a batch on this driver's threads (call :meth:`submit` on the event loop);
    :meth:`submit_then` passes it to a callback instead (the HTTP direct path).
    ``depth``: how many batches may be in flight at once (1: append, sync, verify,
    answer, then the next batch; 2: the next batch is appended and synced while one
    is verified). The server's default is 1 (``WAL_PIPELINE_DEPTH``): the depth the
    simulator's regions model, so that studies cover what ships by default."""

    def __init__(self, verifier: Any, wal: Any, store: GuardedStore, metrics: Any,
                 max_delay_s: float = 0.002, max_batch: int = 256, depth: int = 1, tee: Any = None) -> None:
        self.verifier = verifier
        self.wal = wal
        self.store = store
        self.metrics = metrics
        # tee: a second Emit sink (the SIEM's, which only queues in memory: no I/O on the batch thread)
        self.sink = metrics if tee is None else (lambda event: (metrics(event), tee(event)))
        self.tee = tee
        # the batch thread's events and latencies, counted once per batch step (one metrics lock
        # per batch, not three per request) before the batch's answers leave; a metrics object
        # without count_many / observe_latencies gets each event as it comes
        self._events: list = []
        self._observed: list = []
        if hasattr(metrics, "count_many") and hasattr(metrics, "observe_latencies"):
            observed = self._observed
            self._emit: Callable[[Any], Any] = self._events.append
            self._latency: Callable[[str, float], Any] = lambda label, seconds: observed.append((label, seconds))
        else:
            self._emit, self._latency = self.sink, metrics.observe_latency
        self.formation = BatchFormation(max_delay_s, max_batch, depth)  # the rule the simulator drives too
        self.lock = SealGate(lambda: self._jobs.put(_WAKE))  # the shipper's seal lock, the recovery's lock
        # the queue: appended by the event loop, taken by a starting batch (event loop) or joined
        # into the running one (batch thread, _join_queued), always under _qlock with the formation
        self._qlock = threading.Lock()
        self._pending: list[tuple[Request, Any]] = []  # (request, its future or submit_then callback)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # batches answered so far
        self.stages = StageTimes(self.formation)  # where the submissions' time went (read by the server's stop log)
        self._arrived: list[float] = []  # perf_counter() of each pending request's arrival
        # batch thread state
        self._parked: collections.deque = collections.deque()  # (batch, loop) waiting to append
        self._appended: collections.deque[_InFlight] = collections.deque()  # waiting for their sync, WAL order
        # sync thread state
        self._sync_cond = threading.Condition()
        self._unsynced = 0  # batches appended since the sync thread last looked
        self._sync_stop = False
        self._sync_thread: threading.Thread | None = None

    @property
    def syncs(self) -> int:
        """Inbox WAL syncs run so far (:attr:`StageTimes.wal_syncs`)."""
        return self.stages.wal_syncs

    @property
    def max_delay_s(self) -> float:
        return self.formation.max_delay_s

    @property
    def max_batch(self) -> int:
        return self.formation.max_batch

    @property
    def depth(self) -> int:
        return self.formation.depth

    def submit(self, body: bytes, tenant: str | None) -> asyncio.Future:
        """(Event loop.) A future of the request's ``Response``."""
        fut = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(RuntimeError("batch driver closed"))
            return fut
        self._enqueue(body, tenant, fut)
        return fut

    def submit_then(self, body: bytes, tenant: str | None,
                    then: Callable[[Any, BaseException | None], None]) -> None:
        """(Event loop.) :meth:`submit` without a future: ``then(response, None)``, or
        ``then(None, error)``, is called once when the batch is answered, on the loop that
        answers it -- the loop of the driver's submissions, so call this only from that loop
        (the server's worker has one; a future of :meth:`submit` may come from another) --
        or at once when the driver is closed. For a caller that only passes the answer on
        (the HTTP direct path): no future, no done-callback hop through the loop."""
        if self._closed:
            then(None, RuntimeError("batch driver closed"))
            return
        self._enqueue(body, tenant, then)

    def _enqueue(self, body: bytes, tenant: str | None, waiter: Any) -> None:
        """(Event loop.) Queue a request with its ``waiter`` (a future, or a ``then`` callback)."""
        loop = self._loop = asyncio.get_running_loop()
        formation = self.formation
        now = loop.time()  # one reading: uvloop's clock (whole milliseconds) may tick between two
        with self._qlock:
            self._pending.append((Request(body, tenant, _NO_HEADERS), waiter))
            self._arrived.append(_clock())
            formation.add(now)
            # with the timer armed the deadline stands (only a ready queue -- as many as the last
            # batch held -- moves it: due now); while ``depth`` batches run, the next one starts
            # when one of them is answered
            start = (self._timer is None or formation.ready) and not formation.busy
        if start:
            # judged at the arrival's time: a lone request is never due on its own arrival (it
            # waits for its timer), even when the clock's next millisecond began meanwhile
            self._schedule(now)

    def _schedule(self, now: float | None = None) -> None:
        """(Event loop; a batch may start.) Start a batch when one is due at ``now`` (the
        loop's time unless given), else arm the timer for the deadline."""
        formation, loop = self.formation, self._loop
        with self._qlock:  # the batch thread may take queued requests into its batch (_join_queued)
            deadline = formation.deadline()
            if deadline is None:
                return
            if formation.due(loop.time() if now is None else now):
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._start_batch()
            elif self._timer is None:
                self._timer = loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        """The timer armed for ``deadline`` fired: that time has come. The loop's clock may
        still read a little less -- uvloop's clock and timers count whole milliseconds, and
        a timer less than half a millisecond away runs at once -- so the batch is judged at
        ``deadline``, not at the clock (judged at the clock, the timer would re-arm itself
        and spin the loop until the clock's next millisecond)."""
        self._timer = None
        if not self.formation.busy:
            self._schedule(max(self._loop.time(), deadline))

    def _start_batch(self) -> None:
        """(Event loop, holding ``_qlock``.) Take the due batch and hand it to the batch thread."""
        batch, started = self._dequeue(self.formation.take(self._loop.time()))
        if self._thread is None:
            self._sync_thread = NamedThread(target=self._sync_loop, name="submit-sync", daemon=True)
            self._sync_thread.start()
            self._thread = NamedThread(target=self._serve, name="submit-batch", daemon=True)
            self._thread.start()
        self._jobs.put((batch, self._loop, started))

    # -- the batch thread ------------------------------------------------------------
    def _serve(self) -> None:
        """(Batch thread.) New batches are appended (or parked while the seal gate is shut),
        synced batches finished in WAL order; after ``_STOP`` everything in flight ends."""
        stopping = False
        while True:
            job = self._jobs.get()
            if job is _STOP:
                stopping = True
            elif job is _WAKE:
                pass
            elif job[0] == "synced":  # the sync thread's ("synced", count, (error, seconds))
                self._synced(job[1], *job[2])
            else:  # a new batch: (batch, loop, started)
                self._parked.append(job)
            self._append_parked()
            if stopping and not self._parked and not self._appended and self.lock.inflight == 0:
                break
        with self._sync_cond:
            self._sync_stop = True
            self._sync_cond.notify()

    def _append_parked(self) -> None:
        """(Batch thread.) Append the parked batches in order while the seal gate lets them;
        the segment rolls only when no batch is in flight (a full one waits for that)."""
        gate = self.lock
        while self._parked:
            if gate.inflight and self._segment_full():
                return  # roll between batches: after the ones in flight are answered
            if not gate.try_enter():
                return  # a seal or a recovery wants the lock: _WAKE when it is released
            batch, loop, started = self._parked.popleft()
            self._append(batch, loop, started)

    def _segment_full(self) -> bool:
        return bool(getattr(self.wal, "active_full", False))

    def _join_queued(self, batch: list) -> None:
        """(Batch thread, before the append.) What queued since the loop started ``batch`` joins
        it (:meth:`flk.impl.verifier.batching.BatchFormation.join`: only while it is the one
        running batch, up to ``max_batch``): the hand-off to this thread takes a fraction of a
        millisecond under load, and those requests would otherwise wait for the next batch."""
        with self._qlock:
            k = self.formation.join(len(self._pending))
            if k:
                batch.extend(self._dequeue(k)[0])

    def _dequeue(self, n: int) -> tuple[list, float]:
        """(Holding ``_qlock``.) The ``n`` oldest queued requests and the time they left the
        queue, their wait counted (``stages.wait`` and ``requests``)."""
        batch = self._pending[:n]
        del self._pending[:n]
        now, stages = _clock(), self.stages
        stages.wait += n * now - sum(self._arrived[:n])
        del self._arrived[:n]
        stages.requests += n
        return batch, now

    def _append(self, batch: list, loop: asyncio.AbstractEventLoop, started: float) -> None:
        """(Batch thread, inside the gate.) Step 1 and the WAL append of one batch."""
        wal, stages = self.wal, self.stages
        t0 = _clock()
        stages.handoff += (t0 - started) * len(batch)
        self._join_queued(batch)
        n = len(batch)
        try:
            if self.lock.inflight == 1 and hasattr(wal, "roll_if_full"):  # between batches
                with contextlib.suppress(WalError, OSError):  # a failed log answers the batch its 503
                    wal.roll_if_full()
            try:
                core, first, last = append_batch(self.verifier, [req for req, _ in batch], time.time(), wal,
                                                 sink=self._emit, latency=self._latency)
            finally:
                self._flush()
        except BaseException as exc:  # noqa: BLE001 -- every request of the batch gets it (500)
            self._answer(batch, loop, [], exc)
            return
        appended = _clock()
        stages.append += (appended - t0) * n
        if last < 0:  # nothing to sync: every request is answered already
            self._answer(batch, loop, core.responses, None)
            return
        inline = self.formation.depth == 1 and not self._appended  # nothing to overlap the fsync with
        self._appended.append(_InFlight(batch, loop, core, first, appended))
        if inline:  # the sync thread's step on this thread: two thread hand-offs fewer per batch
            self._synced(1, *self._sync())
            return
        with self._sync_cond:
            self._unsynced += 1
            self._sync_cond.notify()

    def _synced(self, count: int, error: BaseException | None, took: float = 0.0) -> None:
        """(Batch thread.) The ``count`` oldest appended batches were covered by a sync
        (``error``: it failed; ``took``: the seconds of its ``wal.sync()`` call): finish them in
        WAL order."""
        stages = self.stages
        for _ in range(count):
            job = self._appended.popleft()
            n, t0 = len(job.batch), _clock()
            stages.sync += (t0 - job.appended) * n
            stages.sync_wal += took * n
            try:
                try:
                    responses = finish_batch(job.core, job.first, self.store, self.wal, error is None)
                finally:
                    self._flush()
                failure = None
            except BaseException as exc:  # noqa: BLE001 -- every request of the batch gets it (500)
                responses, failure = [], exc
            stages.finish += (_clock() - t0) * n
            self._answer(job.batch, job.loop, responses, failure)

    def _flush(self) -> None:
        """(Batch thread.) Count the events and latencies of the step that just ran."""
        events, observed = self._events, self._observed
        try:
            if events:
                self.metrics.count_many(events)
                if self.tee is not None:
                    for event in events:
                        self.tee(event)
            if observed:
                self.metrics.observe_latencies(observed)
        finally:
            events.clear()
            observed.clear()

    def _answer(self, batch: list, loop: asyncio.AbstractEventLoop, responses: list,
                error: BaseException | None) -> None:
        """(Batch thread.) The batch leaves the gate; its answers go to the loop in one call."""
        self.lock.leave()
        try:
            loop.call_soon_threadsafe(self._done, batch, responses, error, _clock())
        except RuntimeError:  # the loop is closed: nobody waits for these answers
            pass

    # -- the sync thread ---------------------------------------------------------------
    def _sync_loop(self) -> None:
        """(Sync thread.) Sync whenever batches were appended; hand them back, covered."""
        cond = self._sync_cond
        while True:
            with cond:
                while self._unsynced == 0 and not self._sync_stop:
                    cond.wait()
                if self._unsynced == 0:
                    return
                count, self._unsynced = self._unsynced, 0
            self._jobs.put(("synced", count, self._sync()))  # covers every batch counted above

    def _sync(self) -> tuple[BaseException | None, float]:
        """(Sync thread, or the batch thread at depth 1.) One ``wal.sync()``: it covers every
        batch appended before this call; its failure (every batch it covered gets the WAL's
        503), and how long the call took (counted in :attr:`stages`)."""
        error: BaseException | None = None
        t0 = _clock()
        try:
            self.wal.sync()
        except BaseException as exc:  # noqa: BLE001 -- every batch it covered gets the WAL's 503
            error = exc
        took = _clock() - t0
        stages = self.stages
        stages.wal_syncs += 1
        stages.wal_sync_s += took
        return error, took

    def _done(self, batch: list, responses: list, error: BaseException | None, sent: float) -> None:
        """(Event loop.) Answer a batch; the next one starts if it is due. A future of
        another loop (a second loop used this driver, e.g. a test client's) is set there."""
        self.batches += 1
        self.stages.answer += (_clock() - sent) * len(batch)
        running = asyncio.get_running_loop()
        for i, (_, fut) in enumerate(batch):
            result = responses[i] if error is None else None
            if type(fut) is not _Future and not isinstance(fut, asyncio.Future):  # submit_then's
                _then(fut, result, error)
            elif fut.get_loop() is running:
                _set(fut, result, error)
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    fut.get_loop().call_soon_threadsafe(_set, fut, result, error)
        with self._qlock:  # the batch thread's join reads how many batches run
            self.formation.done()
        self._schedule()

    def close(self) -> None:
        """(Any thread, after the requests drained.) The batches in flight and queued
        finish, both threads stop; later submissions fail."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=30)
            self._sync_thread = None


_clock = time.perf_counter


_Future = asyncio.Future  # the C future of every loop this server runs (uvloop's included)


def _then(then: Callable[[Any, BaseException | None], None], result: Any, error: BaseException | None) -> None:
    """Pass a batch's answer to a :meth:`BatchDriver.submit_then` callback; what it raises is
    reported to the loop's exception handler (as a future's done-callback's would be), so the
    rest of the batch is still answered."""
    try:
        then(result, error)
    except Exception as exc:  # noqa: BLE001 -- one caller's failure never stops the batch's answers
        asyncio.get_running_loop().call_exception_handler(
            {"message": "batch driver answer callback failed", "exception": exc})


def _set(fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(result)
    else:
        fut.set_exception(error)
