"""The group-commit driver of the WAL: a thread that fsyncs batches of appends.

Why this module exists: an fsync per record would bound the log at the disk's
fsync rate; the agent outbox (:mod:`flk.impl.agent.outbox`, ``durability="group"``)
appends from many threads and waits until its record is durable. When to sync
and whom a sync releases is the pure state machine
:class:`flk.impl.storage.groupcommit.GroupCommit`; :class:`GroupCommitter`
carries it out over a :class:`flk.impl.storage.wal.SegmentedLog` with one
thread, a condition variable and a clock (the only module of the WAL that
starts a thread or reads the clock). The server's submit path does not use it:
it syncs its own batches (:mod:`flk.impl.server.batchdriver`).
"""

from __future__ import annotations

import threading
import time

from .groupcommit import DEFAULT_MAX_BATCH, Closed, GroupCommit, Release
from .threads import NamedThread
from .wal import SegmentedLog
from .walformat import WalError

__all__ = ["GroupCommitter"]


class GroupCommitter:
    """A thread that fsyncs batches of appends and wakes whoever waits.

    When to sync and whom a sync releases is decided by the pure
    :class:`flk.impl.storage.groupcommit.GroupCommit` (max delay, max batch,
    release only after a covering fsync, failure fails everyone); this class
    carries it out with one thread, a condition variable and ``clock`` (the
    wall clock by default).
    """

    def __init__(self, log: SegmentedLog, max_delay_s: float = 0.002, max_batch: int = DEFAULT_MAX_BATCH,
                 clock=time.monotonic) -> None:
        if max_delay_s < 0 or max_batch < 1:
            raise WalError("max_delay_s must be >= 0 and max_batch >= 1")
        self.log = log
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self._clock = clock
        self._cond = threading.Condition()
        self._machine = GroupCommit(max_delay_s, max_batch, durable=log.durable_index)
        self._machine.append(log.next_index - 1, clock())
        self._stop = False  # close() asked the thread to finish (after a last sync)
        self._finished = False  # the thread has ended: nobody will sync for waiters
        self._error: BaseException | None = None
        self.syncs = 0  # syncs this committer ran
        log.add_durable_listener(self._durable_advanced)
        self._thread = NamedThread(target=self._run, name="wal-group-commit", daemon=True)
        self._thread.start()

    # -- producer side ------------------------------------------------------------
    def append(self, payload: bytes) -> int:
        """Append (not yet durable) and nudge the commit thread."""
        idx = self.log.append(payload)
        self._kick(idx)
        return idx

    def append_many(self, payloads: list[bytes]) -> int:
        first = self.log.append_many(payloads)
        self._kick(first + len(payloads) - 1)
        return first

    def notify_appended(self) -> None:
        """Tell the commit thread that records were appended to the log
        directly (``append``/``append_many`` here do it themselves)."""
        self._kick(self.log.next_index - 1)

    def _kick(self, last_index: int) -> None:
        with self._cond:
            if self._machine.append(last_index, self._clock()):
                self._cond.notify_all()

    def wait(self, index: int, timeout: float | None = None) -> None:
        """Block until record ``index`` is durable. Raises WalError if the log
        failed, TimeoutError on timeout."""
        with self._cond:
            if self._machine.append(self.log.next_index - 1, self._clock()):  # appended behind our back
                self._cond.notify_all()
            ok = self._cond.wait_for(
                lambda: self.log.is_durable(index) or self._error is not None or self._finished, timeout)
            if self._error is not None and not self.log.is_durable(index):
                raise WalError(f"group commit failed: {self._error}")
            if not ok:
                raise TimeoutError(f"record {index} not durable after {timeout}s")
            if not self.log.is_durable(index):
                raise WalError("group committer is closed; the record is not durable")

    def append_and_wait(self, payload: bytes, timeout: float | None = None) -> int:
        idx = self.append(payload)
        self.wait(idx, timeout)
        return idx

    def _register(self, index: int, callback) -> Release | None:
        """Queue a callback waiter; returns its release when the outcome is known now."""
        with self._cond:
            if self._machine.append(self.log.next_index - 1, self._clock()):  # appended behind our back
                self._cond.notify_all()
            return self._machine.wait(index, callback, self._clock())

    def _error_for(self, release: Release) -> BaseException | None:
        if release.error is None:
            return None
        if isinstance(release.error, Closed):
            return WalError("group committer is closed")
        return WalError(f"group commit failed: {release.error}")

    def _fire(self, releases: list[Release]) -> None:
        """Settle callback waiters outside the lock."""
        for release in releases:
            release.waiter(self._error_for(release))

    def on_durable(self, index: int, callback) -> None:
        """Call ``callback(error_or_None)`` (from the thread that made it
        durable) once ``index`` is durable or the log failed; at once if it
        already is. It must be quick and must not call into the log."""
        release = self._register(index, callback)
        if release is not None:
            callback(self._error_for(release))

    def _durable_advanced(self) -> None:
        # Someone made records durable (our own sync, or a seal/roll/sync by
        # another caller): release whoever that covers.
        with self._cond:
            ready = self._machine.durable_advanced(self.log.durable_index, self._clock())
            self._cond.notify_all()
        self._fire(ready)

    # -- the commit thread ----------------------------------------------------------
    def _await_sync_start(self) -> bool:
        """Under the lock: sleep until a sync is due (True) or the thread may end (False)."""
        machine = self._machine
        while True:
            machine.append(self.log.next_index - 1, self._clock())  # records appended behind our back
            deadline = machine.next_deadline()
            if deadline is None:
                if self._stop:
                    return False
                self._cond.wait()
                continue
            left = deadline - self._clock()
            if left <= 0 or self._stop:
                return True
            self._cond.wait(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._await_sync_start():
                    break
                self._machine.start_sync(self._clock())
            try:
                self.log.sync()
                err = None
            except BaseException as exc:  # noqa: BLE001 -- handed to every waiter
                err = exc
            with self._cond:
                self.syncs += 1
                if err is None:
                    ready = self._machine.synced(self.log.durable_index, self._clock())
                else:
                    self._error = err
                    ready = self._machine.sync_failed(err, self._clock())
                self._cond.notify_all()
            self._fire(ready)
            if err is not None:
                break
        with self._cond:
            self._stop = self._finished = True
            rest = self._machine.close()
            self._cond.notify_all()
        self._fire(rest)

    def close(self) -> None:
        """Sync what is pending, stop the thread (does not close the log)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        self.log.remove_durable_listener(self._durable_advanced)

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
