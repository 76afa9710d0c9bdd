"""``flk check model``: exhaustive small-scope model checking of the replication protocol.

Explores every state of :mod:`flk.model.explore` within the scope given by the
options (breadth-first, canonical fingerprints) and checks in every state the
safety invariants the model expresses, deadlock freedom, and -- on the full,
unreduced graph -- the liveness targets INV-CONVERGENCE and INV-ACKED-DELIVERY
under weak fairness of process, ship, replay, heal and restart. By default
two passes run: the full graph (safety, deadlock, liveness) and the
symmetry-reduced one (safety); their sets of violated invariants must agree
and the reduction factor is their ratio of distinct states.

Exit 0 when the scope was explored completely and nothing is violated, 1 when
something is violated (or the state limit stopped the search), 2 on bad
usage. ``--json`` prints one JSON object; ``--out FILE`` writes every
counterexample as JSON; ``--replay`` runs each safety counterexample against
the implementation (:mod:`flk.impl.lab.modelreplay`): lockstep on real regions,
and on the simulator as a scenario with an explicit schedule.
"""

from __future__ import annotations

import json
import sys


def configure(p) -> None:
    p.add_argument("what", choices=("model",), help="what to check (model: the replication protocol model)")
    g = p.add_argument_group("scope (defaults: the quick tier, part of make test)")
    g.add_argument("--regions", type=int, default=2, help="regions (default 2)")
    g.add_argument("--tenants", type=int, default=2, help="tenants (default 2)")
    g.add_argument("--keys", type=int, default=1, help="pcs_ids per tenant (default 1)")
    g.add_argument("--payloads", type=int, default=2, help="payload digests per pcs_id (default 2)")
    g.add_argument("--writes", type=int, default=2, help="submissions in total, of any kind (default 2)")
    g.add_argument("--bad", type=int, default=1,
                   help="of which at most this many with a bad signature: forged / another tenant's key (default 1)")
    g.add_argument("--crashes", type=int, default=1, help="region crashes (default 1)")
    g.add_argument("--partitions", type=int, default=1, help="partitions (default 1)")
    g.add_argument("--rotations", type=int, default=0, help="key rotations (default 0)")
    g.add_argument("--volatile-store", action="store_true", help="a crash loses the dedup map too (memory store)")
    p.add_argument("--plant", metavar="BUG", help="plant a named model bug (see --list-plants)")
    p.add_argument("--list-plants", action="store_true", help="list the planted model bugs and exit")
    p.add_argument("--symmetry", choices=("both", "on", "off"), default="both",
                   help="both (default): full graph + reduced safety pass; on: reduced only (no liveness); off: full only")
    p.add_argument("--no-liveness", action="store_true", help="skip the liveness check (no edge storage)")
    p.add_argument("--max-states", type=int, default=None, help="stop after this many distinct states (exit 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", metavar="FILE", help="write the counterexamples (and lassos) as JSON to FILE")
    p.add_argument("--replay", action="store_true",
                   help="replay each safety counterexample on the implementation and say who shows it")
    p.add_argument("--impl-plant", metavar="BUG",
                   help="with --replay: plant a named implementation bug (flk.impl.lab.modelreplay.IMPL_PLANTS: "
                        "replay-skips-verify, verify-trusts-tenant, restart-replay-trusts)")


def scope_from(args):
    from flk.model.explore import Scope

    from . import UsageError

    try:
        return Scope(regions=args.regions, tenants=args.tenants, keys=args.keys, payloads=args.payloads,
                     writes=args.writes, bad=args.bad, crashes=args.crashes, partitions=args.partitions,
                     rotations=args.rotations, volatile_store=args.volatile_store, plant=args.plant)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _stats_line(r) -> str:
    return (f"{'symmetry-reduced' if r.symmetry else 'full graph':<16} "
            f"{'complete' if r.complete else 'INCOMPLETE'}: {r.distinct_states:,} distinct states, "
            f"{r.states_generated:,} generated, depth {r.depth}, {r.seconds:.1f}s ({r.cpu_seconds:.1f}s CPU), "
            f"{r.states_per_s:,.0f} states/s, peak RSS {r.peak_rss_mb:.0f} MB")


def _validate(args):
    from . import UsageError

    if args.max_states is not None and args.max_states < 1:
        raise UsageError("--max-states must be >= 1")
    scope = scope_from(args)
    if args.impl_plant is not None:
        from ..modelreplay import IMPL_PLANTED

        if args.impl_plant not in IMPL_PLANTED:
            raise UsageError(f"unknown implementation bug {args.impl_plant!r}; known: {', '.join(IMPL_PLANTED)}")
        if not args.replay:
            raise UsageError("--impl-plant needs --replay")
    return scope


def _passes(args, scope) -> list:
    from flk.model.checker import check

    tty = sys.stderr.isatty() and not args.json
    runs = []
    if args.symmetry in ("both", "off"):
        runs.append(check(scope, symmetry=False, liveness=not args.no_liveness, progress=tty,
                          max_states=args.max_states))
    if args.symmetry in ("both", "on"):
        runs.append(check(scope, symmetry=True, liveness=False, progress=tty, max_states=args.max_states))
    return runs


def _summarize(scope, runs) -> dict:
    """The verdict of the passes: counterexamples, lassos, deadlock, symmetry agreement."""
    full = next((r for r in runs if not r.symmetry), None)
    reduced = next((r for r in runs if r.symmetry), None)
    summary: dict = {"scope": scope.to_json(), "runs": []}
    for r in runs:
        summary["runs"].append({k: v for k, v in r.to_json().items() if k not in ("violated", "deadlock", "liveness")}
                               | {"violated": sorted(r.violated), "deadlock": r.deadlock is not None,
                                  "liveness": {k: v is not None for k, v in r.liveness.items()}})
    agree = None
    if full and reduced and full.complete and reduced.complete:  # a stopped pass compares with nothing
        agree = sorted(full.violated) == sorted(reduced.violated) and all(
            full.violated[k]["length"] == reduced.violated[k]["length"] for k in full.violated)
        summary["reduction_factor"] = round(full.distinct_states / max(reduced.distinct_states, 1), 2)
        summary["symmetry_agrees"] = agree
    main = full or reduced
    cexes = {**(reduced.violated if reduced else {}), **main.violated}
    lassos = {k: v for k, v in (full.liveness if full else {}).items() if v is not None}
    summary["ok"] = (all(r.complete for r in runs) and not cexes and not lassos and main.deadlock is None
                     and agree is not False)
    summary |= {"violated": sorted(cexes), "liveness_violated": sorted(lassos),
                "liveness_checked": bool(full and full.liveness_checked), "fairness": main.fairness,
                "incomplete": [_pass_name(r) for r in runs if not r.complete]}
    summary["why_not_ok"] = _why_not_ok(summary, main.deadlock is not None, agree)
    return {"summary": summary, "full": full, "main": main, "cexes": cexes, "lassos": lassos,
            "deadlock": main.deadlock, "agree": agree}


def _pass_name(r) -> str:
    return "symmetry-reduced" if r.symmetry else "full graph"


def _why_not_ok(summary: dict, deadlock: bool, agree: bool | None) -> list[str]:
    """Each reason the verdict is not ok, in the words the text output prints after FAIL."""
    why = [f"{name} violated" for name in summary["violated"]]
    why += [f"{name} violated (liveness)" for name in summary["liveness_violated"]]
    why += ["a deadlock"] if deadlock else []
    why += ["the symmetry-reduced pass disagrees with the full graph"] if agree is False else []
    if summary["incomplete"]:
        passes = " and ".join(summary["incomplete"]) + (" passes" if len(summary["incomplete"]) > 1 else " pass")
        why.append(f"INCOMPLETE: the {passes} stopped at --max-states before covering the scope (what it "
                   "explored is no proof; raise --max-states)")
    return why


def _print_text(scope, runs, v: dict, replays: dict) -> None:
    from flk.model.checker import format_trace

    summary, main, full = v["summary"], v["main"], v["full"]
    plant = f", planted bug {scope.plant}" if scope.plant else ""
    print(f"flk check model: scope {_scope_text(scope)}{plant}")
    for r in runs:
        print("  " + _stats_line(r))
    if "reduction_factor" in summary:
        print(f"  symmetry reduction factor {summary['reduction_factor']} "
              f"({'same' if v['agree'] else 'DIFFERENT'} violated invariants and counterexample lengths)")
    elif len(runs) == 2:
        print("  symmetry reduction factor unknown (a pass stopped before covering the scope)")
    print(f"  fingerprint collision bound {main.fingerprint_collision_bound:.1e}")
    if summary["liveness_checked"]:
        print(f"  liveness under weak fairness of {', '.join(main.fairness)}: "
              + ", ".join(f"{k} {'VIOLATED' if x else 'holds'}" for k, x in full.liveness.items()))
    for name, cex in sorted(v["cexes"].items()):
        print()
        print(format_trace(cex))
        if name in replays:
            print(f"  replay on the implementation: {replays[name]['verdict']}")
            sim = replays[name].get("simulator")
            if sim is not None:
                print(f"  replay on the simulator (explicit schedule): {sim['verdict']}")
    for extra in ([v["deadlock"]] if v["deadlock"] is not None else []) + list(v["lassos"].values()):
        print()
        print(format_trace(extra))
    print()
    print("ok: every invariant holds in every reachable state of the scope" if summary["ok"]
          else "FAIL: " + "; ".join(summary["why_not_ok"]))


def run(args) -> int:
    from flk.model.explore import PLANTED

    from . import UsageError, output_file

    if args.list_plants:
        for name, what in PLANTED.items():
            print(f"{name:<22} {what}")
        return 0
    scope = _validate(args)
    if args.out:
        output_file(args.out)  # before the search, which can take minutes
    runs = _passes(args, scope)
    v = _summarize(scope, runs)
    summary = v["summary"]
    replays = {}
    if args.replay and v["cexes"]:
        from ..modelreplay import replay_counterexample

        replays = {name: replay_counterexample(scope, cex, args.impl_plant) for name, cex in v["cexes"].items()}
        summary["replay"] = {k: {"verdict": r["verdict"], "impl_violated": r["impl_violated"],
                                 "simulator": {"verdict": r["simulator"]["verdict"],
                                               "violated": r["simulator"]["violated"]}}
                             for k, r in replays.items()}
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                json.dump({"scope": scope.to_json(), "safety": v["cexes"], "deadlock": v["deadlock"],
                           "liveness": v["lassos"], "replay": replays}, fh, indent=1, sort_keys=True)
        except OSError as exc:
            raise UsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(summary, sort_keys=True, default=str))
    else:
        _print_text(scope, runs, v, replays)
    return 0 if summary["ok"] else 1


def _scope_text(s) -> str:
    return (f"{s.regions} regions, {s.tenants} tenants, {s.keys} pcs_id/tenant x {s.payloads} payloads, "
            f"{s.writes} writes ({s.bad} bad-signature), {s.crashes} crash, {s.partitions} partition, "
            f"{s.rotations} rotation, {'volatile' if s.volatile_store else 'durable'} dedup store")
