"""``flk compliance report --framework soc2|iso27001 --runs DIR... [--audit DIR] [--out DIR]``.

Lists each control the framework names with the evidence that supports it (the audit
chain verified with its head hash and anchors, the invariant and alert checks of the
runs, proofs, conformance results, the server's security settings). A control without
evidence says "no evidence", never "pass". A file given as evidence that is not UTF-8,
not JSON or not what its flag takes (``flk prove --json``, ``flk conformance ... --json``,
``KEY=VALUE`` lines) is bad input, refused before any report is written; so is a run
under ``--runs`` whose saved history is missing, damaged or not the one its ``results.json``
records (a ``results.json`` that is no run's is no evidence). Writes
``compliance-<framework>.json`` and ``.html`` to ``--out`` (default ``runs/compliance``).
Exit 0 when no control is failing, 1 when one is, 2 for bad input.
"""

from __future__ import annotations

import json
import os

from . import UsageError, output_dir


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="compliance_cmd", metavar="ACTION")
    r = sub.add_parser("report", help="write the evidence report (HTML + JSON)")
    r.add_argument("--framework", required=True, choices=("soc2", "iso27001"))
    r.add_argument("--runs", nargs="+", default=[], metavar="DIR", help="simulator run directories (searched)")
    r.add_argument("--audit", help="a WORM audit log directory (anchors in DIR/anchors)")
    r.add_argument("--proofs", help="flk prove --json output")
    r.add_argument("--conformance", help="a conformance --json report")
    r.add_argument("--server-env", help="the server's configuration as KEY=VALUE lines")
    r.add_argument("--out", default="runs/compliance", help="output directory (default runs/compliance)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    from ..compliance import FAILING, EvidenceError, read_evidence, report, write

    if args.compliance_cmd != "report":
        raise UsageError("missing action: report")
    for d in [*args.runs, *([args.audit] if args.audit else [])]:
        if not os.path.isdir(d):
            raise UsageError(f"{d}: not a directory")
    for f in (args.proofs, args.conformance, args.server_env):
        if f and not os.path.isfile(f):
            raise UsageError(f"{f}: no such file")
    files = {"proofs": args.proofs, "conformance": args.conformance, "server_env": args.server_env}
    try:
        read_evidence(**files)  # junk given as evidence: exit 2 before anything is written
        out = output_dir(args.out)
        doc = report(args.framework, args.runs, args.audit, **files)
    except EvidenceError as exc:
        raise UsageError(str(exc)) from None
    j, h = write(doc, out)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for c in doc["controls"]:
            print(f"{c['id']:<8} {c['status']:<12} {c['title']}")
        print(f"report: {h.resolve()} (json: {j})")
    return 1 if doc["counts"][FAILING] else 0
