"""``flk demo``: run the whole lab end to end (what ``make demo`` runs)."""

from __future__ import annotations


def configure(p) -> None:
    p.add_argument("--out", default="runs/demo", help="where the report and run artifacts go")
    p.add_argument("--only", action="append", choices=["vectors", "simulator", "proofs", "server"],
                   help="run only these stages (repeatable)")


def run(args) -> int:
    from ..demo import WorkInTheWay, run_demo
    from . import UsageError, output_dir

    stages = tuple(args.only) if args.only else ("vectors", "simulator", "proofs", "server")
    try:
        return run_demo(output_dir(args.out), stages)
    except WorkInTheWay as exc:  # raised before any stage runs
        raise UsageError(f"--out {args.out}: {exc}") from None
