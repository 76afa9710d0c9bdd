"""The simulator forms batches by the server's rule under SimPy time (INV-WAL-FIRST).

A region's requests are answered only after the simulated fsync that covers their batch,
which starts after the max delay -- or at once when a full batch is waiting; requests that
arrive while a batch runs form the next batch (flk.impl.verifier.batching.BatchFormation,
the state machine the server's batch driver runs)."""

from __future__ import annotations

import pytest

from flk.impl.verifier.batching import BatchFormation
from flk.sim.net import Message
from flk.sim.scenario import load
from flk.sim.world import World


def region_under_simpy(group_commit_ms: float, fsync_ms: float, max_batch: int):
    scenario = load("crash-restart", [f"region_defaults.group_commit_ms={group_commit_ms}",
                                      f"region_defaults.fsync_ms={fsync_ms}",
                                      "region_defaults.store_ms=0", "region_defaults.verify_ms=0"])
    world = World(scenario, seed=1)
    region = world.regions["r1"]
    region.formation = BatchFormation(group_commit_ms / 1000.0, max_batch)
    answered: dict[str, tuple[float, int, int]] = {}

    def respond(p, d, status, *args, **kwargs) -> None:  # when, what was durable then, status
        answered[p["req"]] = (world.env.now, region.wal.durable_index, status)

    region._respond = respond
    return world.env, region, answered


def send(region, reqs: list[str]) -> None:
    for req in reqs:
        region.on_message(Message("a0", region.id, "request", {
            "req": req, "attempt": 1, "tenant": "nobody", "body": b"{}", "reply_to": "a0"}))


@pytest.mark.parametrize("max_batch,expected_s", [(100, 0.050 + 0.002), (3, 0.005 + 0.002)])
def test_inv_wal_first_sim_batches_wait_for_the_delay_or_a_full_batch(max_batch, expected_s):
    env, region, answered = region_under_simpy(group_commit_ms=50.0, fsync_ms=2.0, max_batch=max_batch)
    send(region, ["q0"])
    env.run(until=0.005)  # the batch process sleeps towards the 50 ms deadline
    assert not answered
    send(region, ["q1", "q2"])  # ... a full batch of 3 wakes it
    env.run(until=1.0)
    assert sorted(answered) == ["q0", "q1", "q2"]
    assert all(durable >= 3 for _, durable, _ in answered.values())  # never answered before its fsync
    assert [when for when, _, _ in answered.values()] == [pytest.approx(expected_s)] * 3
    assert region.formation.batches == 1 and not region.batching


def test_inv_wal_first_sim_requests_arriving_during_a_batch_form_the_next_batch():
    env, region, answered = region_under_simpy(group_commit_ms=10.0, fsync_ms=5.0, max_batch=100)
    send(region, ["q0"])
    env.run(until=0.012)  # the first batch started at 10 ms; its fsync is still running
    assert region.formation.busy and not answered
    send(region, ["q1"])
    env.run(until=1.0)
    assert answered["q0"][0] == pytest.approx(0.015) and answered["q0"][1] >= 1
    assert answered["q1"][0] >= 0.015 and answered["q1"][1] >= 2
    assert region.formation.batches == 2


def test_inv_wal_first_sim_a_batch_starts_at_once_when_as_many_wait_as_the_last_batch_held():
    """After a batch of two, two requests start the next batch at once (the server's rule:
    BatchFormation's expect); one request alone waits the delay."""
    env, region, answered = region_under_simpy(group_commit_ms=50.0, fsync_ms=2.0, max_batch=100)
    send(region, ["q0", "q1"])
    env.run(until=0.1)
    assert [answered[q][0] for q in ("q0", "q1")] == [pytest.approx(0.052)] * 2  # the first batch waits
    send(region, ["q2"])
    env.run(until=0.11)
    assert "q2" not in answered  # one of two: sleeping towards its 50 ms deadline
    send(region, ["q3"])  # the second: as many as the last batch held, at once
    env.run(until=1.0)
    assert [answered[q][0] for q in ("q2", "q3")] == [pytest.approx(0.112)] * 2
    assert all(answered[q][1] >= 4 for q in ("q2", "q3"))  # never answered before its fsync
    send(region, ["q4"])
    env.run(until=2.0)
    assert answered["q4"][0] == pytest.approx(1.052)  # expect is 2: a lone request waits the delay
    assert region.formation.batches == 3
