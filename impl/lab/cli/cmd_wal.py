"""``flk wal inspect DIR`` and ``flk wal verify DIR``: look at a write-ahead log.

Both read the directory and never change it (no torn-tail truncation, no
sealing). Works on inbox WAL and outbox directories alike (SPEC.md section 12).

* ``inspect``: segments, record counts, index ranges, sealed/manifest status,
  sizes, the records replay quarantined as poison (``quarantine.jsonl``:
  index, segment, reason, SHA-256 -- never the payload), plus any problem
  found (``--json`` for one JSON object).
* ``verify``: checks every frame checksum, segment continuity and every
  manifest's SHA-256; prints ``ok`` or one line per problem naming the segment
  and byte offset.

DIR may also be a server's WAL root (``DATA_DIR/wal``) or its data directory: each
worker's log (``worker-N``) is then inspected or verified in turn, under a header line
(``--json``: ``{"ok", "logs": [one report per worker]}``), and the exit code is the worst.

Exit codes: 0 the log is intact (warnings about what the next open repairs --
a torn tail of the last segment, a segment not yet sealed, leftover temp
files -- do not fail it), 1 corruption found, 2 bad input (missing directory,
not a directory, no WAL segments in it).
"""

from __future__ import annotations

import json
import sys


def configure(p) -> None:
    sub = p.add_subparsers(dest="wal_command", metavar="ACTION")
    for name, text in (("inspect", "show segments, counts, index ranges, seals and sizes"),
                       ("verify", "check checksums, continuity and manifests (exit 1 on corruption)")):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("dir", metavar="DIR", help="the WAL directory")
        q.add_argument("--json", action="store_true", help="print one JSON object")


def _inspect(directory: str) -> dict:
    from ...storage.walinspect import inspect_directory
    from . import UsageError

    try:
        return inspect_directory(directory)
    except FileNotFoundError:
        raise UsageError(f"no such directory: {directory}") from None
    except NotADirectoryError:
        raise UsageError(f"not a directory: {directory}") from None
    except PermissionError as exc:
        raise UsageError(f"cannot read {directory}: {exc.strerror}") from None


def _reports(directory: str) -> list[dict]:
    """The report of ``directory``'s log; or, for a server's WAL root or data directory, of
    each worker's log (``worker-N`` in worker order) that holds segments."""
    from ...server.config import worker_wal_dirs
    from . import UsageError

    rep = _inspect(directory)
    if rep["segments"]:
        return [rep]
    reports = [r for r in (_inspect(d) for d in worker_wal_dirs(directory)) if r["segments"]]
    if not reports:
        raise UsageError(f"no WAL segments in {directory} (nor in a server's worker-N logs under it)")
    return reports


def _where(p: dict) -> str:
    return p["segment"] if p["offset"] is None else f"{p['segment']} at byte {p['offset']}"


def _print_quarantine(quarantine: dict) -> None:
    if not quarantine["count"]:
        return
    print(f"quarantined (poison, skipped by replay; bytes in {quarantine['file']}): {quarantine['count']}")
    print(f"{'source':<16} {'index':>10} {'segment':<40} {'sha256':<16} reason")
    for e in quarantine["entries"]:
        print(f"{str(e.get('source')):<16} {e.get('index'):>10} {str(e.get('segment')):<40} "
              f"{str(e.get('digest'))[:16]:<16} {e.get('reason')}")


def run(args) -> int:
    from . import UsageError

    if args.wal_command is None:
        raise UsageError("expected an action: inspect or verify")
    reports = _reports(args.dir)
    ok = all(r["ok"] for r in reports)
    if args.json:
        doc = reports[0] if len(reports) == 1 and reports[0]["directory"] == args.dir else {"ok": ok, "logs": reports}
        print(json.dumps(doc, sort_keys=True))
        return 0 if ok else 1
    for rep in reports:
        if args.wal_command == "verify" and (len(reports) > 1 or rep["directory"] != args.dir):
            print(f"== {rep['directory']}")  # inspect's first line names it
        _print_one(args.wal_command, rep)
    return 0 if ok else 1


def _print_one(action: str, rep: dict) -> None:
    if action == "inspect":
        print(f"{rep['directory']}: {len(rep['segments'])} segment(s), {rep['records']} record(s), "
              f"indexes {rep['first_index']}..{rep['next_index'] - 1 if rep['records'] else '-'}")
        # bytes: the records' bytes; a live log's file also holds zeros written ahead (WAL_PREALLOCATE)
        print(f"{'segment':<40} {'first':>10} {'last':>10} {'count':>8} {'bytes':>10} {'zeros ahead':>11}  "
              "sealed  status")
        for s in rep["segments"]:
            last = "-" if s["last_index"] is None else s["last_index"]
            sealed = {"ok": "yes", "mismatch": "BAD", "none": "no"}[s["manifest"]]
            ahead = s.get("zero_tail_bytes", 0)
            print(f"{s['name']:<40} {s['first_index']:>10} {last:>10} {s['count']:>8} {s['bytes'] - ahead:>10} "
                  f"{ahead:>11}  {sealed:<6}  {s['status']}")
        _print_quarantine(rep["quarantine"])
    for w in rep["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for p in rep["problems"]:
        print(f"CORRUPT: {_where(p)}: {p['reason']}", file=sys.stderr if action == "inspect" else sys.stdout)
    if action == "verify" and rep["ok"]:
        print(f"ok: {rep['records']} record(s) in {len(rep['segments'])} segment(s), "
              f"{sum(1 for s in rep['segments'] if s['sealed'])} sealed with matching manifests")
