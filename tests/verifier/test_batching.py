"""BatchFormation: the batch-formation rule the server's driver and the simulator's regions share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.verifier.batching import BatchFormation


def test_a_batch_starts_after_the_delay_of_its_oldest_request_or_when_as_many_wait_as_last_time():
    f = BatchFormation(max_delay_s=0.002, max_batch=3)
    f.add(9.0)
    assert f.expect == 3 and not f.ready and not f.due(9.0019)  # a fresh queue waits the delay
    f.add(9.001)
    assert f.due(9.002) and f.take(9.002) == 2 and f.expect == 2
    f.done()
    f.add(10.0)
    assert f.deadline() == pytest.approx(10.002) and not f.due(10.001) and f.due(10.002)
    f.add(10.001)
    assert f.ready and f.due(10.001)  # as many as the last batch held: at once
    f.add(10.0015)
    assert f.take(10.0015) == 3 and f.busy and f.deadline() is None
    f.add(10.003)
    assert not f.due(10.1)  # one batch at a time
    f.done()
    assert f.due(10.0031) is False and f.deadline() == pytest.approx(10.005)
    assert f.due(10.005) and f.take(10.005) == 1 and f.expect == 1  # fewer came: expect drops
    f.forget()
    assert f.expect == 3 and f.queued == 0 and f.running == 0  # a restarted queue: as a fresh one


def test_expect_never_exceeds_max_batch():
    f = BatchFormation(max_delay_s=0.002, max_batch=2)
    for t in range(5):
        f.add(float(t) / 1000)
    assert f.take(0.004) == 2 and f.expect == 2 and f.queued == 3
    f.done()
    assert f.take(0.004) == 2 and f.expect == 2


def test_what_waits_behind_a_running_batch_is_due_when_it_ends():
    f = BatchFormation(max_delay_s=0.002, max_batch=2)
    for t in (0.0, 0.0001, 0.0002):
        f.add(t)
    assert f.take(0.0002) == 2 and f.queued == 1
    f.done()
    assert f.due(0.0002)  # the rest waited a batch already


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "tick", "done", "join"]), st.floats(0, 0.01)), max_size=60),
       st.integers(1, 5), st.sampled_from([0.0, 0.001, 0.002]))
def test_batches_never_overlap_never_exceed_max_and_nothing_waits_past_its_deadline(ops, max_batch, delay):
    """Against a queue of arrival times: a batch holds at most max_batch of the oldest
    requests, batches never overlap, and an idle driver that ticks at a request's
    deadline always starts a batch."""
    f = BatchFormation(delay, max_batch)
    queue: list[float] = []
    now, last = 0.0, max_batch  # last: how many the last batch held (max_batch before the first)
    for op, dt in ops:
        now += dt
        if op == "add":
            f.add(now)
            queue.append(now)
        elif op == "done" and f.busy:
            f.done()
        elif op == "join" and f.busy:  # the running batch takes what queued before its append
            k = f.join(int(dt * 1000))
            assert k == min(int(dt * 1000), len(queue), max_batch - last)
            del queue[:k]
            last += k
        if not f.busy and len(queue) >= last:
            assert f.due(now)  # as many wait as the last batch held: no waiting out the delay
        if f.due(now):
            assert not f.busy and queue
            n = f.take(now)
            assert 1 <= n <= max_batch and n == min(len(queue), max_batch)
            del queue[:n]
            last = n
        assert f.queued == len(queue) and f.expect == last
        if not f.busy and queue:
            assert f.deadline() is not None and f.deadline() <= queue[0] + delay + 1e-12
    with pytest.raises(ValueError):
        BatchFormation(-1.0, 1)
    with pytest.raises(ValueError):
        BatchFormation(0.0, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "tick", "done"]), st.floats(0, 0.01)), max_size=60),
       st.integers(1, 5), st.integers(1, 3))
def test_at_most_depth_batches_run_and_a_free_slot_starts_what_is_due(ops, max_batch, depth):
    """A pipelining driver (``depth`` > 1): at most ``depth`` batches run at once, each of at
    most max_batch of the oldest requests; whenever fewer run and requests wait, a deadline
    is set no later than the oldest request's delay."""
    delay = 0.002
    f = BatchFormation(delay, max_batch, depth)
    queue: list[float] = []
    running = 0
    now = 0.0
    for op, dt in ops:
        now += dt
        if op == "add":
            f.add(now)
            queue.append(now)
        elif op == "done" and running:
            f.done()
            running -= 1
        while f.due(now):
            assert running < depth and queue
            n = f.take(now)
            running += 1
            assert n == min(len(queue), max_batch)
            del queue[:n]
        assert f.running == running <= depth and f.busy == (running >= depth)
        if not f.busy and queue:
            assert f.deadline() is not None and f.deadline() <= queue[0] + delay + 1e-12
    with pytest.raises(ValueError):
        BatchFormation(0.0, 1, depth=0)


def test_queued_requests_join_the_one_running_batch_up_to_max_batch():
    f = BatchFormation(max_delay_s=0.002, max_batch=4, depth=2)
    for t in (0.0, 0.0001):
        f.add(t)
    assert f.take(0.002) == 2 and f.expect == 2
    for t in (0.0021, 0.0022, 0.0023):
        f.add(t)
    assert f.join(5) == 2 and f.queued == 1 and f.expect == 4  # the batch is full at max_batch
    assert f.join(5) == 0
    f.done()
    assert f.join(1) == 0  # no batch runs: nothing to join
    assert f.take(0.003) == 1 and f.take(0.003) == 0
    f.add(0.004)
    assert f.join(1) == 0  # two batches run: a later one started, nothing may overtake it
