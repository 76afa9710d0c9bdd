"""Batched, non-blocking dedup calls for the asyncio driver.

Why this module exists: a dedup store call blocks (SQLite takes a file lock,
Redis and Postgres a round trip). Calling it on the event loop would stall
every connection; calling it once per request on a thread pool costs one
transaction per request. Instead, dedup reads and writes that arrive while a
batch is running are collected and sent as the *next* batch
(``get_many`` / ``put_many_if_absent``: one transaction or pipeline), run on a
thread. Under light load a batch has one item (no added latency); under heavy
load batches grow and the per-request cost falls. Reads and writes each have
their own long-lived thread: a batch goes there through a ``SimpleQueue`` and
comes back with one ``call_soon_threadsafe`` -- a thread pool's futures
(``run_in_executor``: a ``concurrent.futures.Future``, its condition variable,
an asyncio future chained to it and a task per drain) cost more than the
batch's own transaction. :meth:`StoreBatcher.close` stops the threads.

Semantics are exactly the per-item calls in arrival order: the stores' batch
forms guarantee that a later item sees an earlier item's write, so
first-write-wins (INV-FWW) is unchanged.

The in-memory store (``DEDUP_BACKEND=memory``) does no I/O and is called
inline on the event loop instead (``inline=True``).

Each store sits behind a :class:`~flk.impl.verifier.admission.CircuitBreaker`:
a batch on an open breaker fails at once with ``StoreUnavailable`` (503 fast),
and the first batch after ``open_s`` is the half-open probe.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..dedup import StoredOutcome, StoreUnavailable
from ..verifier.admission import CircuitBreaker


class _Queue:
    """One kind of store call (gets or puts): at most one batch in flight, run on this
    queue's own thread; what arrives meanwhile is the next batch."""

    def __init__(self, name: str, run: Callable[[list[Any], float], list[Any]], owner: StoreBatcher) -> None:
        self.name = name
        self.run = run
        self.owner = owner
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.busy = False
        self._jobs: queue.SimpleQueue | None = None  # to the thread: (batch, now, loop) or None = stop
        self._thread: threading.Thread | None = None

    def submit(self, item: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.owner.inline:  # an in-process store does no I/O: no thread hop
            try:
                fut.set_result(self.run([item], self.owner.clock())[0])
            except StoreUnavailable as exc:
                fut.set_exception(exc)
            return fut
        self.pending.append((item, fut))
        if not self.busy:  # the batch goes after this loop iteration: what else arrives in it joins
            self.busy = True
            loop.call_soon(self._next, loop)
        return fut

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Event loop.) Send the pending items as one batch, unless the breaker is open."""
        owner = self.owner
        while self.pending:
            batch = self.pending[: owner.max_batch]
            del self.pending[: len(batch)]
            breaker, elapsed = owner.breaker, owner.monotonic
            if breaker.allow(elapsed()):
                self.busy = True
                if self._thread is None:
                    self._start()
                self._jobs.put((batch, owner.clock(), loop))
                return
            owner.breaker_rejected += len(batch)
            self._settle(batch, [], StoreUnavailable(
                f"dedup store circuit open (retry in {breaker.retry_after(elapsed())} s)"))
        self.busy = False

    def _start(self) -> None:
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"dedup-{self.name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """(This queue's thread.) Run batches; hand each result back to the event loop."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, now, loop = job
            error: BaseException | None = None
            results: list[Any] = []
            try:
                results = self.run([b[0] for b in batch], now)
                if len(results) != len(batch):
                    raise StoreUnavailable("dedup store returned a short batch")
            except StoreUnavailable as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 -- any store failure fails closed
                error = StoreUnavailable(f"dedup store failed: {type(exc).__name__}")
            try:
                loop.call_soon_threadsafe(self._done, batch, results, error, loop)
            except RuntimeError:  # the loop is closed: nobody waits for these answers
                return

    def _done(self, batch: list, results: list, error: BaseException | None, loop) -> None:
        """(Event loop.) A batch came back: breaker bookkeeping, answers, the next batch."""
        owner = self.owner
        if error is None:
            owner.breaker.on_success(owner.monotonic())
        else:
            owner.breaker.on_failure(owner.monotonic())
        self._settle(batch, results, error)
        self._next(loop)

    def _settle(self, batch: list, results: list, error: BaseException | None) -> None:
        self.owner.batches += 1
        self.owner.batched_items += len(batch)
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10)
            self._thread = None


class StoreBatcher:
    """``await get(...)`` / ``await put(...)`` on a blocking :class:`DedupStore` (both
    return an asyncio future; call them on the event loop)."""

    def __init__(
        self,
        store: Any,
        breaker: CircuitBreaker,
        clock: Callable[[], float] = time.time,
        max_batch: int = 256,
        monotonic: Callable[[], float] = time.monotonic,
        ttl_s: float | None = None,
        inline: bool = False,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self.clock = clock  # wall time: the store's TTLs
        self.monotonic = monotonic  # the breaker's time: a wall-clock step must not open or close it
        self.max_batch = max_batch
        self.ttl_s = ttl_s
        self.inline = inline  # call the store on the event loop (only for the in-memory store)
        self.batches = 0
        self.batched_items = 0
        self.breaker_rejected = 0  # items answered 503 without calling the store
        self._gets = _Queue("get", self._run_gets, self)
        self._puts = _Queue("put", self._run_puts, self)

    def _run_gets(self, keys: Sequence[tuple[str, str]], now: float) -> list[StoredOutcome | None]:
        return list(self.store.get_many(list(keys), now))

    def _run_puts(self, items: Sequence[tuple[str, str, StoredOutcome]], now: float) -> list[tuple[bool, StoredOutcome]]:
        return list(self.store.put_many_if_absent(list(items), now, self.ttl_s))

    def get(self, tenant: str, pcs_id: str) -> asyncio.Future:
        """``await get(...)``: the stored outcome or None (a future, not a coroutine:
        the driver awaits it without one more frame per request)."""
        return self._gets.submit((tenant, pcs_id))

    def put(self, tenant: str, pcs_id: str, outcome: StoredOutcome) -> asyncio.Future:
        """``await put(...)``: ``(won, winner)`` of ``put_if_absent``."""
        return self._puts.submit((tenant, pcs_id, outcome))

    def close(self) -> None:
        """Stop the batch threads (after the in-flight batches; before the store closes)."""
        self._gets.close()
        self._puts.close()
