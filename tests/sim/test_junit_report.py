"""``flk sim run --junit`` / ``flk sim sweep --junit``: the simulator's verdicts as JUnit XML
for CI, and the one JUnit writer (``flk.impl.core.junit``) the conformance kit shares.

What must hold: every checker and SLO of a run is a testcase; exactly the checks that failed
fail, each with its violation count, first reason and the replay command; a checker that had
nothing to check is skipped ("not exercised"), never a pass; a planted bug turns the report
red where the same run without it is green; a sweep's run is a testcase that fails with the
checks it failed and the commands that rerun it; a bad --junit path is refused before any
run; any text gives a well-formed document.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core import junit
from flk.impl.lab import cli
from flk.sim.junitreport import sweep_document

SMALL = ["scenario.duration_s=8", "workload.rate_per_s=60"]  # crash-restart, still with its crash
PLANT = "replay-rewrites-answer"


def _run(tmp_path, capsys, *extra: str) -> tuple[int, ET.Element, dict]:
    xml = tmp_path / "report.xml"
    sets = [a for s in SMALL for a in ("--set", s)]
    code = cli.main(["sim", "run", "crash-restart", "--seed", "1", *sets, "--out", str(tmp_path / "runs"),
                     "--no-plots", "--quiet", "--junit", str(xml), *extra])
    capsys.readouterr()
    run_dir = tmp_path / "runs" / "crash-restart" / "1"
    return code, ET.parse(xml).getroot(), json.loads((run_dir / "results.json").read_text())


def _cases(root: ET.Element) -> dict[str, ET.Element]:
    return {tc.get("name"): tc for tc in root.iter("testcase")}


def test_every_check_is_a_testcase_and_only_the_failed_ones_fail(tmp_path, capsys):
    code, root, res = _run(tmp_path / "planted", capsys, "--plant", PLANT)
    assert code == 1 and not res["valid"]
    cases = _cases(root)
    assert set(cases) == {c["id"] for c in res["invariants"]} | {f"SLO {s['metric']}" for s in res["slos"]}
    failed = {c["id"]: c for c in res["invariants"] if not c["ok"]}
    assert {"INV-FWW", "INV-IDEMPOTENT-REPLAY"} <= set(failed) and root.get("failures") == str(len(failed) + sum(1 for s in res["slos"] if not s["ok"]))
    for name, tc in cases.items():
        failure, skipped = tc.find("failure"), tc.find("skipped")
        if name in failed:
            c = failed[name]
            assert failure is not None and failure.get("type") == name
            assert failure.get("message").startswith(f"{c['violation_count']} violation(s); first: ")
            assert c["violations"][0]["why"] in failure.get("message")
            assert "reproduce: flk sim replay " in failure.text
        else:
            assert failure is None, name
    skipped = {c["id"] for c in res["invariants"] if c["ok"] and not c.get("exercised", True)}
    assert skipped  # this run has a checker with nothing to check (INV-CONVERGENCE: one region)
    assert {n for n, tc in cases.items() if tc.find("skipped") is not None} == skipped
    for name in skipped:
        assert cases[name].find("skipped").get("message").startswith("not exercised")
    props = {p.get("name"): p.get("value") for p in root.find("testsuite").find("properties")}
    assert props["history_sha256"] == res["digest"] and props["seed"] == "1"
    # the counterfactual: the same run without the planted bug is green
    code, root, res = _run(tmp_path / "clean", capsys)
    assert code == 0 and res["valid"] and root.get("failures") == "0"
    assert not [tc for tc in root.iter("testcase") if tc.find("failure") is not None]


def test_a_bad_junit_path_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    code = cli.main(["sim", "run", "duplicate-storm", "--seed", "1", "--out", str(tmp_path / "runs"),
                     "--junit", str(tmp_path / "adir")])
    assert code == 2 and "--junit" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "duplicate-storm").exists()
    code = cli.main(["sim", "sweep", "duplicate-storm", "--seeds", "1", "--out", str(tmp_path / "sweeps"),
                     "--junit", str(tmp_path / "adir")])
    assert code == 2 and not (tmp_path / "sweeps").exists()


def test_a_sweep_run_is_a_testcase_that_fails_with_its_checks_and_commands():
    table = pd.DataFrame([
        {"seed": 1, "overrides": "workload.dup_rate=0.1", "valid": True, "failed": ""},
        {"seed": 2, "overrides": "workload.dup_rate=0.1", "valid": False, "failed": "INV-FWW,INV-IDEMPOTENT-REPLAY"},
        {"seed": 1, "overrides": "", "valid": False, "failed": ""},
    ])
    table.attrs["failures"] = [
        {"seed": 2, "overrides": "workload.dup_rate=0.1", "rerun": "flk sim run s --seed 2 --set x",
         "replay": "flk sim replay runs/s/2"},
        {"seed": 1, "overrides": "", "rerun": "flk sim run s --seed 1", "replay": ""}]
    root = ET.fromstring(sweep_document(table, "s"))
    assert (root.get("tests"), root.get("failures")) == ("3", "2")
    cases = _cases(root)
    assert cases["seed 1 workload.dup_rate=0.1"].find("failure") is None
    bad = cases["seed 2 workload.dup_rate=0.1"].find("failure")
    assert bad.get("message") == "failed: INV-FWW,INV-IDEMPOTENT-REPLAY"
    assert bad.text.splitlines()[1:] == ["rerun: flk sim run s --seed 2 --set x", "replay: flk sim replay runs/s/2"]
    assert cases["seed 1"].find("failure").get("message") == "failed: the run is invalid"


def test_a_property_that_never_happened_says_so():
    from flk.sim.junitreport import run_suite

    res = {"scenario": "s", "seed": 1, "digest": "d", "slos": [], "invariants": [
        {"id": "SOMETIMES-CONFLICT-409", "kind": "sometimes", "ok": False, "checked": 0, "violation_count": 0,
         "violations": [], "note": "a conflicting payload got 409"}]}
    (case,) = run_suite(res).cases
    assert case.failure == "never happened in this run: a conflicting payload got 409"


def test_a_real_sweep_writes_its_report(tmp_path, capsys):
    xml = tmp_path / "sweep.xml"
    params = [a for s in SMALL for a in ("--param", s)]
    assert cli.main(["sim", "sweep", "crash-restart", "--seeds", "1-2", "--workers", "1", "--quiet",
                     "--out", str(tmp_path / "sweeps"), "--junit", str(xml), *params]) == 0
    capsys.readouterr()
    root = ET.parse(xml).getroot()
    assert (root.get("tests"), root.get("failures")) == ("2", "0")
    assert sorted(tc.get("name").split()[1] for tc in root.iter("testcase")) == ["1", "2"]


TEXT = st.text(st.characters(blacklist_categories=()), max_size=40)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(names=st.lists(TEXT, min_size=1, max_size=4), message=TEXT, detail=TEXT, skip=st.booleans())
def test_any_text_gives_a_well_formed_document_with_the_right_counts(names, message, detail, skip):
    cases = [junit.Case("c", n, failure=message if i == 0 else None, text=detail,
                        skipped="why" if skip and i > 0 else None, properties={n: message})
             for i, n in enumerate(names)]
    root = ET.fromstring(junit.document(message, [junit.Suite(detail, cases, {"k": detail})]))
    assert root.get("tests") == str(len(names)) and root.get("failures") == "1"
    assert root.get("skipped") == str(len(names) - 1 if skip else 0)
    assert [tc.get("name") for tc in root.iter("testcase")] == [junit.xml_safe(n) for n in names]
    assert root.find("testsuite/testcase/failure").get("message") == junit.xml_safe(message)[:junit.MAX_MESSAGE]


def test_an_exploration_is_a_testcase_per_distinct_failure_with_its_replay():
    from flk.sim.junitreport import explore_document

    summary = {"mode": "safety", "runs": 40, "failing_runs": 3, "seeds": [1, 40], "swarm": True, "scenario": None,
               "plant": "fourth-tenant-stale-replay",
               "distinct_failures": [
                   {"signature": "INV-NO-ACKED-LOSS|crash", "seeds": [7, 19], "error": None,
                    "replay": "flk sim run nemesis-random --seed 7 --plant fourth-tenant-stale-replay",
                    "run_dir": "runs/explore/failures/7", "regression_candidate": "runs/explore/7.toml"},
                   {"signature": "simulator-error", "seeds": [23], "error": "ValueError: x", "replay": "flk sim run n",
                    "run_dir": None, "regression_candidate": None}],
               "determinism": {"sampled": 3, "mismatches": 1},
               "coverage": {"minimum_missing": [["partition", "*", "partition-cut-clients"]]}}
    root = ET.fromstring(explore_document(summary))
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("5", "3", "1")
    cases = _cases(root)
    lost = cases["INV-NO-ACKED-LOSS|crash"].find("failure")
    assert lost.get("message") == "2 seed(s), first 7"
    assert lost.text.splitlines()[1:] == ["seeds: 7 19", "replay: " + summary["distinct_failures"][0]["replay"],
                                          "run folder: runs/explore/failures/7",
                                          "regression candidate: runs/explore/7.toml"]
    assert "simulator error ValueError: x" in cases["simulator-error"].find("failure").get("message")
    assert cases["determinism"].find("failure").get("type") == "nondeterminism"
    assert cases["37 of 40 runs without a failure"].find("failure") is None
    assert cases["coverage partition x * x partition-cut-clients"].find("skipped") is not None


def test_a_real_exploration_writes_its_report(tmp_path, capsys):
    xml = tmp_path / "explore.xml"
    code = cli.main(["sim", "explore", "--runs", "1", "--quiet", "--shrink-runs", "0", "--out", str(tmp_path / "ex"),
                     "--junit", str(xml)])
    capsys.readouterr()
    root = ET.parse(xml).getroot()
    assert root.get("failures") == ("1" if code else "0")
    assert next(root.iter("testcase")).get("name").endswith("of 1 runs without a failure")
