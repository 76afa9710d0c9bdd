"""The submit path's batch driver: one worker thread runs the verification core
(:class:`flk.impl.verifier.core.VerifyBatch`, through :func:`~flk.impl.verifier.core.run_requests`)
per batch of requests.

Why this module exists: driving one pipeline generator per request from the event
loop costs three futures and three thread round trips per request (WAL fsync,
dedup read, dedup write) plus the generator and its effect objects. Here the loop
only queues ``(request, future)``; batches form under the rule of
:class:`flk.impl.verifier.batching.BatchFormation` (a batch starts ``max_delay_s``
after its oldest request, or at once when it holds ``max_batch``; at most one batch
runs at a time, what arrives meanwhile is the next batch) -- the same state machine
the simulator's regions drive under SimPy time -- and ONE thread runs each batch:
the core (:func:`flk.impl.verifier.core.serve_batch`) appends the batch's inbox WAL
records and syncs once (INV-WAL-FIRST: nothing is answered before that sync; a
failed append or sync fails every request of the batch with the WAL problem
response), reads and writes the dedup store in bulk (one ``get_many``, one
``put_many_if_absent``) and builds every answer. The batch's home answers
(:class:`flk.impl.storage.walformat.AnswerNote`) go to the WAL for the manifest of the
segment holding the records, so that they travel with the records to the other
regions; the segment rolls only between batches and :attr:`BatchDriver.lock` (held
for every batch) is the shipper's seal lock, so a sealed segment's manifest has
the answers of all its records. ONE ``call_soon_threadsafe`` per batch then sets
all the futures.

Every store access of the serving path is on this one thread (the in-memory
store needs no lock). :class:`GuardedStore` (the core's drivers' one breaker
wrapping, :class:`flk.impl.verifier.admission.GuardedStore`) keeps the circuit
breaker and the batch counters of the metrics; :class:`LoggedWal` logs
``wal_append_failed``. The core does step 1 (body and tenant-header limits, the
tenant's rate and quota) itself, so the per-tenant buckets are touched only here
too. :meth:`BatchDriver.close` lets the running batch finish, runs what is queued
and stops the thread; a WAL recovery takes :attr:`BatchDriver.lock` so that it
never runs beside a batch's append.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from ..storage.wal import WalError
from ..verifier.admission import GuardedStore as _GuardedStore
from ..verifier.batching import BatchFormation
from ..verifier.core import serve_batch
from ..verifier.pipeline import Request

_NO_HEADERS = MappingProxyType({})  # the submit route passes the tenant, not the headers
_STOP = object()


class GuardedStore(_GuardedStore):
    """:class:`flk.impl.verifier.admission.GuardedStore` on the server's monotonic clock."""

    def __init__(self, store: Any, breaker: Any, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(store, breaker, monotonic)


class LoggedWal:
    """The inbox WAL as the core's batches write it (``append_many`` then one ``sync``):
    failures are logged (``log_error("wal_append_failed", reason=...)``, no payload) and
    re-raised; after :meth:`close` every append fails. ``wal()`` answers the worker's
    current log (a recovery reopens it)."""

    def __init__(self, wal: Callable[[], Any], log_error: Callable[..., None]) -> None:
        self.wal = wal
        self.log_error = log_error
        self.closed = False

    def append_many(self, payloads: list, roll: bool = True) -> int:
        return self._call("append_many", payloads, roll)

    def sync(self) -> None:
        self._call("sync")

    def roll_if_full(self) -> None:
        self._call("roll_if_full")

    def note_answers(self, notes: list) -> None:
        self.wal().note_answers(notes)

    def _call(self, name: str, *args: Any) -> Any:
        try:
            if self.closed:
                raise WalError("inbox WAL closed")
            return getattr(self.wal(), name)(*args)
        except (WalError, OSError) as exc:
            self.log_error("wal_append_failed", reason=type(exc).__name__)
            raise


class BatchDriver:
    """``await submit(body, tenant)``: the pipeline's ``Response`` of one request, run
    in a batch on this driver's thread (call :meth:`submit` on the event loop)."""

    def __init__(self, verifier: Any, wal: Any, store: GuardedStore, metrics: Any,
                 max_delay_s: float = 0.002, max_batch: int = 256) -> None:
        self.verifier = verifier
        self.wal = wal
        self.store = store
        self.metrics = metrics
        self.formation = BatchFormation(max_delay_s, max_batch)  # the rule the simulator drives too
        self.lock = threading.Lock()  # held for every batch; the shipper's seal lock
        self._pending: list[tuple[Request, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # batches answered so far

    @property
    def max_delay_s(self) -> float:
        return self.formation.max_delay_s

    @property
    def max_batch(self) -> int:
        return self.formation.max_batch

    def submit(self, body: bytes, tenant: str | None) -> asyncio.Future:
        """(Event loop.) A future of the request's ``Response``."""
        loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._closed:
            fut.set_exception(RuntimeError("batch driver closed"))
            return fut
        self._pending.append((Request(body, tenant, _NO_HEADERS), fut))
        self.formation.add(loop.time())
        if not self.formation.busy:
            self._schedule()
        return fut

    def _schedule(self) -> None:
        """(Event loop; no batch running.) Start a batch when one is due, else arm the timer."""
        formation, loop = self.formation, self._loop
        deadline = formation.deadline()
        if deadline is None:
            return
        if formation.due(loop.time()):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._start_batch()
        elif self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.formation.busy:
            self._schedule()

    def _start_batch(self) -> None:
        n = self.formation.take(self._loop.time())
        batch = self._pending[:n]
        del self._pending[:n]
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="submit-batch", daemon=True)
            self._thread.start()
        self._jobs.put((batch, self._loop))

    def _serve(self) -> None:
        """(Batch thread.) One batch after the other, each under :attr:`lock`."""
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            with self.lock:
                self._run(*job)

    def _run(self, batch: list, loop: asyncio.AbstractEventLoop) -> None:
        """``run_requests`` for one batch; the answers go back to the loop in one call."""
        metrics = self.metrics
        error: BaseException | None = None
        responses: list = []
        try:
            responses = serve_batch(self.verifier, [req for req, _ in batch], time.time(), self.wal,
                                    self.store, sink=metrics, latency=metrics.observe_latency)
        except BaseException as exc:  # noqa: BLE001 -- every request of the batch gets it (500)
            error = exc
        try:
            loop.call_soon_threadsafe(self._done, batch, responses, error)
        except RuntimeError:  # the loop is closed: nobody waits for these answers
            pass

    def _done(self, batch: list, responses: list, error: BaseException | None) -> None:
        """(Event loop.) Answer a batch; the next one starts if it is due. A future of
        another loop (a second loop used this driver, e.g. a test client's) is set there."""
        self.batches += 1
        running = asyncio.get_running_loop()
        for i, (_, fut) in enumerate(batch):
            result = responses[i] if error is None else None
            if fut.get_loop() is running:
                _set(fut, result, error)
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    fut.get_loop().call_soon_threadsafe(_set, fut, result, error)
        self.formation.done()
        self._schedule()

    def close(self) -> None:
        """(Any thread, after the requests drained.) The running and queued batches
        finish, the thread stops; later submissions fail."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None


def _set(fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(result)
    else:
        fut.set_exception(error)
