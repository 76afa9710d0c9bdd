"""``flk policy``: compile a policy file, or diff two policies on a recorded WAL.

``flk policy compile FILE [--json]`` prints the compiled policy (exit 0) or
``FILE:line:column: message`` on stderr (exit 2).

``flk policy diff OLD NEW --wal DIR [--tenants FILE] [--governance] [--json]``
replays every record of an inbox WAL directory through the real pipeline
(:class:`flk.impl.verifier.pipeline.Verifier`, replay mode) once under each policy,
each against its own in-memory dedup store, and reports the records whose
outcome (status and reasons) would change. It is a dry run: the WAL is read
without being opened for writing (no recovery truncation) and nothing is
written anywhere. Tenants come from ``--tenants`` (TOML) or the environment
(``TENANTS`` / ``PCS_*``). ``--governance`` adds the PII gate (each tenant's
``pii_mode``) and the anomaly gate (each policy's thresholds) as hooks. ``--wal`` may be
a server's WAL root or data directory: every worker's log (``worker-N``) is replayed,
merged in the order the requests were received (the workers share one dedup store), and
each change names its log (``worker-1#123``).
"""

from __future__ import annotations

import json
import os
import posixpath
import sys

from ...core import textdata
from ...core.errors import InvalidInput
from . import UsageError, count


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="policy_cmd", metavar="ACTION")
    c = sub.add_parser("compile", help="parse and check a policy file; print the compiled policy")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    d = sub.add_parser("diff", help="replay a recorded inbox WAL under two policies (dry run)")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--wal", required=True,
                   help="inbox WAL directory, or a server's WAL root / data directory (every worker's log)")
    d.add_argument("--tenants", help="tenants TOML file (default: TENANTS / PCS_* environment)")
    d.add_argument("--region", default=None, help="region label (default: each record's own)")
    d.add_argument("--governance", action="store_true", help="also run the PII and anomaly gates as hooks")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--limit", type=count, default=50, help="changes to list in text mode (default 50)")


def read_inbox_wal(directory: str) -> tuple[list[tuple[int, object]], str | None]:
    """Every inbox record of a WAL directory, read-only: ``([(index, InboxRecord)], note)``.

    A torn tail of the last file is skipped (never acknowledged) and noted;
    damage anywhere else raises ``UsageError`` naming the file and offset.
    """
    from ...storage.fs import OsFileSystem
    from ...storage.inbox import decode_inbox_record
    from ...storage.walformat import plan_layout, scan_segment

    fs = OsFileSystem()
    if not os.path.isdir(directory):
        raise UsageError(f"{directory}: {'not a directory' if os.path.exists(directory) else 'no such directory'}")
    layout = plan_layout(fs.listdir(directory))
    if not layout.files:
        raise UsageError(f"{directory}: no WAL segments")
    out: list[tuple[int, object]] = []
    note = None
    for i, (_kind, number, name) in enumerate(layout.files):
        data = fs.read(posixpath.join(directory, name))
        res = scan_segment(data, is_last=i == len(layout.files) - 1)
        if res.status == "corrupt":
            raise UsageError(f"{name}: WAL damaged at byte {res.bad_offset}: {res.reason}")
        if res.status == "torn" and not res.zero_tail:  # a zero tail: the zeros a live log writes ahead
            note = f"{name}: torn tail at byte {res.valid_end} skipped ({res.reason})"
        first = number if _kind == "seg" else number - res.count
        for k, (off, length) in enumerate(res.spans):
            try:
                rec = decode_inbox_record(bytes(data[off : off + length]))
            except InvalidInput as exc:
                raise UsageError(f"{name}: record {first + k} is not an inbox record: {exc}") from None
            out.append((first + k, rec))
    return out, note


def read_server_wal(directory: str) -> tuple[list[tuple[str, int, object]], list[str]]:
    """``([(log, index, InboxRecord)], notes)``: the inbox WAL ``directory``; or, for a
    server's WAL root or data directory, every worker's log (``log`` = ``worker-N``),
    merged in the order the requests were received (receive time, then worker, then
    index) -- the workers share one dedup store, so a duplicate's first copy may be in
    another worker's log."""
    from ...server.config import worker_wal_dirs
    from ...storage.walformat import plan_layout

    workers = [] if os.path.isdir(directory) and plan_layout(os.listdir(directory)).files \
        else worker_wal_dirs(directory)
    if not workers:
        records, note = read_inbox_wal(directory)
        return [("", i, rec) for i, rec in records], [note] if note else []
    merged, notes = [], []
    for w, d in enumerate(workers):
        records, note = read_inbox_wal(d)
        merged.extend((rec.received_at, w, i, os.path.basename(d), rec) for i, rec in records)
        notes += [f"{os.path.basename(d)}: {note}"] if note else []
    merged.sort(key=lambda x: x[:3])
    return [(log, i, rec) for _t, _w, i, log, rec in merged], notes


def _tenants(path: str | None):
    from ...verifier import tenants

    if path:
        return tenants.load_toml(path)
    try:
        return tenants.from_env(os.environ)
    except InvalidInput as exc:
        from ...agent.builder import hmac_key_hint

        raise UsageError(f"no tenants: pass --tenants FILE, or set TENANTS, or the single tenant's key ({exc}; "
                         f"{hmac_key_hint()})") from None


def _outcome(resp) -> tuple[int, list[str], str | None]:
    try:
        body = textdata.json_loads(resp.body)
    except ValueError:
        body = {}
    reasons = body.get("reasons") or []
    return resp.status, sorted(str(r) for r in reasons), body.get("pcs_id")


def replay_under(compiled, registry, records, region: str | None, governance: bool) -> list[tuple[int, list[str], str | None]]:
    """Outcomes of ``records`` under one compiled policy (fresh in-memory dedup store)."""
    from ...dedup.memory import MemoryStore
    from ...governance import anomaly, pii
    from ...verifier.core import replay_batch
    from ...verifier.pipeline import Verifier

    hooks = []
    gate = None
    if governance:
        modes = {t: registry.resolve(t).pii_mode for t in registry.ids()}
        hooks.append(pii.make_pii_hook(modes, pii.PiiCounters()))
        params = anomaly.AnomalyParams.from_policy(compiled.policy, compiled.anomaly_alert, compiled.anomaly_reject)
        gate = anomaly.AnomalyGate(params)
        hooks.append(gate.hook)
    store = MemoryStore()
    verifiers: dict[str, Verifier] = {}
    out = []
    for _index, rec in records:
        reg = region or rec.region
        v = verifiers.get(reg)
        if v is None:
            v = verifiers[reg] = Verifier(registry, region=reg, hooks=hooks, **compiled.verifier_kwargs())
        # one record per core batch, in WAL order: the anomaly gate sees each answer before the next record
        [resp] = replay_batch(v, [rec], store, sink=gate.sink if gate is not None else None).responses
        out.append(_outcome(resp))
    store.close()
    return out


def run(args) -> int:
    from ...verifier import policy

    if args.policy_cmd is None:
        raise UsageError("missing action: compile or diff")
    if args.policy_cmd == "compile":
        compiled = policy.load_policy(args.file)
        d = compiled.to_dict()
        if args.json:
            print(json.dumps(d, sort_keys=True))
        else:
            print(f"ok: policy {d['name']!r} version {d['version']} compiles")
            for k in ("tolerances", "budget", "regime", "anomaly", "reject_status"):
                print(f"  {k}: " + ", ".join(f"{kk}={vv}" for kk, vv in d[k].items()))
        return 0
    old, new = policy.load_policy(args.old), policy.load_policy(args.new)
    registry = _tenants(args.tenants)
    logged, notes = read_server_wal(args.wal)
    records = [(index, rec) for _log, index, rec in logged]
    a = replay_under(old, registry, records, args.region, args.governance)
    b = replay_under(new, registry, records, args.region, args.governance)
    changes, transitions = [], {}
    for (log, index, rec), oa, ob in zip(logged, a, b, strict=True):
        if oa[:2] != ob[:2]:
            key = f"{oa[0]}->{ob[0]}"
            transitions[key] = transitions.get(key, 0) + 1
            changes.append({"index": index, "tenant": rec.tenant, "pcs_id": ob[2] or oa[2],
                            "old": {"status": oa[0], "reasons": oa[1]}, "new": {"status": ob[0], "reasons": ob[1]},
                            **({"log": log} if log else {})})
    result = {
        "old": {"name": old.name, "version": old.version},
        "new": {"name": new.name, "version": new.version},
        "records": len(records),
        "changed": len(changes),
        "transitions": dict(sorted(transitions.items())),
        "changes": changes,
        "dry_run": True,
    }
    if notes:
        result["note"] = "; ".join(notes)
    logs = sorted({log for log, _i, _r in logged if log}, key=lambda n: int(n.split("-")[1]))
    if logs:
        result["logs"] = logs
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"policy diff {old.name}@{old.version} -> {new.name}@{new.version}: "
              f"{len(changes)} of {len(records)} recorded requests would change (dry run)"
              + (f"; the logs of {', '.join(logs)}, in the order received" if logs else ""))
        for k, n in sorted(transitions.items()):
            print(f"  {k}: {n}")
        for ch in changes[: args.limit]:
            where = f"{ch['log']}#{ch['index']}" if "log" in ch else f"#{ch['index']}"
            print(f"  {where} tenant={ch['tenant']} pcs_id={ch['pcs_id']}: "
                  f"{ch['old']['status']} {ch['old']['reasons']} -> {ch['new']['status']} {ch['new']['reasons']}")
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    return 0
