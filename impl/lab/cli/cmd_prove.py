"""``flk prove [--tier quick|full] [--json] [--only ID]``: run the Z3 proofs of the invariants.

Runs every proof of the tier listed in ``formal/manifest.json`` and prints a
table (ID, status, seconds, budget, counterexample). Exit 0 when every result
equals the manifest's expected status within its time budget (and the tier
within its total budget), 1 otherwise, 2 on bad usage. ``--json`` prints one
JSON object and nothing else on stdout.
"""

from __future__ import annotations

import json
import sys


def configure(p) -> None:
    p.add_argument("--tier", choices=("quick", "full"), default="quick",
                   help="quick (<= 60 s, part of make test) or full (see formal/manifest.json for its runtime)")
    p.add_argument("--json", action="store_true", help="print one JSON object of results")
    p.add_argument("--only", action="append", metavar="ID",
                   help="run only this proof ID (repeatable; prefix match on the invariant, e.g. INV-ROUND)")


def _select(manifest: dict, tier: str, only: list[str] | None) -> list[str]:
    from . import UsageError

    ids = list(manifest["proofs"])
    if not only:
        return [i for i in ids if tier in manifest["proofs"][i]["tiers"]]
    chosen = []
    for want in only:
        hits = [i for i in ids if i == want or i.startswith(want + ".")]
        if not hits:
            raise UsageError(f"unknown proof ID {want!r}; known: {', '.join(ids)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _short(cex) -> str:
    if cex is None:
        return ""
    text = json.dumps(cex, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def run(args) -> int:
    from flk.formal.registry import PROOFS, load_manifest
    from flk.formal.result import UNKNOWN, Clock, ProofResult

    manifest = load_manifest()
    ids = _select(manifest, args.tier, args.only)
    total = Clock()
    rows = []
    ok_all = True
    for pid in ids:
        entry = manifest["proofs"][pid]
        fn = PROOFS.get(pid)
        if fn is None:
            res = ProofResult(pid, UNKNOWN, 0.0, None, "no proof function registered for this ID")
        else:
            res = fn(args.tier)
        budget = entry["budget_s"][args.tier]
        reasons = []
        if res.status != entry["expected"]:
            reasons.append(f"expected {entry['expected']}")
        if res.seconds > budget:
            reasons.append(f"over budget {budget}s")
        ok = not reasons
        ok_all &= ok
        rows.append({**res.to_json(), "expected": entry["expected"], "budget_s": budget, "ok": ok,
                     "problem": "; ".join(reasons)})
        if not args.json:
            mark = "ok  " if ok else "FAIL"
            print(f"{mark} {pid:<36} {res.status:<14} {res.seconds:>8.2f}s / {budget:>5}s  "
                  f"{('(' + '; '.join(reasons) + ') ') if reasons else ''}{_short(res.counterexample)}",
                  flush=True)
    seconds = total()
    tier_budget = manifest["tiers"][args.tier]["budget_s"]
    if not args.only and seconds > tier_budget:
        ok_all = False
    if args.json:
        print(json.dumps({"tier": args.tier, "ok": ok_all, "seconds": seconds, "tier_budget_s": tier_budget,
                          "results": rows}, sort_keys=True, default=str))
    else:
        print(f"{'ok' if ok_all else 'FAIL'}: {sum(r['ok'] for r in rows)}/{len(rows)} as expected, "
              f"{seconds:.1f}s (tier {args.tier} budget {tier_budget}s)")
        if not ok_all:
            print("flk prove: results differ from formal/manifest.json", file=sys.stderr)
    return 0 if ok_all else 1
