"""``flk conformance vectors --adapter COMMAND|builtin ...``: run the test vectors
through an adapter (conformance/PROTOCOL.md) and report per case and per flag.

Exit status: 0 every case passed (skips allowed), 1 some case failed or the
run exercised nothing (the adapter declared no ops/profiles, or every case was
skipped), 2 the adapter is broken (cannot start, bad hello, cannot be restarted) or bad usage.
The last line on stdout is exactly ``N passed, N failed, N skipped``.

``flk conformance server --url URL --hmac-key K ...``: the black-box HTTP suite
(:mod:`flk.conformance.server_suite`) against a running server; exit 0 all
passed, 1 some case failed, 2 server unreachable or bad usage.

``flk conformance diff OLD.json NEW.json``: two vectors reports compared
(:mod:`flk.conformance.report_diff`); exit 0 no regression, 1 something broke.
"""

from __future__ import annotations

import json
import sys

from . import count, seconds, write_output


def _csv(text: str | None) -> list[str] | None:
    if not text:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def configure(p) -> None:
    sub = p.add_subparsers(dest="suite", metavar="SUITE")
    v = sub.add_parser("vectors", help="run spec/vectors through an adapter",
                       description="Run every test vector through an adapter and report per case and per flag.")
    v.add_argument("--adapter", required=True,
                   help='adapter command line (e.g. "node conformance/adapters/node/adapter.mjs"), or "builtin"')
    v.add_argument("--profile", default="v1", help='profile to run (v1, legacy-0.1, or "all"; default v1)')
    v.add_argument("--flags", help="only cases carrying one of these flags (comma-separated)")
    v.add_argument("--ops", help="only these operations (comma-separated)")
    v.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    v.add_argument("--json", metavar="FILE", help="write a JSON report")
    v.add_argument("--timeout", type=seconds(0, strict=True), default=10.0, help="seconds per case (default 10)")
    v.add_argument("--start-timeout", type=seconds(0, strict=True), default=30.0,
                   help="seconds for the adapter to start and answer hello (default 30)")
    v.add_argument("--max-restarts", type=count, default=10,
                   help="restarts after crashes/timeouts before the adapter counts as broken (default 10)")
    v.add_argument("--vectors", metavar="DIR", help="vector directory (default: the packaged spec/vectors)")
    v.add_argument("-v", "--verbose", action="store_true", help="also list passed and skipped cases")
    v.add_argument("--no-probes", action="store_true",
                   help="skip the self-consistent base64 probes (verify negatives built from the adapter's own "
                        "signature); the run then has exactly the selected vectors")
    s = sub.add_parser("server", help="black-box HTTP suite against a running PCS server (flk serve or another)",
                       description="Run the srv-* cases (conformance/PROTOCOL.md) against a running server.")
    s.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8080")
    s.add_argument("--hmac-key", help="the tenant's HMAC key (its UTF-8 text; default: $PCS_HMAC_KEY)")
    s.add_argument("--tenant", help="send X-Tenant-Id T (omit for a single-tenant server)")
    s.add_argument("--second-tenant", metavar="T2", help="a second tenant, for srv-tenant-isolation")
    s.add_argument("--second-hmac-key", metavar="K2", help="the second tenant's HMAC key")
    s.add_argument("--rate-limited", action="store_true",
                   help="the server runs with a low per-tenant rate (TOKEN_RATE): run srv-rate-limit")
    s.add_argument("--cases", help="only these case ids (comma-separated)")
    s.add_argument("--seed", type=int, help="run seed (default: random; the PCS of a run derive from it)")
    s.add_argument("--oversize-bytes", type=int, default=None,
                   help="body size for srv-oversize (default 1 MiB + 1; must exceed the server's limit)")
    s.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    s.add_argument("--json", metavar="FILE", help="write a JSON report")
    s.add_argument("--timeout", type=seconds(0, strict=True), default=10.0, help="seconds per HTTP request (default 10)")
    d = sub.add_parser("diff", help="compare two --json reports of `flk conformance vectors` (an SDK's releases)",
                       description="What the new run fixed, broke and changed, by root cause and by case. "
                                   "Exit 0 no regression, 1 something broke, 2 unreadable reports.")
    d.add_argument("old", metavar="OLD.json")
    d.add_argument("new", metavar="NEW.json")
    d.add_argument("--json", metavar="FILE", help="write the comparison as JSON")


def make_adapter(spec: str):
    from flk.conformance.adapter_io import AdapterSpecError
    from flk.conformance.adapter_io import make_adapter as make

    from . import UsageError

    try:
        return make(spec)
    except AdapterSpecError as exc:
        raise UsageError(str(exc)) from None


def _check_reports(args) -> None:
    """``--junit`` / ``--json`` checked before the suite runs (its report is not lost at the end)."""
    from . import output_file

    for option in ("--junit", "--json"):
        path = getattr(args, option[2:], None)
        if path:
            output_file(path, option)


def run_vectors(args) -> int:
    from flk.conformance import runner
    from flk.conformance.vectors import load_cases, vectors_dir

    from . import UsageError

    profile = None if args.profile == "all" else args.profile
    if profile not in (None, "v1", "legacy-0.1"):
        raise UsageError(f"--profile must be v1, legacy-0.1 or all, not {args.profile!r}")
    directory = vectors_dir(args.vectors)
    cases = load_cases(directory, profile=profile, operations=_csv(args.ops), flags=_csv(args.flags))
    if not cases:
        raise UsageError(f"no vectors selected in {directory} (check --profile, --ops, --flags)")
    _check_reports(args)
    adapter = make_adapter(args.adapter)
    report = runner.run_cases(
        adapter, cases, timeout=args.timeout, start_timeout=args.start_timeout, max_restarts=args.max_restarts,
        probes=not args.no_probes,
    )
    if args.junit:
        write_output(args.junit, runner.to_junit(report))
    if args.json:
        # ASCII JSON: an adapter's strings may hold lone surrogates, which UTF-8 cannot
        write_output(args.json, json.dumps(runner.to_json(report), indent=2, ensure_ascii=True).encode("ascii"))
    if report.broken:
        print(f"flk conformance: adapter broken: {report.broken}", file=sys.stderr)
    for problem in report.problems:
        print(f"flk conformance: run failed: {problem}", file=sys.stderr)
    lines = [f"vectors: {directory} ({len(cases)} cases, profile {args.profile})"]
    lines += runner.format_text(report, verbose=args.verbose)
    text = "".join(line + "\n" for line in lines)
    # UTF-8 whatever the locale; lone surrogates from an adapter shown as \udXXX
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.buffer.flush()
    return report.exit_code


def run_server(args) -> int:
    import os
    import secrets

    from flk.conformance import server_suite as ss

    from ...agent.client import base_url
    from . import UsageError

    url = base_url(args.url, "--url")  # InvalidInput -> exit 2
    key = args.hmac_key if args.hmac_key is not None else os.environ.get("PCS_HMAC_KEY", "")
    if not key:
        raise UsageError("--hmac-key (or PCS_HMAC_KEY) is required: the tenant's HMAC key")
    if bool(args.second_tenant) != bool(args.second_hmac_key):
        raise UsageError("--second-tenant and --second-hmac-key go together")
    if args.second_tenant and not args.tenant:
        raise UsageError("--second-tenant needs --tenant (a multi-tenant server)")
    if args.second_tenant and args.second_tenant == args.tenant:
        raise UsageError("--second-tenant must differ from --tenant")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise UsageError("--seed must be in [0, 2^64-1]")
    if args.oversize_bytes is not None and not 1024 <= args.oversize_bytes <= 64 * 1024 * 1024:
        raise UsageError("--oversize-bytes must be in [1024, 64 MiB]")
    only = _csv(args.cases)
    if only:
        unknown = [c for c in only if c not in ss.CASE_IDS]
        if unknown:
            raise UsageError(f"--cases: unknown case id(s) {', '.join(unknown)}; known: {', '.join(ss.CASE_IDS)}")
    _check_reports(args)
    target = ss.Target(
        url=url,
        hmac_key=key.encode("utf-8"),
        tenant=args.tenant or None,
        second_tenant=args.second_tenant or None,
        second_key=args.second_hmac_key.encode("utf-8") if args.second_hmac_key else None,
        rate_limited=args.rate_limited,
        timeout=args.timeout,
        seed=args.seed if args.seed is not None else secrets.randbits(64),
        oversize_bytes=args.oversize_bytes or ss.DEFAULT_OVERSIZE,
    )
    try:
        report = ss.run_suite(target, only=only)
    except ss.Unreachable as exc:
        print(f"flk conformance server: {url} unreachable: {exc}", file=sys.stderr)
        return 2
    if args.junit:
        write_output(args.junit, ss.to_junit(report))
    if args.json:
        write_output(args.json, json.dumps(ss.to_json(report), indent=2).encode("utf-8"))
    text = "".join(line + "\n" for line in ss.format_text(report))
    sys.stdout.flush()  # UTF-8 whatever the locale: a server's problem types may be anything
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.buffer.flush()
    return report.exit_code


def run_diff(args) -> int:
    from flk.conformance import report_diff as rd

    from . import UsageError

    try:
        d = rd.diff_reports(rd.load_report(args.old), rd.load_report(args.new))
    except rd.ReportError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        write_output(args.json, json.dumps(rd.to_json(d), indent=2).encode("utf-8"))
    print("\n".join(rd.format_diff(d, args.old, args.new)))
    return 1 if d.regressed else 0


def run(args) -> int:
    from . import UsageError

    if args.suite == "diff":
        return run_diff(args)

    if args.suite == "vectors":
        return run_vectors(args)
    if args.suite == "server":
        return run_server(args)
    raise UsageError("choose a suite: flk conformance vectors --adapter ... (see --help)")
