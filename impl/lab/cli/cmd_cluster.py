"""``flk cluster``: catalog scenarios on a real cluster of ``flk serve`` regions.

* ``flk cluster run NAME|FILE [--seed N] [--backend sqlite] [--set key=value ...] [--out DIR]``
  -- every region a real process in its own network namespace, the workload in wall-clock
  time, the fault schedule by real mechanisms (SIGKILL/restart, SIGSTOP/SIGCONT, nftables
  drop rules, libfaketime, a filled WAL tmpfs, a stopped Redis/PostgreSQL), the simulator's checkers by INV-ID; writes the run directory
  ``flk sim run`` writes (``DIR/<scenario>/<seed>/``, default ``runs/cluster``); exit 0 valid,
  1 an invariant or SLO violated, 2 bad input or a fault this machine cannot apply (named,
  before anything starts), 130 interrupted (everything started is removed first);
  ``--plant racy-dedup[@REGION]`` runs that region's server with a planted bug
  (:mod:`flk.impl.lab.cluster.planted`) the checks must catch; ``--prometheus`` starts a real
  Prometheus on loopback that scrapes every region with the shipped rules, and the scenario's
  ``[alerts]`` declarations become ``ALERT-<name>`` checks (:mod:`flk.impl.lab.cluster.prometheus`);
* ``flk cluster mechanisms`` -- what each supported fault kind really does;
* ``flk cluster cleanup [--prefix P]`` -- remove the namespaces, links, mounts, processes and work dir a killed runner left
  (its ledger ``flk-cluster-<prefix>.json`` in the temp folder).

Needs root (network namespaces), iproute2, nftables, the moto S3 server (``pip install
'flk-lab[dev]'``) and, for clock skew, libfaketime; ``make setup`` installs them.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from . import UsageError, output_dir, output_file, write_output


def configure(p) -> None:
    sub = p.add_subparsers(dest="cluster_cmd", metavar="SUBCOMMAND", required=True)
    r = sub.add_parser("run", help="run a scenario on real flk serve regions with real faults")
    r.add_argument("scenario", help="catalog name or path to a .toml file")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--backend", default="sqlite", help="dedup store of every region: sqlite (default), redis or "
                   "postgres (each region then runs its own redis-server / PostgreSQL)")
    r.add_argument("--out", default="runs/cluster", help="artifact root (default runs/cluster)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--prefix", default=None, help="network namespace prefix (default flk<pid>; "
                   "env FLK_CLUSTER_PREFIX)")
    r.add_argument("--json", action="store_true", help="print results as JSON")
    r.add_argument("--junit", metavar="FILE", default=None,
                   help="also write a JUnit XML report (a testcase per invariant and SLO) for CI")
    r.add_argument("--plant", default=None, metavar="NAME[@REGION]",
                   help="run a planted server bug in REGION (every region without @): racy-dedup "
                        "(flk.impl.lab.cluster.planted); the checks must catch it")
    r.add_argument("--plant-window", type=float, default=1.0, metavar="S",
                   help="the planted race window in seconds (default 1.0)")
    r.add_argument("--prometheus", action="store_true",
                   help="a real Prometheus scrapes every region with deploy/prometheus/rules; the scenario's "
                        "[alerts] declarations are checked against what it reported (ALERT-<name>)")
    sub.add_parser("mechanisms", help="what each supported fault kind really does")
    c = sub.add_parser("cleanup", help="remove what killed runs left (their ledgers in the temp folder)")
    c.add_argument("--prefix", default=None, help="only the run with this namespace prefix (default: every "
                   "ledger whose runner is gone)")


def run(args) -> int:
    import json

    from flk.impl.lab.cluster import runner
    from flk.sim.scenario import ScenarioError, load

    if args.cluster_cmd == "cleanup":
        import glob
        import tempfile

        from flk.impl.lab.cluster.network import cleanup_ledger

        left = []
        if args.prefix is not None and (not args.prefix.isalnum() or len(args.prefix) > 9):
            raise UsageError(f"--prefix: letters and digits, at most 9, got {args.prefix!r}")
        for path in sorted(glob.glob(str(Path(tempfile.gettempdir()) / f"flk-cluster-{args.prefix or '*'}.json"))):
            left += cleanup_ledger(path)
        print("nothing left behind" if not left else "could not remove: " + ", ".join(left))
        return 0 if not left else 1
    if args.cluster_cmd == "mechanisms":
        for kind, what in runner.MECHANISMS.items():
            print(f"{kind:<12} {what}")
        return 0
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed: must be a non-negative integer, got {args.seed}")
    if args.prefix is not None and (not args.prefix.isalnum() or len(args.prefix) > 9):
        raise UsageError(f"--prefix: letters and digits, at most 9, got {args.prefix!r}")
    if not 0 < args.plant_window < 60:
        raise UsageError(f"--plant-window: seconds in (0, 60), got {args.plant_window}")
    try:
        sc = load(args.scenario, args.overrides)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    seed = sc.seed if args.seed is None else args.seed
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    out = output_dir(args.out)  # before any namespace or process is started
    junit_out = output_file(args.junit, "--junit") if args.junit else None
    try:
        res = runner.run(sc, seed, backend=args.backend, out=out, plots=not args.no_plots,
                         prefix=args.prefix, log=log, plant=args.plant, plant_window_s=args.plant_window,
                         prometheus=args.prometheus)
    except runner.Refused as exc:
        raise UsageError(f"{sc.name}: cannot run on a real cluster here: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- a failed run is reported, never a traceback
        from flk.impl.storage.quarantine import describe_error

        print(f"flk cluster run: {sc.name} seed {seed} failed ({describe_error(exc)}); every process, "
              "namespace and mount it started was removed", file=sys.stderr)
        return 1
    if junit_out is not None:
        from flk.sim.junitreport import runs_document

        again = " ".join(["flk cluster run", shlex.quote(args.scenario), "--seed", str(seed), "--backend",
                          shlex.quote(args.backend), *(f"--set {shlex.quote(o)}" for o in args.overrides)])
        write_output(junit_out, runs_document([res], "flk cluster run", again))
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        from .cmd_sim import _print_table

        _print_table(res)
        for p in res["cluster"]["partitions"]:
            print(f"partition {p['sides'][0]} | {p['sides'][1]}: {p['dropped_packets']} packets dropped by "
                  f"{len(p['rules'])} nftables rules", file=sys.stdout)
        from flk.impl.lab.cluster.hostload import saturation_note

        note = saturation_note(res["cluster"].get("host"))
        if note:
            print(note)
    return 0 if res["valid"] else 1


def configure_calibrate(sub) -> None:
    """``flk sim calibrate`` (a subcommand of ``flk sim``; it lives here with the cluster runner)."""
    c = sub.add_parser("calibrate", help="the simulator's figures beside a real cluster's, per figure")
    c.add_argument("scenario", nargs="?", help="catalog name or .toml file (not with --fit)")
    c.add_argument("--fit", action="store_true", help="measure this machine's fsync, store and CPU-per-request "
                   "figures and write them as a simulator profile (a scenario names it: [study] profile)")
    c.add_argument("--profile-out", default="runs/profiles/this-machine.toml", metavar="FILE",
                   help="--fit: where the profile goes (default runs/profiles/this-machine.toml)")
    c.add_argument("--fit-samples", type=int, default=100, metavar="N", help="--fit: samples per figure")
    c.add_argument("--fit-dir", default=None, metavar="DIR",
                   help="--fit: measure fsync on this folder's disk (default the temp folder)")
    c.add_argument("--seeds", default="1-10", help="simulator seeds, e.g. 1-10 or 1,2,5")
    c.add_argument("--real-runs", type=int, default=3, help="real cluster runs (seeds from --seeds in order)")
    c.add_argument("--real-dir", action="append", default=[], metavar="RUN_DIR",
                   help="use this finished cluster run instead of running one (repeatable)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--sim-set", dest="sim_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for the simulator side only (a mis-parameterised model)")
    c.add_argument("--backend", default="sqlite")
    c.add_argument("--out", default=None, help="default runs/calibration/<scenario>")
    c.add_argument("--json", action="store_true")


def run_calibrate(args, seeds: list[int]) -> int:
    import json

    from flk.impl.lab.cluster import calibrate, runner
    from flk.sim.scenario import load

    if args.fit:
        return _fit(args)
    if not args.scenario:
        raise UsageError("calibrate: name a scenario (or --fit)")
    if args.real_runs < 1 and not args.real_dir:
        raise UsageError("--real-runs: at least 1 (or --real-dir)")
    for d in args.real_dir:
        if not (Path(d) / "results.json").exists():
            raise UsageError(f"--real-dir {d}: not a run directory (no results.json)")
    sc = load(args.scenario, args.overrides)
    out = output_dir(args.out if args.out else Path("runs") / "calibration" / sc.name)
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        report = calibrate.calibrate(sc, seeds, args.real_runs, out, backend=args.backend,
                                     real_dirs=[Path(d) for d in args.real_dir], sim_overrides=args.sim_overrides,
                                     log=log)
    except runner.Refused as exc:
        raise UsageError(f"{sc.name}: cannot run on a real cluster here: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- a failed run is reported, never a traceback
        from flk.impl.storage.quarantine import describe_error

        print(f"flk sim calibrate: {sc.name} calibration failed ({describe_error(exc)}); every process, "
              "namespace and mount it started was removed", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True, default=str))
    else:
        print(f"{'figure':<26} {'sim mean [95% CI]':<30} {'real mean':>10} {'ratio':>7}  verdict")
        for r in report["figures"]:
            ci = f"{calibrate._fmt(r['sim_mean'])} [{calibrate._fmt(r['sim_ci95'][0])}, " \
                 f"{calibrate._fmt(r['sim_ci95'][1])}]"
            print(f"{r['figure']:<26} {ci:<30} {calibrate._fmt(r['real_mean']):>10} {calibrate._fmt(r['ratio']):>7}  "
                  f"{'agrees' if r['agrees'] else 'OUTSIDE tolerance ' + str(r['tolerance'])}")
        print(f"validity: sim {report['sim_valid']} real {report['real_valid']} "
              f"({'agree' if report['verdicts_agree'] else 'DIFFER'}); wrote {out / 'calibration.html'}")
        if report["unknown_reason"]:
            print(f"verdict: unknown ({report['unknown_reason']})")
    return 0 if report["ok"] else 1


def _fit(args) -> int:
    """``flk sim calibrate --fit``: this machine's parameters, written as a simulator profile."""
    import json

    from flk.impl.lab.cluster import calibrate

    if not 10 <= args.fit_samples <= 100_000:
        raise UsageError(f"--fit-samples: 10..100000, got {args.fit_samples}")
    if args.fit_dir is not None and not Path(args.fit_dir).is_dir():
        raise UsageError(f"--fit-dir {args.fit_dir}: not a folder")
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    profile = calibrate.fit(args.fit_samples, args.fit_dir, log=log)
    out = Path(args.profile_out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(calibrate.profile_toml(profile), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--profile-out {out}: cannot write: {exc.strerror}") from None
    if args.json:
        print(json.dumps({**profile, "file": str(out)}, sort_keys=True))
    else:
        for k, v in profile["region_defaults"].items():
            print(f"{k:<10} {v}")
        print(f"wrote {out} (load average {profile['profile']['load_average_1m']}); name it in a scenario: "
              f"[study] profile = \"{out}\"")
    return 0
