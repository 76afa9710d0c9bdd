"""``flk agent``: build PCS from event streams, submit them, generate load.

Subcommands:

* ``build --input FILE --shard-id S --epoch N [--tenant T] [--seed N] [--format csv|jsonl|npy]``
  prints one PCS as JSON on stdout. Keys come only from the environment
  (``PCS_SIGN_ALG``, ``PCS_HMAC_KEY``, ``PCS_ED25519_PRIV_B64``, ``TENANT_ID``),
  never from argv.
* ``submit --url URL [--url URL2 ...] (--pcs FILE | --outbox DIR) [--dlq FILE]``
  submits signed PCS (a JSON object, an array, or JSONL) with retries,
  backoff, Retry-After and failover; 4xx refusals go to the dead-letter JSONL.
  With ``--outbox`` the records are first appended to the outbox (durable),
  then every pending outbox record is submitted and acked once it ended --
  a record given up on stays pending for the next run. Exit 0 if every
  record ended (ack, conflict or dead letter), 1 if some were given up on.
* ``load --url URL [--url URL2 ...] --n N --seed S [...]`` the load generator
  (:mod:`flk.impl.agent.loadgen`): progress on stderr, summary on stdout
  (``--json`` for one JSON object), ``--history FILE`` for the checkers.
* ``tenants-env --tenants K [--hmac-key-env VAR]`` prints the ``TENANTS=...``
  line a server needs to accept the load generator's tenants.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ...core import textdata
from ...core.errors import InvalidInput
from . import finite_number, seconds

_PROBABILITY = finite_number(0, maximum=1)


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", parser_class=type(p))
    b = sub.add_parser("build", help="build and sign one PCS from an event stream; prints JSON")
    b.add_argument("--input", required=True, help="event stream file (CSV, JSONL or .npy)")
    b.add_argument("--shard-id", required=True)
    b.add_argument("--epoch", required=True, type=_int)
    b.add_argument("--tenant", default=None, help="tenant id (default: $TENANT_ID or 'default')")
    b.add_argument("--seed", type=_int, default=0, help="coh-star direction seed (default 0)")
    b.add_argument("--format", choices=("csv", "jsonl", "npy"), default=None,
                   help="stream format (default: from the file extension)")
    b.add_argument("--unsigned", action="store_true", help="omit the signature (no key needed)")
    b.add_argument("--compact", action="store_true", help="one line of JSON instead of indented")
    b.add_argument("--outbox", default=None,
                   help="also append the signed PCS to this outbox directory (durably)")

    s = sub.add_parser("submit", help="submit signed PCS with retries, backoff and failover")
    s.add_argument("--url", action="append", required=True, help="server URL (repeat for failover)")
    s.add_argument("--pcs", default=None, help="file holding a PCS JSON object, an array, or JSONL")
    s.add_argument("--outbox", default=None,
                   help="outbox directory: --pcs records are appended to it first (durably), then "
                        "every pending record is submitted and acked once answered")
    s.add_argument("--durability", choices=("always", "group"), default="always",
                   help="outbox fsync policy (default %(default)s)")
    s.add_argument("--tenant", default=None, help="X-Tenant-Id (default: $TENANT_ID, else none)")
    s.add_argument("--dlq", default="dead-letter.jsonl", help="dead-letter JSONL (default %(default)s)")
    _retry_args(s)
    s.add_argument("--seed", type=_int, default=0, help="jitter seed (default 0)")
    s.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    ld = sub.add_parser("load", help="load generator: deterministic valid and bad PCS traffic")
    ld.add_argument("--url", action="append", required=True, help="server URL (repeat for failover)")
    ld.add_argument("--n", type=_int, required=True,
                    help="number of items (PCS submissions), at most 1,000,000 (each built before the start)")
    ld.add_argument("--seed", type=_int, required=True)
    ld.add_argument("--rate", type=finite_number(0, strict=True), default=None, help="items started per second (default: unpaced)")
    ld.add_argument("--concurrency", type=_int, default=32, help="connections/workers, 1 to 1024 (default 32)")
    ld.add_argument("--tenants", type=_int, default=1,
                    help="number of tenants, 1 to 10,000 (default 1: 'default')")
    ld.add_argument("--dup-rate", type=_PROBABILITY, default=0.0)
    ld.add_argument("--bad-sig-rate", type=_PROBABILITY, default=0.0)
    ld.add_argument("--conflict-rate", type=_PROBABILITY, default=0.0)
    ld.add_argument("--history", default=None, help="write every request/response as JSONL here")
    ld.add_argument("--hmac-key-env", default="PCS_HMAC_KEY",
                    help="environment variable holding the base secret (default %(default)s)")
    ld.add_argument("--sign-alg", choices=("hmac", "ed25519"), default="hmac",
                    help="tenants sign with keys derived from the base secret (default %(default)s)")
    ld.add_argument("--timeout", type=seconds(0, strict=True), default=10.0, help="per-request timeout in seconds")
    ld.add_argument("--url-mode", choices=("spread", "failover"), default="spread",
                    help="spread: item i starts at URL i mod len(urls); failover: stay on the URL "
                         "that answers, move on only when it fails (default %(default)s)")
    _retry_args(ld, max_attempts=5)
    ld.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ld.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ld.add_argument("--strict", action="store_true",
                    help="exit 1 if any item got a status its kind does not expect")

    te = sub.add_parser("tenants-env", help="print the TENANTS=... line matching `load --tenants K`")
    te.add_argument("--tenants", type=_int, required=True, help="number of tenants, 1 to 10,000")
    te.add_argument("--hmac-key-env", default="PCS_HMAC_KEY")
    te.add_argument("--sign-alg", choices=("hmac", "ed25519"), default="hmac")


def _retry_args(p, max_attempts: int = 8) -> None:
    p.add_argument("--max-attempts", type=_int, default=max_attempts,
                   help="sends per record before giving up (default %(default)s)")
    p.add_argument("--backoff-base", type=seconds(0), default=0.05, help="seconds (default %(default)s)")
    p.add_argument("--backoff-cap", type=seconds(0), default=5.0, help="seconds (default %(default)s)")
    p.add_argument("--max-retry-after", type=seconds(0), default=60.0,
                   help="clamp for a server's Retry-After, seconds (default %(default)s)")


def _policy(args):
    from ...agent.client import RetryPolicy

    return RetryPolicy(base=args.backoff_base, cap=args.backoff_cap, max_attempts=args.max_attempts,
                       max_retry_after=args.max_retry_after)


def _base_key(var: str) -> bytes:
    from . import UsageError

    value = os.environ.get(var, "")
    if not value:
        from ...agent.builder import hmac_key_hint

        raise UsageError(f"${var} is not set (the base HMAC secret is read from the environment; "
                         f"{hmac_key_hint(var)})")
    return value.encode("utf-8")


def _read_file(path: str, opt: str = "--input") -> bytes:
    from . import read_input

    return read_input(path, opt)


def _pcs_bytes(pcs: dict) -> bytes:
    return json.dumps(pcs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _open_outbox(directory: str, durability: str):
    from ...agent.outbox import Outbox
    from ...storage.wal import WalError
    from . import UsageError

    try:
        return Outbox(directory, durability=durability)
    except WalError as exc:
        raise UsageError(f"--outbox {directory}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--outbox {directory}: {exc.strerror or exc}") from None


def _build(args) -> int:
    from ...agent import builder as agent
    from ...core.pcs import check_epoch, check_shard_id
    from . import UsageError

    check_shard_id(args.shard_id)
    check_epoch(args.epoch)
    raw = _read_file(args.input)  # a missing file is "no such file", not "cannot tell the format"
    fmt = args.format or agent.detect_format(args.input)
    signer = None if args.unsigned else agent.signer_from_env(os.environ, args.tenant)
    pcs = agent.build_pcs_from_stream(raw, fmt, args.shard_id, args.epoch, signer, seed=args.seed)
    if args.outbox:
        if args.unsigned:
            raise UsageError("--outbox needs a signed PCS (drop --unsigned)")
        with _open_outbox(args.outbox, "always") as outbox:
            outbox.append(_pcs_bytes(pcs))
    if args.compact:
        print(json.dumps(pcs, sort_keys=True, separators=(",", ":")))
    else:
        print(json.dumps(pcs, sort_keys=True, indent=2))
    return 0


def _load_pcs_file(path: str) -> list[dict]:
    from . import UsageError

    raw = _read_file(path, "--pcs")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--pcs {path}: not UTF-8") from None
    try:
        doc = textdata.json_loads(text)
        docs = doc if isinstance(doc, list) else [doc]
    except json.JSONDecodeError:
        docs = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    docs.append(textdata.json_loads(line))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"--pcs {path}: line {n}: not JSON ({exc.msg})") from None
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise UsageError(f"--pcs {path}: expected a PCS object, an array of them, or JSONL")
    return docs


def _check_urls(urls: list[str]) -> None:
    from ...agent.client import check_url

    for url in urls:  # every --url before any work: InvalidInput -> exit 2
        check_url(url, "--url")


def _submit(args) -> int:
    from ...agent.client import DeadLetterFile, SubmitClient, drain_outbox, prepare
    from . import UsageError

    _check_urls(args.url)
    if not args.pcs and not args.outbox:
        raise UsageError("give --pcs FILE, --outbox DIR, or both")
    records = _load_pcs_file(args.pcs) if args.pcs else []
    for n, pcs in enumerate(records, start=1):
        try:
            prepare(pcs)  # refuse an unsigned or malformed record before anything is sent
        except InvalidInput as exc:
            raise UsageError(f"--pcs {args.pcs}: record {n}: {exc}") from None
    dlq_dir = os.path.dirname(os.path.abspath(args.dlq))
    if not os.path.isdir(dlq_dir) or not os.access(dlq_dir, os.W_OK):
        raise UsageError(f"--dlq {args.dlq}: directory {dlq_dir} does not exist or is not writable")
    if os.path.isdir(args.dlq):
        raise UsageError(f"--dlq {args.dlq}: is a directory")
    tenant = args.tenant or os.environ.get("TENANT_ID") or None
    client = SubmitClient(args.url, tenant=tenant, policy=_policy(args), seed=args.seed,
                          dead_letter=DeadLetterFile(args.dlq))
    try:
        if args.outbox:
            with _open_outbox(args.outbox, args.durability) as outbox:
                for pcs in records:
                    outbox.append(_pcs_bytes(pcs))
                res = drain_outbox(outbox, client)
            summary = {"records": len(records), **res.as_dict(), **client.stats.as_dict()}
            failed = res.remaining > 0
            if not args.json:
                print(f"outbox: {res.submitted} submitted, {res.acked} acked, {res.conflicts} conflicts, "
                      f"{res.dead_lettered} dead-lettered, {res.remaining} still pending")
        else:
            outcomes: dict[str, int] = {}
            for pcs in records:
                done = client.submit(pcs)
                outcomes[done.outcome] = outcomes.get(done.outcome, 0) + 1
                if not args.json:
                    print(f"{pcs.get('pcs_id')}: {done.outcome} ({done.reason}, {done.attempts} attempt(s))")
            summary = {"records": len(records), "outcomes": outcomes, **client.stats.as_dict()}
            failed = bool(outcomes.get("gave_up"))
    finally:
        client.close()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 1 if failed else 0


def _load(args) -> int:
    from ...agent import loadgen

    _check_urls(args.url)
    cfg = loadgen.PlanConfig(n=args.n, seed=args.seed, tenants=args.tenants, dup_rate=args.dup_rate,
                             bad_sig_rate=args.bad_sig_rate, conflict_rate=args.conflict_rate,
                             sign_alg=args.sign_alg)
    loadgen.check_concurrency(args.concurrency)  # before the plan is built
    base = _base_key(args.hmac_key_env)
    items = loadgen.make_plan(cfg, base)
    res = loadgen.run_load(items, args.url, concurrency=args.concurrency, rate=args.rate,
                           policy=_policy(args), seed=args.seed, timeout=args.timeout,
                           history_path=args.history, progress=not args.no_progress,
                           url_mode=args.url_mode)
    summary = res.summary()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        lat = summary["latency_ms"]
        print(f"items {summary['items']}  sent {summary['sent']}  retries {summary['retries']}  "
              f"unexpected {summary['unexpected']}")
        print("by status: " + ", ".join(f"{k}={v}" for k, v in summary["by_status"].items()))
        for kind, counts in summary["by_kind"].items():
            if counts:
                print(f"  {kind:9s} " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        print(f"latency ms p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}")
        il = summary["item_latency_ms"]
        print(f"item latency ms (due -> final answer) p50 {il['p50']}  p95 {il['p95']}  p99 {il['p99']}")
        print(f"throughput {summary['throughput_rps']} req/s over {summary['elapsed_s']} s")
    return 1 if args.strict and summary["unexpected"] else 0


def _tenants_env(args) -> int:
    from ...agent import loadgen

    print("TENANTS=" + loadgen.tenants_env(_base_key(args.hmac_key_env), args.tenants, args.sign_alg))
    return 0


def run(args) -> int:
    from . import UsageError

    cmd = getattr(args, "agent_command", None)
    if cmd is None:
        raise UsageError("missing subcommand: build, submit, load or tenants-env")
    handlers = {"build": _build, "submit": _submit, "load": _load, "tenants-env": _tenants_env}
    try:
        if cmd in handlers:
            return handlers[cmd](args)
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    print(f"flk agent: unknown subcommand {cmd}", file=sys.stderr)
    return 2
