"""``flk sim``: the deterministic simulator's command line.

* ``flk sim list`` -- the catalog, with descriptions;
* ``flk sim run NAME|FILE [--seed N] [--out DIR] [--set key=value ...]`` -- run,
  print the invariant/SLO table and the history's SHA-256; exit 0 valid, 1 an
  invariant or SLO violated, 2 bad input; ``--history-format jsonl.gz`` streams the
  compact history (``history.jsonl.gz``, same digest) for long runs;
* ``flk sim validate FILE|NAME ...`` -- check scenario files against the schema only
  (nothing runs): every file's verdict, each bad one naming the file, key path and reason; exit 2
  if any is bad;
* ``flk sim reference [--metrics]`` -- print the scenario file reference (``sim/SCENARIOS.md``) or the
  metrics reference (``sim/METRICS.md``);
* ``flk sim topology NAME|FILE [--out PNG] [--at SECONDS]`` -- draw the scenario's network graph,
  links cut by partitions marked;
* ``flk sim replay RUN_DIR`` -- rerun from the artifacts' scenario and seed and
  compare digests: the re-run's, the recorded one and the saved history's (exit 1 if the run
  does not reproduce or its saved history is not the recorded one, 2 if that history is
  missing or unreadable);
* ``flk sim sweep NAME --seeds 1-100 [--param key=v1,v2 ...] [--workers N]
  [--scheduler ADDRESS] [--out DIR] [--keep-runs]`` -- many runs on a process pool or a Dask
  cluster into a folder of its own: the tidy table (CSV and Parquet), the aggregate per
  parameter point (mean, median, 95 % CI), the failing seeds with replay commands, plots;
* ``flk sim diff RUN_A RUN_B`` -- the first diverging history event and the invariants,
  SLOs and figures that differ (exit 0 identical histories, 1 they differ);
* ``flk sim shrink RUN_DIR [--invariant ID] [--out FILE] [--max-runs N]`` -- reduce a failing
  run (delta debugging over its faults, shorter phases, fewer agents, lower rate) to a minimal
  scenario, same seed, that still fails the same check; writes it as a regression candidate
  (default ``RUN_DIR/regression-candidate.toml``) and prints the replay command (exit 0 written
  and confirmed, 1 the run does not fail when re-run, 2 bad input);
* ``flk sim calibrate NAME --seeds 1-10 --real-runs 3`` -- the simulator's figures beside a real
  cluster's (``flk cluster``), per figure with ratio and verdict; exit 1 on a mismatch;
* ``flk sim report RUN_DIR ... [--out FILE]`` -- the styled, self-contained HTML report of
  finished runs (default ``RUN_DIR/report.html`` for one run, ``runs/report.html`` for several);
* ``flk sim explore``, ``flk sim coverage``, ``flk sim causality`` -- exploration at scale
  (:mod:`flk.impl.lab.cli.cmd_explore`).

``flk sim run --plant NAME`` runs with a planted bug from ``flk.impl.testing.planted`` (for
checker and shrink demonstrations); the run directory records it, so replay and shrink plant it again.

Progress bars (stderr, interactive terminals only, off with ``--quiet``) show ETA.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import UsageError, local_workers, output_dir, output_file, write_output


def configure(p) -> None:
    sub = p.add_subparsers(dest="sim_cmd", metavar="SUBCOMMAND", required=True)
    sub.add_parser("list", help="list the scenario catalog")
    _configure_run(sub.add_parser("run", help="run one scenario"))
    _configure_other_commands(sub)


def _configure_run(r) -> None:
    r.add_argument("scenario", help="catalog name or path to a .toml file")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--out", default="runs", help="artifact root (default runs/)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--history-format", choices=["jsonl", "jsonl.gz"], default="jsonl",
                   help="jsonl.gz: the compact history, streamed to the run folder while the run goes (long studies)")
    r.add_argument("--force", action="store_true",
                   help="replace a different run (other overrides, scenario content or planted bug) in the run folder")
    r.add_argument("--json", action="store_true", help="print results as JSON")
    r.add_argument("--junit", metavar="FILE", default=None,
                   help="also write a JUnit XML report (a testcase per invariant and SLO) for CI")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--plant", default=None, metavar="NAME",
                   help="run with a planted bug (flk.impl.testing.planted: replay-rewrites-answer)")
    r.add_argument("--check-model", action="store_true",
                   help="three verdicts per invariant: in-sim checkers, black-box history checker, and the "
                        "model (the history mapped onto flk.model's actions: every step enabled, every answer equal)")


def _configure_other_commands(sub) -> None:
    v = sub.add_parser("validate", help="check scenario files against the schema (nothing runs)")
    v.add_argument("files", nargs="+", metavar="FILE", help="catalog names or .toml paths")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ref = sub.add_parser("reference", help="print the scenario file reference (Markdown)")
    ref.add_argument("--metrics", action="store_true", help="print the metrics reference instead")
    t = sub.add_parser("topology", help="draw a scenario's network graph as PNG, faulted links marked")
    t.add_argument("scenario")
    t.add_argument("--out", default=None, help="PNG path (default runs/<name>-topology.png)")
    t.add_argument("--at", type=float, default=None, help="mark links cut at this simulated second "
                   "(default: every link any partition cuts)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rp = sub.add_parser("replay", help="re-run a run directory and compare digests (and its saved history)")
    rp.add_argument("run_dir")
    sw = sub.add_parser("sweep", help="run a scenario over many seeds / parameter values")
    sw.add_argument("scenario")
    sw.add_argument("--seeds", default="1-10", help="e.g. 1-100 or 1,2,5")
    sw.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2")
    sw.add_argument("--workers", type=local_workers, default=2)
    sw.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    sw.add_argument("--out", default="runs/sweeps", help="root; each sweep spec gets its own folder")
    sw.add_argument("--keep-runs", action="store_true",
                    help="keep every run's artifacts (failing runs are always kept)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--junit", metavar="FILE", default=None,
                    help="also write a JUnit XML report (a testcase per run) for CI")
    d = sub.add_parser("diff", help="compare two run directories (exit 0 identical histories, 1 they differ)",
                       description="Compare two run directories: the first diverging history event and the "
                       "invariants, SLOs and figures that differ. Exit 0: identical histories; 1: they differ "
                       "(like diff(1)); 2: bad input.")
    d.add_argument("run_a")
    d.add_argument("run_b")
    d.add_argument("--json", action="store_true", help="print the comparison as JSON")
    sh = sub.add_parser("shrink", help="reduce a failing run to a minimal failing regression case")
    sh.add_argument("run_dir")
    sh.add_argument("--invariant", default=None, metavar="ID",
                    help="the check that must keep failing (default: the run's first failed check)")
    sh.add_argument("--out", default=None, metavar="FILE", help="default RUN_DIR/regression-candidate.toml")
    sh.add_argument("--max-runs", type=int, default=None, metavar="N", help="simulator runs at most (default 200)")
    sh.add_argument("--quiet", action="store_true", help="no step-by-step output")
    rep = sub.add_parser("report", help="write the HTML report of finished runs")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", default=None, metavar="FILE",
                     help="default RUN_DIR/report.html (one run) or runs/report.html")
    from .cmd_cluster import configure_calibrate

    configure_calibrate(sub)
    from . import cmd_explore

    cmd_explore.configure(sub)


MAX_SEEDS = 1_000_000  # seeds of one command (a range past it is a typo, and its list would fill the memory)


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` (``1-100``, ``1,2,5`` or both): each seed in [0, 2^64-1] (what a run accepts,
    checked here before a pool starts), at most :data:`MAX_SEEDS` of them."""
    from ...core.signals import MASK64  # the seed's range (SplitMix64's state)

    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise UsageError(f"--seeds: an empty item in {text[:80]!r} (use 1-100 or 1,2,5)")
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                if len(seeds) + hi - lo + 1 > MAX_SEEDS:
                    raise UsageError(f"--seeds: more than {MAX_SEEDS:,} seeds")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(f"--seeds: cannot parse {text[:80]!r} (use 1-100 or 1,2,5)") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError("--seeds: need at least one non-negative seed")
    if len(seeds) > MAX_SEEDS:
        raise UsageError(f"--seeds: more than {MAX_SEEDS:,} seeds")
    if any(s > MASK64 for s in seeds):
        raise UsageError("--seeds: each seed must be in [0, 2^64-1]")
    if len(set(seeds)) != len(seeds):  # a seed run twice is the same run twice
        seen: set[int] = set()
        twice = next(s for s in seeds if s in seen or seen.add(s))
        raise UsageError(f"--seeds: seed {twice} given twice in {text[:80]!r}")
    return seeds


def _print_table(res: dict, out=None) -> None:
    out = sys.stdout if out is None else out  # read at call time: a default bound at import goes stale
    print(f"scenario {res['scenario']}  seed {res['seed']}  events {res['events']}", file=out)
    print(f"{'check':<34} {'kind':<10} {'result':<7} detail", file=out)
    for c in res["invariants"]:
        detail = f"checked {c['checked']}" + (f", {c['violation_count']} violations" if c["violation_count"] else "")
        if c.get("note"):
            detail += f" ({c['note']})"
        first = c["violations"][0] if c.get("violations") else None
        if isinstance(first, dict) and isinstance(first.get("why"), str):
            detail += f"; first: {first['why'][:120]}"  # the rest are in results.json
        verdict = "FAIL" if not c["ok"] else ("PASS" if c.get("exercised", True) else "N/A")
        if verdict == "N/A":
            detail = "not exercised: nothing to check in this run" + (f" ({c['note']})" if c.get("note") else "")
        print(f"{c['id']:<34} {c['kind']:<10} {verdict:<7} {detail}", file=out)
    for s in res["slos"]:
        print(f"{'SLO ' + s['metric']:<34} {'slo':<10} {'PASS' if s['ok'] else 'FAIL':<7} "
              f"{s['value']!r} {s['op']} {s['target']!r}", file=out)
    m = res["metrics"]
    print(f"requests {m['requests']}  errors {m['error_rate']:.4f}  p50 {m['latency_p50_ms']:.1f} ms  "
          f"p95 {m['latency_p95_ms']:.1f} ms  p99 {m['latency_p99_ms']:.1f} ms  429 {m['rate_429']:.4f}", file=out)
    print(f"history sha256 {res['digest']}", file=out)
    if res.get("verdicts"):
        _print_verdicts(res["verdicts"], out)
    if res.get("out_dir"):
        print(f"wrote {res['out_dir']}", file=out)
    if not res["valid"]:
        print(f"INVALID run -- reproduce with: flk sim replay {res.get('out_dir', '<run dir>')}", file=out)
        print(f"fault schedule: {res.get('fault_schedule')}", file=out)


def _print_verdicts(v: dict, out) -> None:
    m = v["model"]
    print(f"three verdicts (--check-model): model says {m['verdict']} ({m['steps']} steps mapped, "
          f"{m['hidden_replication_steps']} hidden replication steps"
          + (f"; not mapped: {', '.join(m['unmapped'])}" if m["unmapped"] else "") + ")", file=out)
    print(f"{'invariant':<34} {'in-sim':<9} {'black-box':<10} model", file=out)
    for inv, row in v["by_invariant"].items():
        print(f"{inv:<34} {row.get('in_sim', '-'):<9} {row.get('black_box', '-'):<10} {row.get('model', '-')}",
              file=out)
    first = next((r["first"] for r in m["invariants"].values() if r["first"]), None)
    if first:
        print(f"first model violation: {first}", file=out)


def _validate(files: list[str], overrides: list[str]) -> int:
    """Every file's verdict (a bad one does not hide the next): exit 2 if any is bad."""
    from flk.sim.scenario import ScenarioError, load

    bad = 0
    for name in files:
        try:
            sc = load(name, overrides)
        except ScenarioError as exc:
            print(f"flk sim: error: {exc}", file=sys.stderr)
            bad += 1
            continue
        print(f"{sc.source}: valid ({sc.name}, {len(sc.data['regions'])} regions, "
              f"{len(sc.data['faults'])} faults, {len(sc.data['slo'])} SLOs)")
    if bad and len(files) > 1:
        print(f"flk sim: {bad} of {len(files)} files invalid", file=sys.stderr)
    return 2 if bad else 0


def _sweep(args) -> int:
    from flk.sim import api

    params = {}
    for p in args.param:
        if "=" not in p:
            raise UsageError(f"--param {p!r}: use KEY=V1,V2")
        k, v = p.split("=", 1)
        params[k] = v.split(",")
    seeds = parse_seeds(args.seeds)
    junit_out = output_file(args.junit, "--junit") if args.junit else None  # before the runs
    table = api.sweep(args.scenario, seeds, params, workers=args.workers,
                      scheduler=args.scheduler, out=output_dir(args.out), keep_runs=args.keep_runs,
                      progress=not args.quiet)
    if junit_out is not None:
        from flk.sim.junitreport import sweep_document

        write_output(junit_out, sweep_document(table, args.scenario))
    columns = [c for c in ["seed", *sorted(params), "valid", *table.attrs["headline"]] if c in table.columns]
    print(table[columns].to_string(max_rows=40))
    summary = table.attrs["aggregate"]
    if not summary.empty:
        print("\nper parameter point (95 % bootstrap CI of the mean):")
        print(summary.to_string(max_rows=60, float_format=lambda x: f"{x:.4g}"))
    failing = table.attrs["failures"]
    print(f"\n{len(table)} runs, {len(failing)} failing")
    for item in failing:
        print(f"  seed {item['seed']} {item['overrides']}: {item['failed']}\n    {item['rerun']}"
              + (f"\n    {item['replay']}" if item["replay"] else ""))
    print(f"wrote {table.attrs['out_dir']} (results.csv, results.parquet, aggregate.csv, failures.csv, plots)")
    return 0 if not failing else 1


def _run(args) -> int:
    import json

    from flk.sim import api

    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed: must be a non-negative integer, got {args.seed}")
    junit_out = output_file(args.junit, "--junit") if args.junit else None  # before the run
    res = api.run(args.scenario, seed=args.seed, overrides=args.overrides, out=output_dir(args.out),
                  plots=not args.no_plots, progress=not args.quiet and not args.json, plant=args.plant,
                  force=args.force, check_model=args.check_model, history_format=args.history_format)
    if junit_out is not None:
        from flk.sim.junitreport import runs_document

        write_output(junit_out, runs_document([res.results]))
    if args.json:
        print(json.dumps(res.results, sort_keys=True))
    else:
        _print_table(res.results)
    return 0 if res.valid else 1


def _diff(args) -> int:
    import json

    from flk.sim import diff

    report = diff.diff(Path(args.run_a), Path(args.run_b))
    print(json.dumps(report, sort_keys=True) if args.json else diff.render(report))
    return 0 if report["identical"] else 1


def _shrink(args) -> int:
    from flk.sim import api
    from flk.sim.shrink import ShrinkError

    if args.max_runs is not None and args.max_runs < 1:
        raise UsageError(f"--max-runs: must be at least 1, got {args.max_runs}")
    if args.out:
        try:
            api.check_regression_path(Path(args.out))  # before its folder is made and the runs spent
        except ValueError as exc:
            raise UsageError(f"--out {exc}") from None
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        shrunk = api.shrink(Path(args.run_dir), invariant=args.invariant,
                            out=output_file(args.out) if args.out else None, max_runs=args.max_runs, log=log)
    except ShrinkError as exc:
        print(f"cannot shrink: {exc}", file=sys.stderr)
        return 1
    s = shrunk.summary()
    before, after = s["before"], s["after"]
    print(f"shrunk {shrunk.target} in {shrunk.runs} runs"
          + (" (run budget spent: not minimal; raise --max-runs)" if shrunk.budget_spent else "") + ":")
    for key in ("faults", "agents", "duration_s", "quiescence_s", "rate_per_s"):
        print(f"  {key:<13} {before[key]!s:>8} -> {after[key]}")
    print(f"wrote {shrunk.path}")
    print(f"replay: flk sim run {shrunk.path}" + (f" --plant {shrunk.plant}" if shrunk.plant else ""))
    if not shrunk.confirmed:
        print(f"WARNING: the written case did not fail {shrunk.target} when run", file=sys.stderr)
        return 1
    return 0


def _topology(args) -> int:
    import math

    from flk.sim import api
    from flk.sim.topology import check_image_path

    if args.at is not None and not (math.isfinite(args.at) and args.at >= 0):
        raise UsageError(f"--at: must be a simulated second >= 0, got {args.at!r}")
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.scenario).stem}-topology.png"
    try:
        check_image_path(out)  # before its folder is made
    except ValueError as exc:
        raise UsageError(f"--out {exc}") from None
    out = output_file(out)
    cut = api.draw_topology(args.scenario, out, overrides=args.overrides, at_s=args.at)
    print(f"wrote {out} ({len(cut)} links cut by partitions: {', '.join(cut) or 'none'})")
    return 0


def _replay(args) -> int:
    """Exit 0: the re-run's history, the recorded digest and the saved history agree (and the run is
    valid); 1: one of them differs (or the run is invalid); 2: an unreadable run folder."""
    from flk.sim import api

    rp = api.replay(Path(args.run_dir))
    _print_table(rp.result.results)
    if not rp.reproduced:
        print(f"NOT REPRODUCED: expected {rp.expected}, got {rp.result.digest}", file=sys.stderr)
    if rp.saved != rp.expected:
        print(f"SAVED HISTORY DIFFERS: {rp.history_path} has sha256 {rp.saved}, results.json records "
              f"{rp.expected}" + (" (the re-run's)" if rp.reproduced else ""), file=sys.stderr)
    if not rp.ok:
        return 1
    print(f"reproduced exactly: {rp.expected}")
    return 0 if rp.result.valid else 1


def _report(args) -> int:
    from flk.sim.scenario import ScenarioError

    from ..report import write_run_report

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not (d / "results.json").is_file():
            raise UsageError(f"{d}: not a run directory (no results.json; `flk sim run` writes one)")
    out = output_file(args.out if args.out else (dirs[0] / "report.html" if len(dirs) == 1
                                                 else Path("runs/report.html")))
    try:
        write_run_report(dirs, out)
    except ScenarioError as exc:  # a run folder's file (results, scenario, history) is not what a run wrote
        raise UsageError(f"cannot read the run: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot write the report: {exc}") from None
    print(f"wrote {out}")
    return 0


def run(args) -> int:
    from flk.sim import api
    from flk.sim.scenario import ScenarioError

    try:
        if args.sim_cmd == "list":
            for name, desc in api.catalog():
                print(f"{name:<28} {desc}")
            return 0
        if args.sim_cmd == "validate":
            return _validate(args.files, args.overrides)
        if args.sim_cmd == "reference":
            print(api.metrics_reference() if args.metrics else api.reference(), end="" if args.metrics else "\n")
            return 0
        if args.sim_cmd == "topology":
            return _topology(args)
        if args.sim_cmd == "run":
            return _run(args)
        if args.sim_cmd == "replay":
            return _replay(args)
        if args.sim_cmd == "sweep":
            return _sweep(args)
        if args.sim_cmd == "diff":
            return _diff(args)
        if args.sim_cmd == "shrink":
            return _shrink(args)
        if args.sim_cmd == "report":
            return _report(args)
        if args.sim_cmd in ("explore", "coverage", "causality"):
            from . import cmd_explore

            return cmd_explore.run(args)
        if args.sim_cmd == "calibrate":
            from .cmd_cluster import run_calibrate

            return run_calibrate(args, parse_seeds(args.seeds))
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"unknown sim command {args.sim_cmd!r}")
