"""``flk history check FILE [FILE ...] [--final-reads FILE]``: the black-box history checker.

Why this command exists: ``flk agent load --history`` records what clients
observed of a real deployment (one line per HTTP attempt); this judges that
record alone with :mod:`flk.model.history` -- first-write-wins per (tenant,
pcs_id) across clients and regions (INV-FWW), idempotent replay
(INV-IDEMPOTENT-REPLAY) and, given final reads, no acknowledged loss
(INV-NO-ACKED-LOSS) -- and prints each anomaly with the minimal set of
operations that proves it.

Several FILEs are one history (concurrent load runs against the same
servers); their operation ids are prefixed ``c<n>/`` by file position.
``--final-reads`` is JSONL, one ``{"region", "tenant", "pcs_id", "digest",
"status"}`` per stored outcome (``region`` = the scheme://host:port the load
generator sent to; omitted = covers every region; ``{"region": R}`` alone =
region R was read and is empty).

Exit codes: 0 valid, 1 anomalies found, 2 bad input (unreadable file, a line
that is not a history record -- named by file and line).
"""

from __future__ import annotations

import json
import sys

from ...core import textdata


def configure(p) -> None:
    sub = p.add_subparsers(dest="history_command", metavar="ACTION", parser_class=type(p))
    c = sub.add_parser("check", help="check a client-observed history (exit 1 on anomalies)",
                       description="check a client-observed history (exit 1 on anomalies)")
    c.add_argument("files", nargs="+", metavar="FILE", help="JSONL written by flk agent load --history")
    c.add_argument("--final-reads", default=None, metavar="FILE",
                   help="JSONL of what each region's store holds at the end (enables INV-NO-ACKED-LOSS)")
    c.add_argument("--per-region", action="store_true",
                   help="first-write-wins per region only (asynchronous replication), not across regions")
    c.add_argument("--json", action="store_true", help="print the report as one JSON object")
    c.add_argument("--show", type=int, default=20, help="anomalies printed in full (default %(default)s)")


def _records(path: str):
    """(``path:line``, object) for every non-blank line of a JSONL file."""
    from . import UsageError, read_input

    raw = read_input(path, "history file")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{n}", textdata.json_loads(line)))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return out


def _load(args):
    from flk.model import history

    from . import UsageError

    ops = []
    for k, path in enumerate(args.files):
        prefix = f"c{k}/" if len(args.files) > 1 else ""
        records = _records(path)
        if not records:
            raise UsageError(f"{path} holds no operations (is it the file flk agent load --history wrote?)")
        try:
            ops.extend(history.op_from_load_record(rec, where, prefix) for where, rec in records)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    final = None
    if args.final_reads:
        try:
            final = history.final_reads_from_records(_records(args.final_reads))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return ops, final


def _print(report, show: int) -> None:
    print(f"history: {report.ops} operations on {report.keys} keys ({report.acked} acknowledged, "
          f"{report.indeterminate} indeterminate); final-read checks: {report.final_checked}")
    if report.ok:
        print("valid: no anomaly (INV-FWW, INV-IDEMPOTENT-REPLAY"
              + (", INV-NO-ACKED-LOSS)" if report.final_checked else "; no final reads given)"))
        return
    counts = ", ".join(f"{inv}={n}" for inv, n in report.by_invariant().items() if n)
    print(f"INVALID: {len(report.anomalies)} anomalies ({counts})")
    for anomaly in report.anomalies[:max(0, show)]:
        print(anomaly.describe())
    if len(report.anomalies) > show:
        print(f"... {len(report.anomalies) - show} more (--show N or --json for all)")


def run(args) -> int:
    from flk.model import history

    from . import UsageError

    if args.history_command is None:
        raise UsageError("expected an action: check")
    ops, final = _load(args)
    try:
        report = history.check(ops, final, per_region=args.per_region)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        json.dump(report.as_dict(), sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        _print(report, args.show)
    return 0 if report.ok else 1
