"""``flk sim explore | coverage | causality``: exploration at scale (hooked into ``flk sim``).

* ``flk sim explore [--budget 1h | --runs N] [--swarm | --scenario NAME] [--mode safety|liveness]
  [--workers N | --scheduler ADDRESS] [--out DIR] [--plant NAME] [--determinism K]`` -- runs seeds
  until the budget is spent (:mod:`flk.sim.explore`); every failure shrunk and deduplicated by
  signature; prints the summary (runs, distinct failures, simulated seconds, runs per core-hour);
  exit 0 no failure, 1 failures found (or a determinism mismatch), 2 bad input;
* ``flk sim coverage RUNS... [--out DIR]`` -- the fault kind x invariant x situation matrix of run
  folders or exploration folders (:mod:`flk.sim.coverage`): CSV, heatmap, the declared minimum's
  missing cells (exit 1 when one is missing);
* ``flk sim causality RUN_DIR [--points 20 --forks 50]`` -- the probability of the run's failure
  against the simulated time after which randomness is fresh (:mod:`flk.sim.causality`), as a plot.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import UsageError, local_workers, output_dir, output_file, write_output

COMMANDS = ("explore", "coverage", "causality")


def configure(sub) -> None:
    e = sub.add_parser("explore", help="run seeds until a budget is spent (swarm: each seed draws its scenario)")
    how = e.add_mutually_exclusive_group()
    how.add_argument("--swarm", action="store_true", help="each seed draws its own scenario (the default)")
    how.add_argument("--scenario", default=None, metavar="NAME", help="explore seeds of one catalog scenario")
    e.add_argument("--budget", default=None, help="wall-clock budget, e.g. 90s, 15m, 1h (default 60s "
                   "unless --runs is given)")
    e.add_argument("--runs", type=int, default=None, metavar="N", help="stop after N runs")
    e.add_argument("--mode", choices=["safety", "liveness"], default="safety",
                   help="safety: faults all along, only always-invariants judged; liveness: faults stop, "
                        "the cluster heals, convergence and delivery required within a scaled bound")
    e.add_argument("--workers", type=local_workers, default=1, help="local processes (default 1)")
    e.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a running Dask scheduler")
    e.add_argument("--out", default="runs/explore", help="folder of the summary, runs.jsonl, coverage, failures")
    e.add_argument("--plant", default=None, metavar="NAME", help="plant a bug (flk.impl.testing.planted)")
    e.add_argument("--first-seed", type=int, default=1)
    e.add_argument("--seeds", default=None, help="exactly these seeds, e.g. 1-100 or 3,17,42 (instead of "
                   "--first-seed onwards)")
    e.add_argument("--shrink-runs", type=int, default=60, metavar="N", help="simulator runs per shrink (0: none)")
    e.add_argument("--stop-after", type=int, default=None, metavar="K", help="stop after K distinct failures")
    e.add_argument("--determinism", type=int, default=0, metavar="K",
                   help="rerun K explored seeds in two processes with different PYTHONHASHSEED; mismatches fail")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.add_argument("--junit", metavar="FILE", default=None,
                   help="also write a JUnit XML report (a testcase per distinct failure) for CI")
    e.add_argument("--quiet", action="store_true")
    c = sub.add_parser("coverage", help="fault x invariant x situation coverage of runs (CSV, heatmap, gate)")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders or exploration folders")
    c.add_argument("--out", default=None, help="default: the first exploration folder, else runs/coverage")
    ca = sub.add_parser("causality", help="probability of a run's failure vs the time randomness is forked")
    ca.add_argument("run_dir")
    ca.add_argument("--points", type=int, default=20)
    ca.add_argument("--forks", type=int, default=50)
    ca.add_argument("--invariant", default=None, metavar="ID")
    ca.add_argument("--workers", type=local_workers, default=1)
    ca.add_argument("--out", default=None, help="default RUN_DIR/causality")


def _explore(args) -> int:
    from flk.sim import explore

    if args.plant is not None:
        from flk.sim import api

        api.planted_world_kwargs(args.plant)  # an unknown name: a usage error before anything runs
    try:
        budget = explore.parse_budget(args.budget) if args.budget else (None if args.runs else 60.0)
    except ValueError as exc:
        raise UsageError(f"--budget: {exc}") from None
    if args.runs is not None and args.runs < 1:
        raise UsageError(f"--runs: must be at least 1, got {args.runs}")
    if args.scenario is not None:
        from flk.sim.scenario import load

        load(args.scenario)
    from .cmd_sim import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else None
    if seeds is not None and args.budget is None:
        budget = None
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    junit_out = output_file(args.junit, "--junit") if args.junit else None
    s = explore.explore(budget_s=budget, runs=args.runs, mode=args.mode, scenario=args.scenario,
                        workers=args.workers, scheduler=args.scheduler, out=output_dir(args.out), plant=args.plant,
                        first_seed=args.first_seed, seeds=seeds, shrink_runs=args.shrink_runs, stop_after=args.stop_after,
                        determinism_sample=args.determinism, log=log)
    if junit_out is not None:
        from flk.sim.junitreport import explore_document

        write_output(junit_out, explore_document(s))
    if args.json:
        print(json.dumps(s, sort_keys=True))
    else:
        print(render(s, args.out))
    bad_det = (s.get("determinism") or {}).get("mismatches", 0)
    return 1 if s["distinct_failures"] or bad_det else 0


def render(s: dict, out: str) -> str:
    lines = [f"explored {s['runs']} runs ({'swarm' if s['swarm'] else s['scenario']}, {s['mode']} mode"
             + (f", planted {s['plant']}" if s["plant"] else "") + f"), seeds {'-'.join(map(str, s['seeds']))}",
             f"simulated {s['simulated_s']} s in {s['wall_s']} s wall, {s['cpu_s']} s CPU: "
             f"{s['runs_per_core_hour']} runs per core-hour, {s['sim_s_per_wall_s']} simulated s per wall s "
             f"({s['workers']} workers)",
             f"failing runs {s['failing_runs']}, distinct failures {len(s['distinct_failures'])}"]
    for f in s["distinct_failures"]:
        lines.append(f"  {f['signature']}: seeds {f['seeds'][:8]}{' ...' if len(f['seeds']) > 8 else ''} "
                     f"(found after {f['found_after_runs']} runs, {f['found_after_s']} s)")
        if f.get("error"):
            lines.append(f"    simulator error: {f['error']}")
        lines.append(f"    replay: {f['replay'][:200]}{' ...' if len(f['replay']) > 200 else ''}")
        if f["run_dir"]:
            lines.append(f"    run folder: {f['run_dir']}  (flk sim replay / shrink / causality)")
        if f["regression_candidate"]:
            lines.append(f"    shrunk in {f['shrink_runs']} runs -> {f['regression_candidate']}")
    det = s.get("determinism")
    if det:
        lines.append(f"determinism: {det['sampled']} seeds rerun in {det['processes']} processes "
                     f"(PYTHONHASHSEED {', '.join(det['pythonhashseeds'])}): {det['mismatches']} mismatches")
    cov = s.get("coverage")
    if cov:
        lines.append(f"coverage: {cov['cells_hit']} cells hit; declared minimum {cov['minimum']} cells, "
                     f"{len(cov['minimum_missing'])} never reached")
        for cell in cov["minimum_missing"]:
            lines.append(f"  not reached: {' x '.join(cell)}")
    lines.append(f"wrote {out} (summary.json, runs.jsonl, coverage.csv, coverage.png)")
    return "\n".join(lines)


def _coverage(args) -> int:
    from flk.sim import coverage

    try:
        records = coverage.records_from(Path(r) for r in args.runs)
    except (OSError, ValueError) as exc:  # not a run or exploration folder; a damaged file in one
        raise UsageError(str(exc)) from None
    explored = next((Path(r) for r in args.runs if (Path(r) / "runs.jsonl").is_file()), None)
    out = output_dir(args.out if args.out else (explored / "coverage" if explored else Path("runs/coverage")))
    cov = coverage.aggregate(records)
    s = coverage.write(cov, out, commit_root=out.parent)
    rows, cols, counts = coverage.matrix(cov)
    width = max((len(r) for r in rows), default=5)
    print(f"{cov['runs']} runs, {s['cells_hit']} cells (fault x invariant x situation) hit")
    print(" " * width + "  " + " ".join(f"{i:>3}" for i in range(len(cols))))
    for r, row in zip(rows, counts, strict=True):
        print(f"{r:<{width}}  " + " ".join(f"{n:>3}" if n else "  ." for n in row))
    for i, c in enumerate(cols):
        print(f"  {i:>3}: {c}")
    for cell in s["minimum_missing"]:
        print(f"NOT REACHED (declared minimum): {' x '.join(cell)}")
    print(f"wrote {out} (coverage.csv, coverage.png, coverage.json)")
    return 1 if s["minimum_missing"] else 0


def _causality(args) -> int:
    from flk.sim import causality

    if args.points < 2 or args.forks < 1:
        raise UsageError("--points must be >= 2, --forks >= 1")
    s = causality.analyse(Path(args.run_dir), points=args.points, forks=args.forks, invariant=args.invariant,
                          workers=args.workers, out=output_dir(args.out) if args.out else None)
    print(f"{s['target']}: {s['sentence']}")
    for row in s["curve"]:
        print(f"  t = {row['t_s']:>6} s  p = {row['p']:.2f}  ({row['failed']}/{row['forks']})")
    print(f"wrote {s['plot']}")
    return 0


def run(args) -> int:
    if args.sim_cmd == "explore":
        return _explore(args)
    if args.sim_cmd == "coverage":
        return _coverage(args)
    return _causality(args)
