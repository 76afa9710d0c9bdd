"""The simulator drives the same group-commit machine under SimPy time (INV-WAL-FIRST).

A region's WAL waiters are released only by a simulated fsync that covers
them, after the max delay -- or at once when a full batch is waiting."""

from __future__ import annotations

import pytest

from flk.impl.storage.groupcommit import GroupCommit
from flk.sim.scenario import load
from flk.sim.world import World


def region_under_simpy(group_commit_ms: float, fsync_ms: float, max_batch: int):
    scenario = load("crash-restart", [f"region_defaults.group_commit_ms={group_commit_ms}",
                                      f"region_defaults.fsync_ms={fsync_ms}"])
    world = World(scenario, seed=1)
    region = world.regions["r1"]
    region.group_commit = GroupCommit(group_commit_ms / 1000.0, max_batch, durable=region.wal.durable_index)
    return world.env, region


def append_and_wait(env, region, count: int, released: dict) -> None:
    for _ in range(count):
        index = region.wal.append(b"record")
        event = region._wait_durable(index)

        def done(event, index=index) -> None:
            released[index] = (env.now, region.wal.is_durable(index))

        event.callbacks.append(done)


@pytest.mark.parametrize("max_batch,expected_s", [(100, 0.050 + 0.002), (3, 0.005 + 0.002)])
def test_inv_wal_first_sim_waiters_wait_for_the_delay_or_a_full_batch(max_batch, expected_s):
    env, region = region_under_simpy(group_commit_ms=50.0, fsync_ms=2.0, max_batch=max_batch)
    released: dict[int, tuple[float, bool]] = {}
    append_and_wait(env, region, 1, released)
    env.run(until=0.005)  # the commit process sleeps towards the 50 ms deadline
    append_and_wait(env, region, 2, released)  # ... a full batch of 3 wakes it
    env.run(until=1.0)
    assert sorted(released) == [0, 1, 2]
    assert all(durable for _, durable in released.values())  # never released before its fsync
    assert [when for when, _ in released.values()] == [pytest.approx(expected_s)] * 3
    assert region.group_commit.syncs == 1 and not region.commit_scheduled


def test_inv_wal_first_sim_records_appended_during_a_sync_form_the_next_batch():
    env, region = region_under_simpy(group_commit_ms=10.0, fsync_ms=5.0, max_batch=100)
    released: dict[int, tuple[float, bool]] = {}
    append_and_wait(env, region, 1, released)
    env.run(until=0.012)  # the first sync started at 10 ms and is still running
    assert region.group_commit.syncing
    append_and_wait(env, region, 1, released)
    env.run(until=1.0)
    assert released[0][0] == pytest.approx(0.015) and released[0][1]
    assert released[1][1] and released[1][0] >= 0.015
    assert all(durable for _, durable in released.values())
