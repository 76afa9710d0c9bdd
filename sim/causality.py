"""``flk sim causality RUN_DIR``: when did a failing run's failure become likely?

Why this module exists: a shrunk case says *which* faults a failure needs; it does not say
*when* in the original run the failure became inevitable. Following Antithesis's rewinds,
this re-runs the failing run from checkpoints at increasing simulated times t with fresh
randomness after t, and plots the probability of the same failure against t with the faults
marked: "the failure became certain at t = 7.4 s, after the second partition".

Checkpoint by replay, not by snapshot (the decision): a world is not copied at t (SimPy
processes are generators, which cannot be copied). Instead each fork replays the run from the
start with the same scenario, seed and code -- byte-identical up to t, since the simulator is
deterministic -- and at t every random stream is reseeded from ``(seed, fork k)``
(:meth:`flk.sim.rng.Streams.fork`, a SimPy process started before the run's own, so it runs
before any other event at t). Explicit faults stay where the scenario put them; everything
random after t (latencies, losses, client jitter, the nemesis's later faults, disk tears) is
drawn afresh. A fork at t = 0 gives the failure's base rate for the scenario; a fork after
the last draw that matters gives 1. Cost: points x forks runs (a process pool spreads them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CERTAIN = 0.95  # a probability at or above this counts as "certain" (every later point too)


def _fork_at(world, t: float, label: int):
    yield world.env.timeout(t)
    world.streams.fork(label)


def failed_checks(data: dict, seed: int, plant: str | None, t: float | None, label: int) -> list[str]:
    """The failed checks of the run ``(data, seed, plant)`` forked at ``t`` (None: not forked)."""
    from . import api
    from .scenario import Scenario
    from .world import World, collector_paused

    sc = Scenario(data["scenario"]["name"], "", data)
    world = World(sc, seed, **api.planted_world_kwargs(plant))
    if t is not None:
        world.env.process(_fork_at(world, t, label))
    with collector_paused():  # the run and the checks walking its events
        history = world.run()
        checks, _ = api._checks(sc, world, history.events, None)
    return [c.id for c in checks if not c.ok]


def _job(args: tuple) -> tuple[float, int, bool]:
    data, seed, plant, t, label, target = args
    return t, label, target in failed_checks(data, seed, plant, t, label)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p; at k = 0 or k = n rounding left it a hair outside (1 - 1e-16 at
    # k = n), and the plot's error bar refused the negative length
    lo = 0.0 if k == 0 else min(p, max(0.0, centre - half))
    hi = 1.0 if k == n else max(p, min(1.0, centre + half))
    return lo, hi


def checkpoints(duration_s: float, points: int) -> list[float]:
    """``points`` times from 0 to the end of the workload phase, on a 0.1 s grid."""
    if points < 2:
        return [0.0]
    return sorted({round(duration_s * i / (points - 1), 1) for i in range(points)})


def verdict(curve: list[dict], faults: list[dict]) -> dict:
    """The first checkpoint from which the failure stays certain, and the last fault that
    started before it (the sentence of the plot's title)."""
    certain_at = None
    for i, row in enumerate(curve):
        if all(r["p"] >= CERTAIN for r in curve[i:]):
            certain_at = row["t_s"]
            break
    if certain_at is None:
        return {"certain_at_s": None, "after_fault": None,
                "sentence": f"the failure never became certain (p >= {CERTAIN}) before the workload ended"}
    before = [f for f in sorted(faults, key=lambda f: float(f["at_s"])) if float(f["at_s"]) <= certain_at]
    if not before:
        return {"certain_at_s": certain_at, "after_fault": None,
                "sentence": f"the failure was certain from t = {certain_at} s, before any fault"}
    last = before[-1]
    nth = sum(1 for f in before if f["kind"] == last["kind"])
    ordinal = {1: "first", 2: "second", 3: "third"}.get(nth, f"{nth}th")
    return {"certain_at_s": certain_at, "after_fault": last,
            "sentence": f"the failure became certain at t = {certain_at} s, after the {ordinal} {last['kind']} "
                        f"(t = {round(float(last['at_s']), 2)} s, {last.get('target', '')})".replace(", )", ")")}


def analyse(run_dir: Path, points: int = 20, forks: int = 50, invariant: str | None = None, workers: int = 1,
            out: Path | None = None) -> dict:
    """Fork the failing run in ``run_dir`` at ``points`` checkpoints, ``forks`` times each; write
    ``causality.json``, ``causality.csv`` and ``causality.png`` to ``out`` (default
    ``RUN_DIR/causality``) and return the summary."""
    from .shrink import pick_target, read_run_dir

    run = read_run_dir(Path(run_dir))
    target = pick_target(run, invariant, "no failed check to trace back (causality analyses a failing run)")
    duration = float(run.data["scenario"]["duration_s"])
    times = checkpoints(duration, points)
    jobs = [(run.data, run.seed, run.plant, t, k, target) for t in times for k in range(forks)]
    if workers > 1:
        from .sweep import process_pool

        with process_pool(workers) as pool:
            results = list(pool.map(_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        results = [_job(j) for j in jobs]
    curve = []
    for t in times:
        k = sum(1 for tt, _label, failed in results if tt == t and failed)
        lo, hi = wilson(k, forks)
        curve.append({"t_s": t, "forks": forks, "failed": k, "p": k / forks, "ci95_low": lo, "ci95_high": hi})
    faults = list(run.results.get("fault_schedule") or [])
    summary = {"run_dir": str(run.path), "target": target, "seed": run.seed, "plant": run.plant,
               "points": len(times), "forks": forks, "runs": len(jobs), "curve": curve, "faults": faults,
               "method": "replay of the prefix, every RNG stream forked at t", **verdict(curve, faults)}
    out = Path(out) if out is not None else run.path / "causality"
    out.mkdir(parents=True, exist_ok=True)
    (out / "causality.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n",
                                        encoding="utf-8")
    with open(out / "causality.csv", "w", encoding="utf-8") as f:
        f.write("t_s,forks,failed,p,ci95_low,ci95_high\n")
        for r in curve:
            f.write(f"{r['t_s']},{r['forks']},{r['failed']},{r['p']:.4f},{r['ci95_low']:.4f},{r['ci95_high']:.4f}\n")
    plot(summary, out / "causality.png")
    summary["plot"] = str(out / "causality.png")
    return summary


def plot(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    curve = summary["curve"]
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ts = [r["t_s"] for r in curve]
    ps = [r["p"] for r in curve]
    err = [[r["p"] - r["ci95_low"] for r in curve], [r["ci95_high"] - r["p"] for r in curve]]
    ax.errorbar(ts, ps, yerr=err, marker="o", capsize=3, label=f"P({summary['target']} fails), "
                f"{summary['forks']} forks per point, 95 % CI")
    kinds = sorted({f["kind"] for f in summary["faults"]})
    colours = {k: f"C{(i + 1) % 10}" for i, k in enumerate(kinds)}
    for f in summary["faults"]:
        start = float(f["at_s"])
        dur = f.get("duration_s")
        colour = colours[f["kind"]]
        if dur:
            ax.axvspan(start, start + float(dur), color=colour, alpha=0.12)
        ax.axvline(start, color=colour, linewidth=1, linestyle="--")
    for k in kinds:
        ax.plot([], [], color=colours[k], linestyle="--", label=f"fault: {k}")
    if summary.get("certain_at_s") is not None:
        ax.axvline(summary["certain_at_s"], color="black", linewidth=2, label="certain from here")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("checkpoint t (simulated s): same prefix, fresh randomness after t")
    ax.set_ylabel("probability of the failure")
    ax.set_title(f"seed {summary['seed']}" + (f", planted {summary['plant']}" if summary["plant"] else "")
                 + f": {summary['sentence']}", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
