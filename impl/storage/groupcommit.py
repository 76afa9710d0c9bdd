"""Group commit as a pure state machine: when to fsync, and whom a sync releases.

Why this module exists: the rule "a waiter is released only after a sync that
covers its record, every waiter exactly once, and a failed sync fails everyone
still waiting" used to be coded three times (the WAL's commit thread, the
server's asyncio waiter and the simulator's region). It now lives here, once,
with no threads, no clock and no I/O; time (``now``, seconds, non-decreasing)
is passed in. The drivers carry out the effects:

* :class:`flk.impl.storage.groupcommitter.GroupCommitter` -- a thread that sleeps until
  :meth:`GroupCommit.next_deadline`, calls ``log.sync()`` and wakes waiters;
* ``flk.sim.region.Region`` -- the simulated disk under SimPy time.

(The server's submit path, :mod:`flk.impl.server.batchdriver`, needs no waiters: one
thread appends a batch's records and syncs them before it answers any of them.)

Theory of operation
-------------------
Records have consecutive indices ``0, 1, 2, ...``; ``durable`` means "every
record with an index below this is durable" (``SegmentedLog.durable_index``).
A record is *uncovered* while no sync has started since it was appended. A
sync should start at :meth:`next_deadline`: at once when ``max_batch``
uncovered records wait, else ``max_delay_s`` after the oldest uncovered
record was appended (0: at once -- batching then comes from the sync's own
duration). At most one sync runs at a time; records appended meanwhile form
the next batch.

======================  ==============================================  =====================
event                   condition                                       effect
======================  ==============================================  =====================
``append(i, now)``      first uncovered record                          oldest := now
``wait(i, w, now)``     ``i < durable``                                 released at once (ok)
``wait(i, w, now)``     failed / closed                                 released at once (error)
``wait(i, w, now)``     otherwise                                       queued
``start_sync(now)``     (the driver began a sync)                       all appended covered
``synced(d, now)``      ``d > durable`` (also ``durable_advanced``)     release queued ``i < d``
``sync_failed(e, now)``                                                 release all (error e),
                                                                        later waits fail
``close()``                                                             release all (CLOSED)
======================  ==============================================  =====================
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import NamedTuple

DEFAULT_MAX_BATCH = 4096  # records that start a sync without waiting for the delay


class Closed(Exception):
    """The group commit was closed before the record became durable."""


CLOSED = Closed("group commit closed before the record was durable")


class Release(NamedTuple):
    """One waiter to settle: ``error`` is None when its record is durable."""

    waiter: object
    index: int
    error: BaseException | None


class GroupCommit:
    """The state of one log's group commit (see the module docstring)."""

    def __init__(self, max_delay_s: float = 0.002, max_batch: int = DEFAULT_MAX_BATCH,
                 durable: int = 0) -> None:
        if not max_delay_s >= 0 or math.isinf(max_delay_s) or max_batch < 1:
            raise ValueError("group commit needs a finite max_delay_s >= 0 and max_batch >= 1")
        self.max_delay_s = float(max_delay_s)
        self.max_batch = int(max_batch)
        self.durable = durable  # every index below is durable
        self.appended = durable  # every index below was appended
        self.covered = durable  # every index below is covered by a started sync
        # (last index, when appended) of each append not yet covered, oldest first
        self._uncovered_appends: deque[tuple[int, float]] = deque()
        self.syncing = False
        self.failure: BaseException | None = None
        self.syncs = 0
        self._waiters: list[tuple[int, int, object]] = []  # heap of (index, arrival, waiter)
        self._arrivals = 0

    # -- producer side --------------------------------------------------------------
    def append(self, index: int, now: float) -> bool:
        """Record ``index`` (and every index below) was appended at ``now``.
        Returns True when the deadline moved earlier (a sleeping driver should wake)."""
        if index < self.appended:
            return False
        first = self.covered == self.appended
        self.appended = index + 1
        self._uncovered_appends.append((index, now))
        return first or self.uncovered() >= self.max_batch

    @property
    def oldest_uncovered_at(self) -> float | None:
        """When the oldest record no started sync covers was appended."""
        return self._uncovered_appends[0][1] if self._uncovered_appends else None

    def uncovered(self) -> int:
        """Records appended but not covered by a started sync."""
        return self.appended - self.covered

    def wait(self, index: int, waiter: object, now: float) -> Release | None:
        """Queue ``waiter`` for record ``index``; returns its release at once when
        the outcome is already known (durable, failed or closed), else None."""
        if index < self.durable:
            return Release(waiter, index, None)
        if self.failure is not None:
            return Release(waiter, index, self.failure)
        self._arrivals += 1  # (a record not appended yet waits for its append and a sync after it)
        heapq.heappush(self._waiters, (index, self._arrivals, waiter))
        return None

    def waiting(self) -> int:
        return len(self._waiters)

    # -- the syncing side -------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When the next sync should start: None while one runs, after a failure
        or when nothing is uncovered; ``-inf`` when a full batch waits."""
        if self.syncing or self.failure is not None or self.uncovered() == 0:
            return None
        if self.uncovered() >= self.max_batch:
            return -math.inf
        return self.oldest_uncovered_at + self.max_delay_s

    def due(self, now: float) -> bool:
        deadline = self.next_deadline()
        return deadline is not None and now >= deadline

    def start_sync(self, now: float) -> int:
        """The driver begins a sync now; returns the index it covers up to (exclusive)."""
        self.syncing = True
        self._cover(self.appended)
        return self.covered

    def _cover(self, index: int) -> None:
        self.covered = max(self.covered, index)
        appends = self._uncovered_appends
        while appends and appends[0][0] < self.covered:
            appends.popleft()

    def synced(self, durable: int, now: float) -> list[Release]:
        """The driver's sync finished; ``durable`` is the log's durable index now."""
        self.syncing = False
        return self.durable_advanced(durable, now)

    def durable_advanced(self, durable: int, now: float) -> list[Release]:
        """Records below ``durable`` are durable (a sync, or a seal or roll by
        someone else): release whoever that covers. Monotone and idempotent."""
        if durable > self.durable:
            self.syncs += 1
            self.durable = durable
            self.appended = max(self.appended, durable)
            self._cover(durable)
        out: list[Release] = []
        while self._waiters and self._waiters[0][0] < self.durable:
            index, _, waiter = heapq.heappop(self._waiters)
            out.append(Release(waiter, index, None))
        return out

    def sync_failed(self, error: BaseException, now: float) -> list[Release]:
        """The sync failed: every waiter not yet durable fails with ``error``, and
        so will every later wait (a log whose fsync failed is not trusted again)."""
        self.syncing = False
        self.failure = error
        return self._release_all(error)

    def close(self) -> list[Release]:
        """Nobody will sync again: release whoever still waits with :data:`CLOSED`."""
        if self.failure is None:
            self.failure = CLOSED
        return self._release_all(self.failure)

    def _release_all(self, error: BaseException) -> list[Release]:
        out = [Release(waiter, index, error) for index, _, waiter in sorted(self._waiters)]
        self._waiters = []
        return out
