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


def run_suite(res: dict) -> junit.Suite:
    """One run's results (``results.json``) as a testsuite."""
    classname = f"flk.sim.{res['scenario']}"
    out_dir = res.get("out_dir")
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


def runs_document(results: Iterable[dict]) -> bytes:
    """Runs' results as one JUnit document."""
    return junit.document("flk sim run", [run_suite(r) for r in results])


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
