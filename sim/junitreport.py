"""Simulator runs and sweeps as JUnit XML (``flk sim run --junit``, ``flk sim sweep --junit``),
so a CI pipeline that enforces the invariants shows which one failed, for which seed, and
the command that reproduces it -- not only an exit code.

A run is one testsuite (``<scenario> seed <n>``); each checker (invariants, alert
declarations) and each SLO is a testcase. A failed check carries its violation count and
first reason as the message (a property that must sometimes happen and never did: "never
happened"), the first violations and the replay command as the detail. A
checker that had nothing to check in the run is *skipped* with the reason ("not exercised"),
never a pass. A sweep is one testsuite; each run (seed, parameter point) is a testcase that
fails with the checks it failed and the commands that rerun and replay it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable

from flk.impl.core import junit

SHOWN_VIOLATIONS = 20  # in a failure's detail; results.json holds them all


def run_suite(res: dict, reproduce: str | None = None) -> junit.Suite:
    """One run's results (``results.json``) as a testsuite; ``reproduce``: the command that
    runs it again (default: ``flk sim replay`` of its folder)."""
    classname = f"flk.sim.{res['scenario']}"
    out_dir = res.get("out_dir")
    if reproduce is None:
        reproduce = (f"flk sim replay {shlex.quote(str(out_dir))}" if out_dir
                     else f"flk sim run {shlex.quote(str(res['scenario']))} --seed {res['seed']}")
    cases = []
    for c in res["invariants"]:
        case = junit.Case(classname=classname, name=c["id"], properties={"kind": c["kind"],
                                                                        "checked": str(c["checked"])})
        if not c["ok"] and not c["violation_count"]:  # a property that must sometimes happen and never did
            case.failure = "never happened in this run" + (f": {c['note']}" if c.get("note") else "")
            case.failure_type = c["id"]
            case.text = f"{case.failure}\nreproduce: {reproduce}"
        elif not c["ok"]:
            first = c["violations"][0] if c.get("violations") else None
            why = first.get("why") if isinstance(first, dict) else None
            case.failure = f"{c['violation_count']} violation(s)" + (f"; first: {why}" if isinstance(why, str) else "")
            case.failure_type = c["id"]
            shown = "\n".join(json.dumps(v, sort_keys=True, default=str) for v in c["violations"][:SHOWN_VIOLATIONS])
            more = c["violation_count"] - min(len(c["violations"]), SHOWN_VIOLATIONS)
            case.text = (shown + (f"\n... {more} more in results.json" if more > 0 else "")
                         + f"\nreproduce: {reproduce}")
        elif not c.get("exercised", True):
            case.skipped = "not exercised: nothing to check in this run" + (f" ({c['note']})" if c.get("note") else "")
        cases.append(case)
    for s in res["slos"]:
        case = junit.Case(classname=classname, name=f"SLO {s['metric']}")
        if not s["ok"]:
            case.failure = f"{s['value']!r} {s['op']} {s['target']!r} does not hold"
            case.failure_type = "SLO"
            case.text = f"{case.failure}\nreproduce: {reproduce}"
        cases.append(case)
    props = {"scenario": str(res["scenario"]), "seed": str(res["seed"]), "history_sha256": str(res["digest"])}
    if out_dir:
        props["run_dir"] = str(out_dir)
    return junit.Suite(f"{res['scenario']} seed {res['seed']}", cases, props)


def runs_document(results: Iterable[dict], name: str = "flk sim run", reproduce: str | None = None) -> bytes:
    """Runs' results as one JUnit document."""
    return junit.document(name, [run_suite(r, reproduce) for r in results])


def sweep_document(table, name: str) -> bytes:
    """A sweep's table (:func:`flk.sim.sweep.sweep`) as one JUnit document: a testcase per run."""
    failing = {(f["seed"], f["overrides"]): f for f in table.attrs.get("failures", [])}
    cases = []
    for row in table.to_dict("records"):
        overrides = row.get("overrides") or ""
        case = junit.Case(classname=f"flk.sim.sweep.{name}", name=f"seed {row['seed']}" + (
            f" {overrides}" if overrides else ""))
        item = failing.get((row["seed"], overrides))
        if not row["valid"]:
            case.failure = f"failed: {row.get('failed') or 'the run is invalid'}"
            case.failure_type = "invalid run"
            if item is not None:
                case.text = "\n".join(x for x in (case.failure, f"rerun: {item['rerun']}",
                                                  f"replay: {item['replay']}" if item["replay"] else "") if x)
        cases.append(case)
    props = {"scenario": name}
    if table.attrs.get("out_dir"):
        props["sweep_dir"] = str(table.attrs["out_dir"])
    return junit.document(f"flk sim sweep {name}", [junit.Suite(f"sweep {name}", cases, props)])


def explore_document(s: dict) -> bytes:
    """An exploration's summary (:func:`flk.sim.explore.explore`) as one JUnit document: a
    testcase per distinct failure (by signature: its seeds, replay command, shrunk regression
    scenario), one that passes for the runs without a failure, one for the determinism rerun
    when it ran; a declared coverage cell never reached is a skipped testcase (what the
    exploration did not test), as the exit code does not fail on it."""
    classname = f"flk.sim.explore.{s['mode']}"
    cases = [junit.Case(classname, f"{s['runs'] - s['failing_runs']} of {s['runs']} runs without a failure")]
    for f in s["distinct_failures"]:
        case = junit.Case(classname, f["signature"], failure=f"{len(f['seeds'])} seed(s), first {f['seeds'][0]}"
                          + (f": simulator error {f['error']}" if f.get("error") else ""), failure_type="failure")
        case.text = "\n".join(x for x in (
            case.failure, f"seeds: {' '.join(map(str, f['seeds']))}", f"replay: {f['replay']}",
            f"run folder: {f['run_dir']}" if f.get("run_dir") else "",
            f"regression candidate: {f['regression_candidate']}" if f.get("regression_candidate") else "") if x)
        cases.append(case)
    det = s.get("determinism")
    if det:
        cases.append(junit.Case(classname, "determinism", failure=(
            f"{det['mismatches']} of {det['sampled']} seeds gave another history in another process"
            if det["mismatches"] else None), failure_type="nondeterminism"))
    for cell in (s.get("coverage") or {}).get("minimum_missing", []):
        cases.append(junit.Case(classname, "coverage " + " x ".join(cell),
                                skipped="declared in the coverage minimum, never reached by these runs"))
    props = {"mode": str(s["mode"]), "runs": str(s["runs"]), "seeds": "-".join(map(str, s["seeds"])),
             "scenario": "swarm" if s["swarm"] else str(s["scenario"])}
    if s.get("plant"):
        props["plant"] = str(s["plant"])
    return junit.document("flk sim explore", [junit.Suite(f"explore {props['scenario']} {s['mode']}", cases, props)])
