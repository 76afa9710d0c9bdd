"""The inbox WAL's group commit, driven from the event loop: one append per loop
iteration, one thread hand-off per fsync.

Why this module exists: a request may continue only once its inbox WAL record
is durable (INV-WAL-FIRST), and an fsync per request would cost a disk flush
each. The event loop therefore collects the records of one loop iteration and
appends them together (``SegmentedLog.append_many``: one lock round), and
decides itself when to sync with the pure
:class:`flk.impl.storage.groupcommit.GroupCommit` (the one rule of group
commit: a sync starts ``max_delay_s`` after the oldest uncovered record, or at
once with a full batch; at most one at a time; a waiter is released only after
a sync that covers its record; a failed sync fails everyone still waiting).
Only the blocking ``log.sync()`` runs elsewhere: on this waiter's own sync
thread, which gets a job through a ``SimpleQueue`` and reports back with one
``call_soon_threadsafe`` -- per *sync*, not per record or per loop iteration
(no condition variable, no lock round per append, no thread wake-up per group
of the loop). The delay is a loop timer.

Records are appended in arrival order; durability is a prefix of the log, so
a sync that leaves ``log.durable_index`` above a group's last record releases
the whole group. A failed append fails every request of its group; a failed
sync fails every waiter not yet durable and every later wait (the log is not
trusted again until :class:`flk.impl.server.app.Server` recovers it and builds
a new waiter). :meth:`close` (from any thread) runs a last sync, releases what
it covers and fails the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any

from ..storage.groupcommit import DEFAULT_MAX_BATCH, Closed, GroupCommit, Release
from ..storage.wal import WalError

_STOP = object()  # the sync thread's last job: one more sync, then end


class WalWaiter:
    def __init__(self, log: Any, max_delay_s: float = 0.002, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.log = log
        self._machine = GroupCommit(max_delay_s, max_batch, durable=log.durable_index)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: list[tuple[bytes, asyncio.Future]] = []  # appends of this loop iteration
        self._timer: asyncio.TimerHandle | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.appends = 0  # append_many calls (groups) so far
        self.records = 0  # records appended so far

    @property
    def syncs(self) -> int:
        """Syncs that made records durable so far."""
        return self._machine.syncs

    def append(self, payload: bytes) -> asyncio.Future:
        """(Event loop.) Append ``payload``: a future of its index, set once it is
        durable (a future, not a coroutine: the driver awaits it directly)."""
        loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        batch = self._batch
        batch.append((payload, fut))
        if len(batch) == 1:
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        """(Event loop.) Append the collected records as one group and wait for it."""
        batch, self._batch = self._batch, []
        try:
            if self._closed:
                raise WalError("group commit closed")
            first = self.log.append_many([payload for payload, _ in batch])
        except Exception as exc:  # noqa: BLE001 -- WalError/OSError: every request of the group gets it
            self._settle([Release([(fut, -1) for _, fut in batch], -1, exc)])
            return
        self.appends += 1
        self.records += len(batch)
        last = first + len(batch) - 1
        now = self._loop.time()
        machine = self._machine
        machine.append(last, now)
        release = machine.wait(last, [(fut, first + i) for i, (_, fut) in enumerate(batch)], now)
        if release is not None:  # durable already, or the log failed earlier
            self._settle([release])
        else:
            self._schedule(now)

    def _schedule(self, now: float) -> None:
        """(Event loop.) Start a sync when one is due, else be woken when it will be."""
        deadline = None if self._closed else self._machine.next_deadline()
        if deadline is None:  # a sync runs (its end calls back here), nothing uncovered, or failed
            return
        if deadline <= now:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._machine.start_sync(now)
            if self._thread is None:
                self._thread = threading.Thread(target=self._sync_thread, name="wal-group-commit", daemon=True)
                self._thread.start()
            self._jobs.put(self._loop)  # the loop to report the sync's end to
        elif self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule(self._loop.time())

    def _sync_thread(self) -> None:
        """(Sync thread.) One ``log.sync()`` per job; the outcome goes back to the job's loop."""
        while True:
            job = self._jobs.get()
            loop = self._loop if job is _STOP else job
            error: BaseException | None = None
            try:
                self.log.sync()
            except BaseException as exc:  # noqa: BLE001 -- handed to every waiter
                error = exc if isinstance(exc, (WalError, OSError)) else WalError(f"group commit failed: {exc}")
            try:
                loop.call_soon_threadsafe(self._synced, error)
            except RuntimeError:  # that loop is closed: nobody there waits for these answers
                pass
            if job is _STOP:
                return

    def _synced(self, error: BaseException | None) -> None:
        """(Event loop.) A sync ended: release what is durable now, fail the rest on error."""
        now = self._loop.time()
        machine = self._machine
        released = machine.synced(self.log.durable_index, now)
        if error is not None:
            released += machine.sync_failed(error, now)
        elif self._closed:
            released += machine.close()
        self._settle(released)
        if not self._closed:
            self._schedule(now)

    def close(self) -> None:
        """(Any thread; the loop keeps running.) A last sync: what it covers is
        released, whoever still waits fails; later appends fail."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout=30)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        error: BaseException | None = None
        try:
            self.log.sync()
        except (WalError, OSError) as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(self._synced, error)
        except RuntimeError:
            pass

    @staticmethod
    def _settle(releases: list[Release]) -> None:
        """(Event loop.) Set the released futures; one of another loop (a second loop
        used this waiter, e.g. a test client's) is set in its own loop."""
        running = asyncio.get_running_loop()
        for release in releases:
            error = release.error
            if isinstance(error, Closed):
                error = WalError("group commit closed before the record was durable")
            for fut, index in release.waiter:
                if fut.get_loop() is running:
                    _set(fut, index, error)
                else:
                    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                        fut.get_loop().call_soon_threadsafe(_set, fut, index, error)


def _set(fut: asyncio.Future, index: int, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(index)
    else:
        fut.set_exception(error)
