"""``flk.sim.world.run_until`` (SimPy's step inlined) runs what ``env.run(until=...)`` runs:
the same events in the same order at the same times, the same clock and event-id counter
after, the same crash on a failed event nobody defused."""

from __future__ import annotations

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.sim.world import run_until

# a process: its delays, whether it fails at the end (and whether its waiter defuses that)
procs = st.lists(st.tuples(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.25]), max_size=5),
                           st.sampled_from(["ok", "fail", "fail_defused"])), max_size=6)


def _world(spec, log):
    env = simpy.Environment()

    def proc(i, delays, end):
        for d in delays:
            yield env.timeout(d)
            log.append((env.now, i))
            ev = env.event()
            ev.succeed(i)
            yield ev  # an urgent-free event at the same time
        if end != "ok":
            raise ValueError(f"p{i}")

    def waiter(p, i, end):
        try:
            yield p
        except ValueError:
            log.append((env.now, f"caught {i}"))

    for i, (delays, end) in enumerate(spec):
        p = env.process(proc(i, delays, end))
        if end == "fail_defused":
            env.process(waiter(p, i, end))
    return env


def _run(spec, until, inlined):
    """Run to ``until``, then on for one more second (a second run continues the first)."""
    log: list = []
    env = _world(spec, log)
    out = []
    for at in (until, until + 1.0):
        try:
            run_until(env, at) if inlined else env.run(until=at)
            error = None
        except ValueError as exc:
            error = (type(exc), exc.args, type(exc.__cause__))
        out.append((list(log), env.now, error, len(env._queue)))
    return out, next(env._eid)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(procs, st.sampled_from([0.25, 1.0, 2.0, 4.0, 20.0]))
def test_run_until_runs_what_env_run_runs(spec, until):
    assert _run(spec, until, True) == _run(spec, until, False)


def test_run_until_refuses_a_time_not_ahead_as_run_does():
    for at in (5.0, 4.0):
        env = simpy.Environment(initial_time=5.0)
        with pytest.raises(ValueError):
            run_until(env, at)
        with pytest.raises(ValueError):
            env.run(until=at)
