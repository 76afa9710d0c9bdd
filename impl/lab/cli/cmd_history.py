"""``flk history check FILE [FILE ...] [--final-reads FILE]``: the black-box history checker;
``flk history final-reads``: what a dedup store holds, as those final reads.

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

``flk history final-reads`` writes those final reads: every outcome a dedup store
holds, read through the store contract's ``scan``. The store is the one ``flk serve``
would open with the same environment, ``--config`` and ``--data-dir`` (SQLite in the
data dir, Redis, Postgres, sharded, mid-migration), or ``--store URL``. ``--region``
labels the lines with the URL the load generator sent to that region (one run per
region, the outputs concatenated); without it the read covers every region. Read once
the load has ended (and replication has converged, for a cross-region check): a read
taken while writes still land is not final. A store that is missing (no SQLite file
where the data dir says), unreachable or in-memory is exit 2, never an empty read --
an empty read says that nothing survived.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from ...core import textdata
from . import count


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
    c.add_argument("--show", type=count, default=20, help="anomalies printed in full (default %(default)s)")
    f = sub.add_parser("final-reads", help="write what a dedup store holds as final reads for check --final-reads",
                       description="write every outcome a dedup store holds as final-read JSONL (for flk history "
                                   "check --final-reads); the store flk serve would open with the same environment, "
                                   "--config and --data-dir, or --store URL. Run it after the load has ended.")
    f.add_argument("--store", metavar="URL", default=None,
                   help="a dedup store URL (sqlite:///FILE, redis://..., postgresql://...) instead of the server's "
                        "configuration")
    f.add_argument("--config", metavar="FILE", default=None, help="the server's TOML configuration (as flk serve)")
    f.add_argument("--data-dir", default=None, help="the server's data directory (as flk serve; env DATA_DIR)")
    f.add_argument("--region", metavar="URL", default=None,
                   help="the URL the load generator sent to this region (labels every line; default: the read "
                        "covers every region)")
    f.add_argument("--out", metavar="FILE", default=None, help="write the JSONL here (default: standard output)")


def _records(path: str, what: str = "history file"):
    """(``path:line``, object) for every non-blank line of a JSONL file (``what`` names its role)."""
    from . import UsageError, read_input

    raw = read_input(path, what)
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not UTF-8 text") from None
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
            final = history.final_reads_from_records(_records(args.final_reads, "--final-reads"))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return ops, final


def _print(report, show: int, has_final: bool) -> None:
    print(f"history: {report.ops} operations on {report.keys} keys ({report.acked} acknowledged, "
          f"{report.indeterminate} indeterminate); final-read checks: {report.final_checked}")
    for region in report.final_unmatched:
        print(f"warning: the final reads name region {region}, which no operation was sent to (its --region "
              f"must be the URL the load sent to: {', '.join(report.final_unread) or 'see the history'})")
    for region in report.final_unread:
        print(f"warning: region {region} acknowledged operations but no final read covers it: not checked for loss")
    if report.ok:
        print("valid: no anomaly (INV-FWW, INV-IDEMPOTENT-REPLAY" + (
            ", INV-NO-ACKED-LOSS)" if report.final_checked else
            "; INV-NO-ACKED-LOSS not exercised: no final read covers an acknowledged operation)" if has_final
            else "; no final reads given)"))
        return
    counts = ", ".join(f"{inv}={n}" for inv, n in report.by_invariant().items() if n)
    print(f"INVALID: {len(report.anomalies)} anomalies ({counts})")
    for anomaly in report.anomalies[:max(0, show)]:
        print(anomaly.describe())
    if len(report.anomalies) > show:
        print(f"... {len(report.anomalies) - show} more (--show N or --json for all)")


def _open_final_store(args, now: float):
    """(store, what to call it) for ``final-reads``; a :class:`UsageError` for a store that
    is missing, unreachable, in-memory or badly configured -- never an empty read."""
    from ...dedup import open_store, sqlite_path
    from ...server.config import ConfigError, load_config, scrub, secret_fragments
    from . import UsageError

    if args.store is not None:
        if args.config is not None or args.data_dir is not None:
            raise UsageError("--store names the store itself: give it without --config / --data-dir")
        url, redact = args.store, (lambda text: scrub(str(text), secret_fragments("credentials", args.store)))
        if url.split(":", 1)[0] == "memory":
            raise UsageError("--store memory: an in-memory store lives in its server's process; nothing outlives "
                             "it to read")
        sqlite_files = [url] if url.startswith("sqlite:") else []
        opener = lambda: open_store(url)  # noqa: E731
    else:
        try:
            cfg = load_config(None, args.config, {"DATA_DIR": args.data_dir}, create_key=False)
        except ConfigError as exc:
            raise UsageError(f"configuration: {exc}") from None
        if cfg.dedup_backend == "memory":
            raise UsageError("DEDUP_BACKEND=memory: the store lived in the server's process; nothing outlives it "
                             "to read")
        url, redact = cfg.store_url(), cfg.redact
        sqlite_files = ([url] if cfg.dedup_backend == "sqlite" else
                        [u for _, u in cfg.dedup_shards if u.startswith("sqlite:")])
        opener = lambda: cfg.open_store(now)  # noqa: E731
        if cfg.dedup_migration_state:  # its rings are in the state file, not in DEDUP_SHARDS
            url = f"sharded (the rings of {cfg.dedup_migration_state})"
    for file_url in sqlite_files:
        path = sqlite_path(file_url)
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"no SQLite dedup store at {path}" + (
                "" if args.store else " (is it the data dir flk serve used? --data-dir, DATA_DIR or --config)"))
    try:
        store = opener()
        if not store.ping():
            store.close()
            raise UsageError(f"dedup store {redact(url)} does not answer")
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any failure to open is the user's store or configuration
        raise UsageError(redact(f"dedup store cannot be opened: {type(exc).__name__}: {str(exc)[:300]}")) from None
    return store, redact(url)


def _final_reads(args) -> int:
    from flk.model import history

    from ...agent.client import check_url
    from ...core.errors import InvalidInput
    from ...dedup import StoreUnavailable, iter_entries
    from . import UsageError, atomic_output, output_file

    if args.region is not None:
        try:
            check_url(args.region, "--region")
        except InvalidInput as exc:
            raise UsageError(f"--region {args.region[:80]!r}: expected the URL the load generator sent to that "
                             f"region (e.g. http://127.0.0.1:8080): {exc.message}") from None
    out = output_file(args.out) if args.out else None
    now = time.time()
    store, name = _open_final_store(args, now)
    n = 0
    try:
        with contextlib.ExitStack() as stack:
            if out is not None:
                fh = stack.enter_context(atomic_output(out))
                emit = lambda rec: fh.write(json.dumps(rec, sort_keys=True).encode() + b"\n")  # noqa: E731
            else:
                emit = lambda rec: sys.stdout.write(json.dumps(rec, sort_keys=True) + "\n")  # noqa: E731
            for t, p, o in iter_entries(store, now):  # in key order; streamed from an ordered store, Redis gathered
                emit(history.final_read_record(t, p, o.payload_digest, o.status, args.region))
                n += 1
            if n == 0 and args.region is not None:
                emit(history.empty_read_record(args.region))
    except StoreUnavailable as exc:
        raise UsageError(f"dedup store {name} failed while being read (after {n} outcome(s)"
                         + (f"; {args.out} left as it was" if out is not None else "") + f"): {str(exc)[:300]}") from None
    finally:
        store.close()
    where = f" of region {history.region_of_url(args.region)}" if args.region else " (covering every region)"
    print(f"flk history final-reads: {n} stored outcome(s){where} from {name}"
          + (f" -> {args.out}" if args.out else "")
          + ("; an empty read says nothing survived" if n == 0 else ""), file=sys.stderr)
    return 0


def run(args) -> int:
    from flk.model import history

    from . import UsageError

    if args.history_command is None:
        raise UsageError("expected an action: check, final-reads")
    if args.history_command == "final-reads":
        return _final_reads(args)
    ops, final = _load(args)
    try:
        report = history.check(ops, final, per_region=args.per_region)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        json.dump(report.as_dict(), sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        _print(report, args.show, final is not None)
    return 0 if report.ok else 1
