"""``flk kpi RUN_DIR... [--out FILE] [--json]``: the KPI dashboard of finished simulator runs.

Reads each run's ``results.json`` (``kpi``: ground-truth containment, false escalation,
escalation, cost per trusted task, per tenant; ``ALERT-*`` checks) and writes one
self-contained HTML page (default ``runs/kpi.html``); ``--json`` prints the headline
figures. Exit 0, or 2 for a directory that holds no run, or a run whose saved history is
missing, damaged or not the one its ``results.json`` records (one line naming the file).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import UsageError, output_file


def configure(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<scenario>/<seed>)")
    parser.add_argument("--out", default="runs/kpi.html", help="the HTML dashboard (default runs/kpi.html)")
    parser.add_argument("--json", action="store_true", help="print the headline figures as JSON")


def run(args) -> int:
    from ..kpidash import NO_KPI, pct, read_runs, summary, usd, write_page

    dirs = [Path(d) for d in args.runs]
    for d in dirs:
        if not (d / "results.json").is_file():
            raise UsageError(f"{d}: not a run directory (no results.json)")
    out = output_file(args.out)  # a bad --out is not "cannot read the runs"
    try:
        runs = read_runs(dirs)  # every run read (and its history checked) once, before anything is written
        figures, path = summary(runs), write_page(runs, out)
    except OSError as exc:
        if exc.filename is not None and not _in_runs(exc.filename, dirs):
            raise UsageError(f"--out {args.out}: cannot write it: {exc.strerror or type(exc).__name__}") from None
        raise UsageError(f"cannot read the runs: {exc}") from None
    except (ValueError, KeyError) as exc:
        raise UsageError(f"cannot read the runs: {exc}") from None
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True))
    else:
        headline = (("containment", "containment_rate", pct, "no untrustworthy submission"),
                    ("false escalation", "false_escalation_rate", pct, "no trustworthy submission answered"),
                    ("cost per trusted task", "cost_per_trusted_task_usd", usd, "no trusted task"))
        for f in figures:  # a figure with nothing to measure says why (it printed Python's None)
            if not f["kpi_recorded"]:
                print(f"{f['run']}: {NO_KPI}")
                continue
            print(f"{f['run']}: " + ", ".join(f"{name} {fmt(f[key])}" + (f" ({why})" if f[key] is None else "")
                                             for name, key, fmt, why in headline))
        print(f"dashboard: {path.resolve()}")
    return 0


def _in_runs(filename, dirs: list[Path]) -> bool:
    """Whether an OS error's file is one of the runs' (else it is the dashboard being written)."""
    target = Path(filename).resolve()
    return any(target.is_relative_to(d.resolve()) for d in dirs)
