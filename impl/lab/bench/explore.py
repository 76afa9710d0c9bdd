"""``flk bench explore``: how much the swarm explores on this machine.

Runs a fixed block of swarm seeds (:func:`flk.sim.explore.run_seed`, safety mode, no planted
bug) in this process, ``repeat`` times, and reports the medians: runs per core-hour (CPU
seconds of this process, so a loaded machine shows in wall time, not in this figure),
simulated seconds per wall second and per CPU second. The same-run anchor is one catalog
scenario (``client-partition`` seed 1) timed in the same process each repetition, so a figure
can be read against the anchor on another day or machine. ``--quick``: 2 seeds, else 24.
"""

from __future__ import annotations

import statistics
import time

QUICK_SEEDS = 2
FULL_SEEDS = 24
ANCHOR = "client-partition"


def _block(seeds: range) -> dict:
    from flk.sim.explore import run_seed

    cpu0, wall0 = time.process_time(), time.perf_counter()
    sim_s = 0.0
    for seed in seeds:
        sim_s += run_seed((seed, "safety", None, None, None))["sim_s"]
    return {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0, "sim_s": sim_s,
            "runs": len(seeds)}


def _anchor() -> float:
    from flk.sim import api

    cpu0 = time.process_time()
    api.run(ANCHOR, seed=1, plots=False)
    return time.process_time() - cpu0


def run(repeat: int = 3, quick: bool = False) -> dict:
    n = QUICK_SEEDS if quick else FULL_SEEDS
    blocks, anchors = [], []
    for _ in range(max(1, repeat)):
        anchors.append(_anchor())
        blocks.append(_block(range(1, n + 1)))
    rph = [b["runs"] * 3600 / b["cpu_s"] for b in blocks]
    anchor_rph = [3600 / a for a in anchors]
    return {
        "swarm_seeds": n,
        "repeat": len(blocks),
        "runs_per_core_hour": round(statistics.median(rph), 1),
        "sim_s_per_wall_s": round(statistics.median(b["sim_s"] / b["wall_s"] for b in blocks), 2),
        "sim_s_per_cpu_s": round(statistics.median(b["sim_s"] / b["cpu_s"] for b in blocks), 2),
        "cpu_s_per_run": round(statistics.median(b["cpu_s"] / b["runs"] for b in blocks), 3),
        "anchor": f"{ANCHOR} seed 1",
        "anchor_runs_per_core_hour": round(statistics.median(anchor_rph), 1),
        "ratio_to_anchor": round(statistics.median(rph) / statistics.median(anchor_rph), 3),
    }
