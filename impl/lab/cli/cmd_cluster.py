"""``flk cluster``: catalog scenarios on a real cluster of ``flk serve`` regions.

* ``flk cluster run NAME|FILE [--seed N] [--backend sqlite] [--set key=value ...] [--out DIR]``
  -- every region a real process in its own network namespace, the workload in wall-clock
  time, the fault schedule by real mechanisms (SIGKILL/restart, SIGSTOP/SIGCONT, nftables
  drop rules, libfaketime), the simulator's checkers by INV-ID; writes the run directory
  ``flk sim run`` writes (``DIR/<scenario>/<seed>/``, default ``runs/cluster``); exit 0 valid,
  1 an invariant or SLO violated, 2 bad input or a fault this machine cannot apply (named,
  before anything starts), 130 interrupted (everything started is removed first);
* ``flk cluster mechanisms`` -- what each supported fault kind really does.

Needs root (network namespaces), iproute2, nftables, the moto S3 server (``pip install
'flk-lab[dev]'``) and, for clock skew, libfaketime; ``make setup`` installs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import UsageError


def configure(p) -> None:
    sub = p.add_subparsers(dest="cluster_cmd", metavar="SUBCOMMAND", required=True)
    r = sub.add_parser("run", help="run a scenario on real flk serve regions with real faults")
    r.add_argument("scenario", help="catalog name or path to a .toml file")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--backend", default="sqlite", help="dedup store of every region (sqlite)")
    r.add_argument("--out", default="runs/cluster", help="artifact root (default runs/cluster)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--prefix", default=None, help="network namespace prefix (default flk<pid>; "
                   "env FLK_CLUSTER_PREFIX)")
    r.add_argument("--json", action="store_true", help="print results as JSON")
    sub.add_parser("mechanisms", help="what each supported fault kind really does")


def run(args) -> int:
    import json

    from flk.impl.lab.cluster import runner
    from flk.sim.scenario import ScenarioError, load

    if args.cluster_cmd == "mechanisms":
        for kind, what in runner.MECHANISMS.items():
            print(f"{kind:<12} {what}")
        return 0
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed: must be a non-negative integer, got {args.seed}")
    if args.prefix is not None and (not args.prefix.isalnum() or len(args.prefix) > 9):
        raise UsageError(f"--prefix: letters and digits, at most 9, got {args.prefix!r}")
    try:
        sc = load(args.scenario, args.overrides)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    seed = sc.seed if args.seed is None else args.seed
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        res = runner.run(sc, seed, backend=args.backend, out=Path(args.out), plots=not args.no_plots,
                         prefix=args.prefix, log=log)
    except runner.Refused as exc:
        raise UsageError(f"{sc.name}: cannot run on a real cluster here: {exc}") from None
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        from .cmd_sim import _print_table

        _print_table(res)
        for p in res["cluster"]["partitions"]:
            print(f"partition {p['sides'][0]} | {p['sides'][1]}: {p['dropped_packets']} packets dropped by "
                  f"{len(p['rules'])} nftables rules", file=sys.stdout)
    return 0 if res["valid"] else 1
