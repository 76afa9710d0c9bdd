"""The seeded nemesis on real clusters: the runner starts the faults the simulator's nemesis
starts at the same seed (one owner of its choices, :func:`flk.sim.faults.nemesis_steps`), as
real crashes, pauses, partitions and store outages. Default tier: the schedule is the
simulator's, fault for fault, and preflight judges the nemesis's kinds like explicit faults.
Full tier: nemesis-random seed 2 (a Redis outage, a partition and a crash) on a real cluster."""

from __future__ import annotations

import shutil

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.cluster.runner import preflight
from flk.sim.faults import nemesis_schedule
from flk.sim.scenario import load
from flk.sim.world import World

from .conftest import cluster_run, in_full_tier


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(1, 10_000), rate=st.sampled_from([6.0, 12.0, 40.0]), gap=st.sampled_from([0.0, 1.0, 3.0]),
       dur=st.sampled_from([0.5, 2.0]), kinds=st.sampled_from([["crash"], ["crash", "pause", "partition", "store_down"],
                                                                 ["partition", "pause"]]))
def test_the_schedule_is_the_faults_the_simulators_nemesis_starts(seed, rate, gap, dur, kinds):
    sc = load("nemesis-random", ["workload.rate_per_s=20", "workload.agents=2", "scenario.duration_s=12",
                                 "scenario.quiescence_s=2", f"nemesis.rate_per_min={rate}",
                                 f"nemesis.min_gap_s={gap}", f"nemesis.duration_s={dur}",
                                 f"nemesis.kinds={kinds!r}".replace("'", '"')])
    world = World(sc, seed, keep_history=False)
    world.run()
    assert nemesis_schedule(sc.data, seed, world.region_ids) == world.fault_log
    assert all(f["at_s"] + dur < 12 for f in world.fault_log)


def test_no_nemesis_no_schedule():
    assert nemesis_schedule(load("crash-restart").data, 1, ["r1"]) == []


def test_preflight_judges_the_nemesis_kinds_like_explicit_faults():
    data = load("nemesis-random").data
    sqlite = preflight(data, "sqlite")
    assert any("store_down" in r and "--backend redis" in r for r in sqlite), sqlite
    assert not any("nemesis" in r for r in sqlite)
    if shutil.which("redis-server"):
        assert not any("store_down" in r for r in preflight(data, "redis"))
    only_crash = load("nemesis-random", ['nemesis.kinds=["crash", "pause", "partition"]']).data
    assert not any("fault" in r for r in preflight(only_crash, "sqlite"))
    unknown = load("nemesis-random", ['nemesis.kinds=["crash", "disk_slow"]']).data
    assert any("disk_slow" in r and "no real mechanism" in r for r in preflight(unknown, "sqlite"))
    slow_store = load("nemesis-random", ['nemesis.kinds=["crash", "store_latency"]']).data
    assert any("store_latency" in r and "--backend redis" in r for r in preflight(slow_store, "sqlite"))
    if shutil.which("redis-server"):
        assert not any("store_latency" in r for r in preflight(slow_store, "redis"))


@in_full_tier
def test_nemesis_random_runs_its_seeds_faults_on_a_real_cluster(redis_and_prometheus, prefix, tmp_path):
    """Seed 2's nemesis: the Redis of r1 refused at 2.0 s, r1 cut from its clients at 16.4 s, r1
    killed at 21.8 s (2 s each) -- applied for real, each fault's check says it hit traffic, and
    every invariant holds, as in the simulator at seed 2."""
    schedule = nemesis_schedule(load("nemesis-random").data, 2, ["r1"])
    assert [f["kind"] for f in schedule] == ["store_down", "partition", "crash"]
    res, events = cluster_run(tmp_path, prefix, "nemesis-random", "--backend", "redis", seed=2)
    assert res["valid"], [c for c in res["invariants"] if not c["ok"]]
    assert res["fault_schedule"] == schedule
    started = [e for e in events if e["type"] == "fault.start"]
    assert [(e["kind"], e["target"]) for e in started] == [("store_down", "r1"), ("partition", "r1|clients"),
                                                           ("crash", "r1")]
    assert all(abs(e["t_us"] / 1e6 - f["at_s"]) < 0.5 for e, f in zip(started, schedule, strict=True))
    checks = {c["id"]: c for c in res["invariants"]}
    for check in ("SOMETIMES-STORE-DOWN-503", "SOMETIMES-PARTITION-CUT", "SOMETIMES-CRASH-HIT-TRAFFIC"):
        assert checks[check]["ok"], checks[check]
