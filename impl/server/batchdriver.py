"""The submit path's batch driver: one worker thread runs the verify pipeline's
:func:`flk.impl.verifier.pipeline.run_requests` per batch of requests.

Why this module exists: driving one pipeline generator per request from the event
loop costs three futures and three thread round trips per request (WAL fsync,
dedup read, dedup write) plus the generator and its effect objects. Here the loop
only queues ``(request, future)``; batches form under the group-commit rule (a
batch starts ``max_delay_s`` after its oldest request, or at once when it holds
``max_batch``; at most one batch runs at a time, what arrives meanwhile is the
next batch), and ONE thread runs each batch: ``run_requests`` appends the batch's
inbox WAL records and syncs once (INV-WAL-FIRST: nothing is answered before that
sync; a failed append or sync fails every request of the batch with the WAL
problem response), reads and writes the dedup store in bulk (one ``get_many``,
one ``put_many_if_absent``) and builds every answer. ONE ``call_soon_threadsafe``
per batch then sets all the futures.

Every store access of the serving path is on this one thread (the in-memory
store needs no lock). :class:`GuardedStore` keeps the circuit breaker and the
batch counters of the metrics; :class:`LoggedWal` logs ``wal_append_failed``.
``run_requests`` does step 1 (body and tenant-header limits, the tenant's rate
and quota) itself, so the per-tenant buckets are touched only here too.
:meth:`BatchDriver.close` lets the running batch finish, runs what is queued and
stops the thread; :attr:`BatchDriver.lock` is held for every batch (a WAL
recovery takes it so that it never runs beside a batch's append).
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

from ..dedup import StoreUnavailable
from ..storage.wal import WalError
from ..verifier.pipeline import Request, run_requests

_NO_HEADERS = MappingProxyType({})  # the submit route passes the tenant, not the headers
_STOP = object()


class GuardedStore:
    """The dedup store behind the circuit breaker, as ``run_requests`` calls it (batch
    thread): an open breaker answers ``StoreUnavailable`` at once, any store failure is
    ``StoreUnavailable``; ``batches`` / ``batched_items`` / ``breaker_rejected`` for /metrics."""

    def __init__(self, store: Any, breaker: Any, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.breaker = breaker
        self.monotonic = monotonic  # the breaker's time: a wall-clock step must not open or close it
        self.batches = 0
        self.batched_items = 0
        self.breaker_rejected = 0  # items answered 503 without calling the store

    def get_many(self, keys: list, now: float) -> list:
        return self._call(self.store.get_many, keys, now)

    def put_many_if_absent(self, items: list, now: float, ttl_s: float | None = None) -> list:
        return self._call(self.store.put_many_if_absent, items, now, ttl_s)

    def _call(self, fn: Callable, items: list, *args: Any) -> list:
        breaker = self.breaker
        self.batches += 1
        self.batched_items += len(items)
        if not breaker.allow(self.monotonic()):
            self.breaker_rejected += len(items)
            raise StoreUnavailable(f"dedup store circuit open (retry in {breaker.retry_after(self.monotonic())} s)")
        try:
            results = list(fn(items, *args))
            if len(results) != len(items):
                raise StoreUnavailable("dedup store returned a short batch")
        except Exception as exc:  # noqa: BLE001 -- any store failure fails closed
            breaker.on_failure(self.monotonic())
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"dedup store failed: {type(exc).__name__}") from None
        breaker.on_success(self.monotonic())
        return results


class LoggedWal:
    """The inbox WAL as ``run_requests`` writes it (``append_many`` then one ``sync``):
    failures are logged (``wal_append_failed``, no payload) and re-raised; after
    :meth:`close` every append fails."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.closed = False

    def append_many(self, payloads: list) -> int:
        return self._call("append_many", payloads)

    def sync(self) -> None:
        self._call("sync")

    def _call(self, name: str, *args: Any) -> Any:
        try:
            if self.closed:
                raise WalError("inbox WAL closed")
            return getattr(self.server.wal, name)(*args)
        except (WalError, OSError) as exc:
            self.server.log.error("wal_append_failed", reason=type(exc).__name__)
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
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self.lock = threading.Lock()  # held for every batch
        self._pending: list[tuple[Request, asyncio.Future]] = []
        self._oldest = 0.0  # loop time of the oldest pending request
        self._busy = False  # a batch runs on the thread
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # batches run so far

    def submit(self, body: bytes, tenant: str | None) -> asyncio.Future:
        """(Event loop.) A future of the request's ``Response``."""
        loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._closed:
            fut.set_exception(RuntimeError("batch driver closed"))
            return fut
        pending = self._pending
        pending.append((Request(body, tenant, _NO_HEADERS), fut))
        if len(pending) == 1:
            self._oldest = loop.time()
        if not self._busy:
            self._schedule()
        return fut

    def _schedule(self) -> None:
        """(Event loop; no batch running.) Start a batch when one is due, else arm the timer."""
        pending = self._pending
        if not pending:
            return
        loop = self._loop
        deadline = self._oldest + self.max_delay_s
        if len(pending) >= self.max_batch or deadline <= loop.time():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._start_batch()
        elif self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._busy:
            self._schedule()

    def _start_batch(self) -> None:
        batch = self._pending[: self.max_batch]
        del self._pending[: len(batch)]
        if self._pending:
            self._oldest = self._loop.time() - self.max_delay_s  # the rest is due when this batch ends
        self._busy = True
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
            responses = run_requests(self.verifier, [req for req, _ in batch], time.time(), self.wal,
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
        self._busy = False
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
