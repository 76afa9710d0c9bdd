"""The pure group-commit state machine against a simple model (INV-WAL-FIRST).

The model keeps, per record, when it was appended and whether a started sync
covers it, and per waiter whether it was released. Hypothesis drives arbitrary
interleavings of appends, waits, syncs (started early or on time, finishing
with any durable index the log could report), syncs by someone else (a seal),
failures and close, and checks after every step:

* every waiter is released exactly once, and released ok only when the
  durable index covers its record; once a sync covers it, it is not kept;
* the next deadline is the reference rule: at once for a full batch, else the
  oldest uncovered record's append time plus the max delay; none while a sync
  runs or nothing is uncovered.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from flk.impl.storage.groupcommit import CLOSED, GroupCommit, Release


class GroupCommitModel(RuleBasedStateMachine):
    @initialize(max_delay_ms=st.sampled_from([0.0, 1.0, 2.0, 10.0]), max_batch=st.integers(1, 6))
    def start(self, max_delay_ms: float, max_batch: int) -> None:
        self.machine = GroupCommit(max_delay_ms / 1000.0, max_batch)
        self.max_delay = max_delay_ms / 1000.0
        self.max_batch = max_batch
        self.now = 0.0
        self.appended_at: list[float] = []  # per record index
        self.covered = 0  # records below are covered by a started sync
        self.durable = 0
        self.syncing = False
        self.failed = False
        self.queued: dict[int, int] = {}  # waiter -> index
        self.released: dict[int, tuple[int, object]] = {}  # waiter -> (index, error)
        self.next_waiter = 0

    # -- helpers -----------------------------------------------------------------
    def _settle(self, releases) -> None:
        for release in releases:
            assert release.waiter not in self.released, "a waiter was released twice"
            assert self.queued.pop(release.waiter) == release.index
            if release.error is None:
                assert release.index < self.durable, "released before a sync covered its record"
            self.released[release.waiter] = (release.index, release.error)

    def _reference_deadline(self) -> float | None:
        uncovered = len(self.appended_at) - self.covered
        if self.syncing or self.failed or uncovered == 0:
            return None
        if uncovered >= self.max_batch:
            return -math.inf
        return self.appended_at[self.covered] + self.max_delay

    # -- rules -------------------------------------------------------------------
    @rule(count=st.integers(1, 4), elapsed_ms=st.floats(0, 5))
    def append(self, count: int, elapsed_ms: float) -> None:
        self.now += elapsed_ms / 1000.0
        was_idle = self.covered == len(self.appended_at)
        self.appended_at += [self.now] * count
        woke = self.machine.append(len(self.appended_at) - 1, self.now)
        assert woke == (was_idle or len(self.appended_at) - self.covered >= self.max_batch)

    @precondition(lambda self: self.appended_at)
    @rule(data=st.data())
    def wait(self, data) -> None:
        index = data.draw(st.integers(0, len(self.appended_at) - 1))
        waiter, self.next_waiter = self.next_waiter, self.next_waiter + 1
        self.queued[waiter] = index
        release = self.machine.wait(index, waiter, self.now)
        if index < self.durable or self.failed:
            assert release is not None
            self._settle([release])
        else:
            assert release is None

    @precondition(lambda self: not self.syncing and not self.failed)
    @rule(elapsed_ms=st.floats(0, 5))
    def start_sync(self, elapsed_ms: float) -> None:
        self.now += elapsed_ms / 1000.0
        deadline = self.machine.next_deadline()
        assert self.machine.due(self.now) == (deadline is not None and self.now >= deadline)
        assert self.machine.start_sync(self.now) == len(self.appended_at)
        self.covered, self.syncing = len(self.appended_at), True

    @precondition(lambda self: self.syncing)
    @rule(data=st.data())
    def finish_sync(self, data) -> None:
        # the log's sync makes at least what it covered durable, possibly more
        self.durable = data.draw(st.integers(max(self.durable, self.covered), len(self.appended_at)))
        self.covered = max(self.covered, self.durable)
        self.syncing = False
        self._settle(self.machine.synced(self.durable, self.now))

    @precondition(lambda self: not self.failed)
    @rule(data=st.data())
    def durable_by_someone_else(self, data) -> None:  # a seal or a roll
        self.durable = data.draw(st.integers(self.durable, len(self.appended_at)))
        self.covered = max(self.covered, self.durable)
        self._settle(self.machine.durable_advanced(self.durable, self.now))

    @precondition(lambda self: self.syncing)
    @rule()
    def sync_fails(self) -> None:
        error = OSError("fsync: EIO")
        self.syncing, self.failed = False, True
        self._settle(self.machine.sync_failed(error, self.now))
        assert all(err is error for _, err in self.released.values() if err is not None and err is not CLOSED)

    # -- invariants ----------------------------------------------------------------
    @invariant()
    def nobody_covered_is_kept_waiting(self) -> None:
        assert all(index >= self.durable for index in self.queued.values())
        assert self.machine.waiting() == len(self.queued)
        if self.failed:
            assert not self.queued

    @invariant()
    def deadline_is_the_reference_rule(self) -> None:
        assert self.machine.next_deadline() == self._reference_deadline()

    def teardown(self) -> None:
        if not hasattr(self, "machine"):
            return
        self._settle(self.machine.close())
        assert not self.queued, "a waiter was never released"
        assert self.machine.wait(len(self.appended_at), "late", self.now).error is not None


TestGroupCommitModel = GroupCommitModel.TestCase
TestGroupCommitModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(arrivals_ms=st.lists(st.floats(0, 20), min_size=1, max_size=60),
       max_delay_ms=st.sampled_from([0.0, 2.0, 5.0]), max_batch=st.integers(1, 16),
       fsync_ms=st.floats(0.1, 3.0))
@settings(max_examples=150, deadline=None)
def test_inv_wal_first_driven_batches_respect_max_delay_and_max_batch(arrivals_ms, max_delay_ms, max_batch,
                                                                      fsync_ms):
    """An idle driver that sleeps until ``next_deadline`` starts every sync on time:
    no sync before the rule allows it, and no record waits longer than the max
    delay plus one sync already running when its batch became due."""
    machine = GroupCommit(max_delay_ms / 1000.0, max_batch)
    arrivals = sorted(ms / 1000.0 for ms in arrivals_ms)
    fsync = fsync_ms / 1000.0
    appended_at: list[float] = []
    sync_started: dict[int, float] = {}  # record index -> when the sync covering it started
    now, sync_ends, next_arrival = 0.0, None, 0
    while next_arrival < len(arrivals) or machine.uncovered() or sync_ends is not None:
        deadline = machine.next_deadline()
        candidates = [t for t in (arrivals[next_arrival] if next_arrival < len(arrivals) else None,
                                  sync_ends, None if deadline is None else max(deadline, now)) if t is not None]
        now = min(candidates)
        if sync_ends is not None and now >= sync_ends:
            machine.synced(machine.covered, now)
            sync_ends = None
        elif next_arrival < len(arrivals) and now >= arrivals[next_arrival]:
            appended_at.append(now)
            machine.append(len(appended_at) - 1, now)
            next_arrival += 1
        else:
            assert machine.due(now)
            oldest = appended_at[machine.covered]
            assert machine.uncovered() >= max_batch or now >= oldest + max_delay_ms / 1000.0 - 1e-12
            first = machine.covered
            for index in range(first, machine.start_sync(now)):
                sync_started[index] = now
            sync_ends = now + fsync
    assert len(sync_started) == len(appended_at)
    for index, started in sync_started.items():
        assert started - appended_at[index] <= max_delay_ms / 1000.0 + fsync + 1e-9


@pytest.mark.parametrize("max_delay_s,max_batch", [(-1.0, 4), (math.inf, 4), (math.nan, 4), (0.0, 0)])
def test_bad_group_commit_parameters_are_refused(max_delay_s, max_batch):
    with pytest.raises(ValueError, match="max_delay_s"):
        GroupCommit(max_delay_s, max_batch)


def test_a_wait_for_a_record_not_yet_appended_is_released_after_its_append_and_a_sync():
    machine = GroupCommit(0.0, 10)
    assert machine.wait(0, "early", 0.0) is None
    assert machine.next_deadline() is None  # nothing appended: nothing to sync yet
    machine.start_sync(0.5)
    assert machine.synced(0, 0.6) == []  # a sync before the append does not release it
    machine.append(0, 1.0)
    assert machine.next_deadline() == 1.0
    assert machine.start_sync(1.0) == 1
    assert machine.synced(1, 1.5) == [Release("early", 0, None)]
