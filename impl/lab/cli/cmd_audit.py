"""``flk audit``: verify (and anchor) a WORM audit log.

``flk audit verify DIR [--anchors ADIR] [--json]`` exits 0 when the log is
intact, 1 when it finds a violation of INV-WORM-CHAIN (and names the first bad
segment and entry), 2 for bad input (no such directory, not an audit log).
``flk audit anchor DIR --anchors ADIR`` anchors the sealed segments not yet
anchored (the batch root goes to the attestation directory).
"""

from __future__ import annotations

import json
import os
import sys

from ...governance import audit
from . import UsageError


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="audit_cmd", metavar="ACTION")
    v = sub.add_parser("verify", help="verify the hash chain, seals, HEAD and anchors (INV-WORM-CHAIN)")
    v.add_argument("directory", help="audit log directory")
    v.add_argument("--anchors", help="attestation directory (default: DIR/anchors if it exists)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    a = sub.add_parser("anchor", help="anchor sealed segments into an attestation directory")
    a.add_argument("directory")
    a.add_argument("--anchors", help="attestation directory (default: DIR/anchors)")
    a.add_argument("--now", type=float, required=True, help="anchor time, seconds since the epoch")


def _log_dir(path: str) -> str:
    if not os.path.isdir(path):
        raise UsageError(f"{path}: not a directory")
    names = os.listdir(path)
    if not any(n.startswith("seg-") or n == audit.HEAD for n in names):
        raise UsageError(f"{path}: not an audit log (no seg-*.log files and no {audit.HEAD})")
    return path


def run(args) -> int:
    if args.audit_cmd is None:
        raise UsageError("missing action: verify or anchor")
    directory = _log_dir(args.directory)
    anchors = args.anchors or os.path.join(directory, "anchors")
    if args.anchors and not os.path.isdir(args.anchors) and args.audit_cmd == "verify":
        raise UsageError(f"{args.anchors}: not a directory")
    if args.audit_cmd == "anchor":
        try:
            log = audit.AuditLog(directory)
            result = log.anchor(audit.AttestationStore(anchors), args.now)
        except (audit.AuditCorruption, audit.WormViolation) as exc:
            print(f"INV-WORM-CHAIN violated: refusing to anchor: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"anchored": result is not None, "anchor": result}, sort_keys=True))
        return 0
    try:
        report = audit.verify_directory(directory, anchors if os.path.isdir(anchors) else None)
    except OSError as exc:
        raise UsageError(f"cannot read {directory}: {exc.strerror}") from None
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    elif report.ok:
        print(
            f"ok: INV-WORM-CHAIN holds: {report.entries} entries in {report.segments} segments "
            f"({report.sealed_segments} sealed), {report.anchors} anchors"
        )
    if not report.ok:
        print(f"INV-WORM-CHAIN violated: {report.problem.describe()}", file=sys.stderr)
        return 1
    return 0
