"""``flk bench sim``: the 3-region CRR scenario at scale.

Runs ``crr-normal`` with the workload sized to ``n`` submissions (history kept
only as its running digest, checkers off), and in the same process a bare
SimPy loop of timeouts with the same number of events, so the simulator's cost
per event can be read against SimPy's own. Reports simulated submissions per
wall-second, the wall time, peak RSS, and -- when ``n`` is below the issue's
1,000,000 -- the projected wall time for 1,000,000 at the measured rate
(labelled as a projection, not a measurement).
"""

from __future__ import annotations

import resource
import statistics
import time

import simpy

from flk.sim import progress
from flk.sim.scenario import load
from flk.sim.world import World

TARGET_N = 1_000_000


def _bare_simpy(events: int) -> float:
    env = simpy.Environment()

    def proc(env, k):
        for _ in range(k):
            yield env.timeout(0.001)

    per = max(1, events // 100)
    for _ in range(100):
        env.process(proc(env, per))
    t0 = time.perf_counter()
    env.run()
    return (per * 100) / (time.perf_counter() - t0)


def run(repeat: int = 3, quick: bool = False, n: int | None = None) -> dict:
    n = n or (5_000 if quick else 50_000)
    rate = 2_000.0
    duration = n / rate
    overrides = [f"scenario.duration_s={duration}", "scenario.quiescence_s=5", f"workload.rate_per_s={rate}",
                 "workload.agents=24"]
    rates, walls, events, digests = [], [], [], []
    for attempt in range(repeat):
        sc = load("crr-normal", overrides)
        world = World(sc, seed=1, keep_history=False)
        show = progress.wanted()  # an interactive stderr only: --json output stays one object
        with progress.bar(world.duration + world.quiescence, f"bench sim {attempt + 1}/{repeat}", unit="sim s",
                          enabled=show) as sim_bar:
            if show:
                progress.follow_world(world, sim_bar)
            t0 = time.perf_counter()
            world.run()
            wall = time.perf_counter() - t0
        subs = world._req
        rates.append(subs / wall)
        walls.append(wall)
        events.append(world.history.count)
        digests.append(world.history.digest)
    ev = int(statistics.median(events))
    bare = statistics.median(_bare_simpy(ev) for _ in range(repeat))
    med_rate = statistics.median(rates)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "scenario": "crr-normal (3 regions, replication on)",
        "submissions": int(n),
        "submissions_per_wall_s": round(med_rate, 1),
        "wall_s_median": round(statistics.median(walls), 2),
        "history_events": ev,
        "sim_events_per_wall_s": round(ev / statistics.median(walls), 1),
        "bare_simpy_timeouts_per_wall_s": round(bare, 1),
        "ratio_sim_events_to_bare_simpy": round((ev / statistics.median(walls)) / bare, 4),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "deterministic": len(set(digests)) == 1,
        "projected_wall_s_for_1M": round(TARGET_N / med_rate, 1),
        "projection_note": "projected from the measured rate; the 1M run itself was not performed",
        "goal_wall_s_for_1M": 90,
        "goal_peak_rss_mb": 2048,
        "repeat": repeat,
    }
