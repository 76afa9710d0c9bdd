"""Batched, non-blocking dedup calls for the asyncio driver.

Why this module exists: a dedup store call blocks (SQLite takes a file lock,
Redis and Postgres a round trip). Calling it on the event loop would stall
every connection; calling it once per request on a thread pool costs one
transaction per request. Instead, dedup reads and writes that arrive while a
batch is running are collected and sent as the *next* batch
(``get_many`` / ``put_many_if_absent``: one transaction or pipeline), run on a
worker thread. Under light load a batch has one item (no added latency); under
heavy load batches grow and the per-request cost falls.

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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from ..dedup import StoredOutcome, StoreUnavailable
from ..verifier.admission import CircuitBreaker


class _Queue:
    def __init__(self, name: str, run: Callable[[list[Any], float], list[Any]], owner: StoreBatcher) -> None:
        self.name = name
        self.run = run
        self.owner = owner
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.busy = False

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
        if not self.busy:
            self.busy = True
            loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch = self.pending[: self.owner.max_batch]
                del self.pending[: len(batch)]
                items = [b[0] for b in batch]
                now = self.owner.clock()
                breaker, elapsed = self.owner.breaker, self.owner.monotonic
                error: BaseException | None = None
                results: list[Any] = []
                if not breaker.allow(elapsed()):
                    self.owner.breaker_rejected += len(items)
                    error = StoreUnavailable(f"dedup store circuit open (retry in {breaker.retry_after(elapsed())} s)")
                else:
                    try:
                        results = await loop.run_in_executor(self.owner.executor, self.run, items, now)
                        if len(results) != len(items):
                            raise StoreUnavailable("dedup store returned a short batch")
                        breaker.on_success(elapsed())
                    except StoreUnavailable as exc:
                        breaker.on_failure(elapsed())
                        error = exc
                    except Exception as exc:  # noqa: BLE001 -- any store failure fails closed
                        breaker.on_failure(elapsed())
                        error = StoreUnavailable(f"dedup store failed: {type(exc).__name__}")
                self.owner.batches += 1
                self.owner.batched_items += len(items)
                for i, (_, fut) in enumerate(batch):
                    if fut.done():
                        continue
                    if error is not None:
                        fut.set_exception(error)
                    else:
                        fut.set_result(results[i])
        finally:
            self.busy = False


class StoreBatcher:
    """``await get(...)`` / ``await put(...)`` on a blocking :class:`DedupStore`."""

    def __init__(
        self,
        store: Any,
        executor: Executor,
        breaker: CircuitBreaker,
        clock: Callable[[], float] = time.time,
        max_batch: int = 256,
        monotonic: Callable[[], float] = time.monotonic,
        ttl_s: float | None = None,
        inline: bool = False,
    ) -> None:
        self.store = store
        self.executor = executor
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

    async def get(self, tenant: str, pcs_id: str) -> StoredOutcome | None:
        return await self._gets.submit((tenant, pcs_id))

    async def put(self, tenant: str, pcs_id: str, outcome: StoredOutcome) -> tuple[bool, StoredOutcome]:
        return await self._puts.submit((tenant, pcs_id, outcome))
