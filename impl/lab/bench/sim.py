"""``flk bench sim``: the 3-region CRR scenario at scale, run for real.

Runs ``crr-normal`` (3 regions, replication on) with the workload sized to ``n``
submissions -- 1,000,000 by default, 5,000 with ``--quick``, any count with
``--n`` -- history kept only as its running digest, checkers off. Every
submission is simulated: nothing is projected. In the same process it then runs
a bare SimPy loop of timeouts, so the simulator's SimPy events per wall-second
read against SimPy's own.

Figures: wall time, peak RSS of the whole process (``ru_maxrss``), submissions,
history events and SimPy events per wall-second, the bare SimPy rate and the
ratio. A progress bar over simulated seconds goes to stderr when it is a
terminal (``--json`` output stays one object on stdout).

``--wall-share`` (the ``profile`` extra: py-spy) adds one more run of the same ``n``
under py-spy and splits its wall time by whose code ran (:func:`wall_shares`): the
shipping code a region runs in production against the simulator's own; the shipping
share bounds what any faster simulator that runs what ships can gain.

The scenario's divergence check runs at the implementation's default period
(300 s, :class:`flk.impl.replication.divergence.DivergenceDetector`) instead of
the catalog's 2 s (sized for 12-second scenarios): each check samples every key
(the dedup contract's ``sample``: a SHA-256 rank per key), which at a million keys
every 2 simulated seconds would be the run's whole cost.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import os
import resource
import statistics
import time

import simpy

from flk.sim import progress
from flk.sim.scenario import load
from flk.sim.world import World

from .wallshare import OTHER, Owners, WallShare, flk_owners

FULL_N = 1_000_000
QUICK_N = 5_000
RATE_PER_S = 2_000.0
AGENTS = 24
DIVERGENCE_INTERVAL_S = 300.0
REPEAT_UP_TO = 200_000  # larger runs are done once, whatever --repeat says
OWNERS = ("shipping", "simulator", "simpy", "lab", OTHER)  # wall_share's keys (wallshare.flk_owners)
TOP_FILES = 12  # wall_share_top_files
BARE_EVENTS_CAP = 2_000_000  # the bare SimPy loop measures a rate: this many events is plenty


def overrides(n: int) -> list[str]:
    """The workload runs 2 % longer than ``n`` arrivals take on average; the world stops it at ``n``."""
    return [f"scenario.duration_s={round(1.02 * n / RATE_PER_S + 1.0, 3)}", "scenario.quiescence_s=5",
            f"workload.rate_per_s={RATE_PER_S}", f"workload.agents={AGENTS}",
            f"replication.divergence_interval_s={DIVERGENCE_INTERVAL_S}"]


def bare_simpy(events: int) -> float:
    """SimPy timeouts per wall-second: 100 processes looping over ``timeout``."""
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


def simpy_events(env: simpy.Environment) -> int:
    """Events the environment scheduled so far (its event-id counter). An attempt's answer
    timeout draws its id even when it never becomes a queued event (it was answered first:
    :meth:`flk.sim.workload.Agent.expire_later`), so the count reads like earlier runs'."""
    return next(env._eid)


def run_once(n: int, label: str, owners: Owners | None = None) -> dict:
    """One run of ``n`` submissions; with ``owners``, under py-spy (:class:`WallShare`)."""
    gc.collect()  # an earlier repeat's world (cyclic; World.run pauses the collector) goes first
    world = World(load("crr-normal", overrides(n)), seed=1, keep_history=False, max_submissions=n)
    show = progress.wanted()  # an interactive stderr only
    with progress.bar(world.duration + world.quiescence, label, unit="sim s", enabled=show) as sim_bar:
        if show:
            progress.follow_world(world, sim_bar)
        share = WallShare(owners, select="World.run") if owners is not None else None
        with share or contextlib.nullcontext():  # py-spy's attach: before the clock starts
            t0, c0 = time.perf_counter(), time.process_time()
            world.run()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "submissions": world._req, "history": world.history.count,
            "simpy": simpy_events(world.env), "digest": world.history.digest,
            "share": share}


def run(repeat: int = 3, quick: bool = False, n: int | None = None, wall_share: bool = False) -> dict:
    n = int(n or (QUICK_N if quick else FULL_N))
    if n < 1:
        raise ValueError("n must be >= 1")
    runs = repeat if n <= REPEAT_UP_TO else 1
    load_before = os.getloadavg()[0]
    done = [run_once(n, f"bench sim {i + 1}/{runs}") for i in range(runs)]
    wall = statistics.median(d["wall"] for d in done)
    cpu = statistics.median(d["cpu"] for d in done)
    subs = done[0]["submissions"]
    sim_rate = done[0]["simpy"] / wall
    bare = statistics.median(bare_simpy(min(done[0]["simpy"], BARE_EVENTS_CAP)) for _ in range(max(1, min(runs, 3))))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_after = os.getloadavg()[0]
    figures = {
        "scenario": "crr-normal (3 regions, replication on)",
        "overrides": overrides(n),
        "submissions_requested": n,
        "submissions": subs,
        "repeat": runs,
        "wall_s_median": round(wall, 2),
        "cpu_s_median": round(cpu, 2),
        "submissions_per_wall_s": round(subs / wall, 1),
        "submissions_per_cpu_s": round(subs / cpu, 1),  # steadier than wall time on a shared machine
        "history_events": done[0]["history"],
        "history_events_per_wall_s": round(done[0]["history"] / wall, 1),
        "simpy_events": done[0]["simpy"],
        "simpy_events_per_submission": round(done[0]["simpy"] / max(1, subs), 2),
        "simpy_events_per_wall_s": round(sim_rate, 1),
        "bare_simpy_events_per_wall_s": round(bare, 1),
        "ratio_sim_to_bare_simpy": round(sim_rate / bare, 4),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "deterministic": len({d["digest"] for d in done}) == 1 if runs > 1 else None,  # one run: not checked
        "history_digest": done[0]["digest"],
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],  # before, after: other work competes
        "goal_wall_s": 90 if n == FULL_N else None,
        "goal_peak_rss_mb": 2048 if n == FULL_N else None,
    }
    if wall_share:
        figures.update(wall_shares(n, done[0]["digest"]))
    return figures


def wall_shares(n: int, digest: str) -> dict:
    """One more run of the same ``n`` under py-spy (:mod:`.wallshare`): its wall time by whose
    code ran -- ``shipping`` (``flk.impl``, the code a region runs in production), ``simulator``
    (``flk.sim`` and the simulated disk), ``simpy``, ``lab`` and ``other`` -- and the bound that
    follows: a simulator whose own code took no time, running the same shipping code, would
    be at most ``1 / shipping`` times faster than this run (``speedup_bound_if_simulator_free``).
    py-spy pauses the process for each sample: the run's own wall time is reported beside
    (``wall_share_run_wall_s``), never as the bench's. Not measured: the figures are None and
    ``wall_share_missing`` says why."""
    run = run_once(n, "bench sim (py-spy)", flk_owners())
    share: WallShare = run["share"]
    total = share.samples
    shares = share.shares(OWNERS)  # empty when nothing was sampled
    shipping = shares.get("shipping", 0.0)
    return {
        "wall_share": {name: round(k, 4) for name, k in shares.items()} if shares else None,
        "wall_share_samples": total,
        # the files the time went to (owner:path under its root), the largest first
        "wall_share_top_files": [[f"{owner}:{path}", round(k / total, 4)]
                                 for (owner, path), k in share.by_file.most_common(TOP_FILES)] if total else None,
        "wall_share_missing": (share.missing or "py-spy took no sample of the run") if not total else None,
        "wall_share_run_wall_s": round(run["wall"], 2),
        "wall_share_same_history": hmac.compare_digest(run["digest"], digest),  # the profiled run did the same work
        "speedup_bound_if_simulator_free": round(1.0 / shipping, 2) if shipping > 0 else None,
    }
