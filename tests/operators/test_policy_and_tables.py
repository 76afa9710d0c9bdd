"""Policies as data, the tables the controller executes, gates, samples, forecasts."""

from __future__ import annotations

import json
import math
import pathlib
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.cli import main
from flk.impl.lab.cli.cmd_operator import docs_markdown
from flk.impl.operator import controller, gates, observe, table
from flk.impl.operator.forecast import ewma, holt_winters
from flk.impl.operator.policy import PolicyError, check_policy, parse_policy
from flk.impl.operator.tiering import monthly_cost, plan_prewarm

ROOT = pathlib.Path(__file__).resolve().parents[2]
MIGRATION = """kind = "ShardMigration"
name = "grow"
[spec]
old = { s0 = "sqlite:///a.db" }
new = { s0 = "sqlite:///a.db", s1 = "sqlite:///b.db" }
[spec.gates]
max_latency_p95_ms = 50.0
"""


def test_spec_operator_md_is_generated_from_the_tables_and_schema():
    assert (ROOT / "spec" / "OPERATOR.md").read_text() == docs_markdown(), "run `flk operator docs > spec/OPERATOR.md`"


def test_every_row_names_a_guard_the_controller_has_and_phases_that_exist():
    for r in table.ROWS:
        assert r.guard in controller.GUARDS, r
        table.phase(r.kind, r.source)
        table.phase(r.kind, r.target)
    for p in table.PHASES:
        if not p.terminal:
            assert table.rows_from(p.kind, p.name), f"{p.kind}.{p.name} has no way out"


@pytest.mark.parametrize("text,key,reason", [
    (MIGRATION.replace("max_latency_p95_ms", "max_latency"), "spec.gates.max_latency", "unknown key"),
    (MIGRATION.replace("50.0", '"fast"'), "spec.gates.max_latency_p95_ms", "must be a number"),
    (MIGRATION.replace('name = "grow"', 'name = "Grow!"'), "name", "must be 1-63"),
    (MIGRATION.replace('kind = "ShardMigration"', 'kind = "Migration"'), "kind", "must be one of"),
    (MIGRATION.replace('s1 = "sqlite:///b.db"', 's1 = "ftp://x"'), "spec.new.s1", "store URL"),
    (MIGRATION.replace('s0 = "sqlite:///a.db", s1', 's0 = "sqlite:///c.db", s1'), "spec.new.s0", "same URL"),
])
def test_validate_exits_2_naming_file_key_path_and_reason(tmp_path, capsys, text, key, reason):
    f = tmp_path / "p.toml"
    f.write_text(text)
    assert main(["operator", "validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}: {key}: " in err and reason in err, err
    assert "Traceback" not in err


def test_validate_accepts_a_good_policy_and_fills_defaults(tmp_path, capsys):
    f = tmp_path / "p.toml"
    f.write_text(MIGRATION)
    assert main(["operator", "validate", str(f)]) == 0
    pol = parse_policy(MIGRATION.encode())
    assert pol.spec["gates"]["window_s"] == 10.0 and pol.spec["soak_s"] == 5.0 and pol.spec["auto_rollback"] is True


def test_validate_takes_the_directory_run_reads_and_refuses_two_documents_for_one_policy(tmp_path, capsys):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "a.toml").write_text(MIGRATION)
    (d / "notes.txt").write_text("not a policy")
    assert main(["operator", "validate", str(d)]) == 0
    assert [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()] == [str(d / "a.toml")]
    (d / "b.toml").write_text(MIGRATION)  # the same kind and name: which one run would drive is an accident
    assert main(["operator", "validate", str(d)]) == 2
    assert f"{d / 'b.toml'}: name: ShardMigration" in capsys.readouterr().err
    assert main(["operator", "run", "--policies", str(d), "--url", "http://127.0.0.1:1", "--state-dir",
                 str(tmp_path / "st"), "--max-seconds", "1"]) == 2
    assert f"is also defined by {d / 'a.toml'}" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["operator", "validate", str(empty)]) == 2
    assert "no *.toml policy files" in capsys.readouterr().err


def test_validate_missing_file_and_not_toml_exit_2(tmp_path, capsys):
    assert main(["operator", "validate", str(tmp_path / "nope.toml")]) == 2
    (tmp_path / "bad.toml").write_bytes(b"kind = \n\xff")
    assert main(["operator", "validate", str(tmp_path / "bad.toml")]) == 2
    assert "Traceback" not in capsys.readouterr().err


VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
                      | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(
                          st.text(max_size=6), c, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(["spec", "spec.gates", "spec.old", ""]), st.text(min_size=1, max_size=12), VALUES)
def test_any_mutated_policy_is_a_policy_error_or_a_policy_never_a_traceback(where, key, value):
    doc = tomllib.loads(MIGRATION)
    node = doc
    for part in [p for p in where.split(".") if p]:
        node = node[part]
    node[key] = value
    try:
        pol = check_policy(doc)
    except PolicyError as exc:
        assert exc.key and exc.reason
    else:
        assert pol.kind == "ShardMigration"


def test_gates_unknown_without_samples_breach_only_over_the_fraction():
    g = {"window_s": 10.0, "min_samples": 3, "breach_fraction": 0.5, "max_latency_p95_ms": 50.0}
    s = [{"t": t, "latency_p95_ms": v} for t, v in ((1, 10), (2, 100), (3, 10))]
    assert gates.evaluate(g, s[:2], 3)["max_latency_p95_ms"]["verdict"] == "unknown"
    assert gates.evaluate(g, s, 3)["max_latency_p95_ms"]["verdict"] == "ok"  # 1 of 3 < half
    s.append({"t": 4, "latency_p95_ms": 90})
    assert gates.evaluate(g, s, 4)["max_latency_p95_ms"]["verdict"] == "breach"
    assert gates.evaluate(g, s, 30)["max_latency_p95_ms"]["verdict"] == "unknown"  # the window moved on


def test_sample_from_two_scrapes_takes_the_p95_bucket_of_the_delta():
    def text(n_fast, n_slow, n503):
        return "\n".join([
            f'flk_http_latency_seconds_bucket{{le="0.01"}} {n_fast}',
            f'flk_http_latency_seconds_bucket{{le="0.25"}} {n_fast + n_slow}',
            f'flk_http_latency_seconds_bucket{{le="+Inf"}} {n_fast + n_slow}',
            f'flk_http_requests_total{{route="/v1/pcs/submit",status="200"}} {n_fast + n_slow - n503}',
            f'flk_http_requests_total{{route="/v1/pcs/submit",status="503"}} {n503}',
            'flk_ingest_total{tenant="t"} 10', 'flk_dedup_hits_total{tenant="t"} 2'])
    a, b = observe.parse(text(100, 0, 0)), observe.parse(text(200, 50, 5))
    s = observe.sample(a, b, 7.0)
    assert s["latency_p95_ms"] == 250.0 and math.isclose(s["error_rate"], 5 / 150)
    assert observe.sample(b, b, 8.0)["latency_p95_ms"] is None


def test_a_scrape_of_two_workers_is_read_as_the_whole_server():
    """A server with two workers answers every scrape with both workers' series, labelled worker
    (flk.impl.server.workermetrics): the health sample sums them, and two scrapes answered by
    different workers subtract the same totals (one worker's counts against the other's
    read as a drop, or as a burst)."""
    from flk.impl.server.workermetrics import merge

    def worker(n_fast, n_slow, n503):
        return "\n".join([
            "# HELP flk_http_latency_seconds latency", "# TYPE flk_http_latency_seconds histogram",
            f'flk_http_latency_seconds_bucket{{le="0.01"}} {n_fast}',
            f'flk_http_latency_seconds_bucket{{le="0.25"}} {n_fast + n_slow}',
            f'flk_http_latency_seconds_bucket{{le="+Inf"}} {n_fast + n_slow}',
            "# HELP flk_http_requests_total answers", "# TYPE flk_http_requests_total counter",
            f'flk_http_requests_total{{route="/v1/pcs/submit",status="200"}} {n_fast + n_slow - n503}',
            f'flk_http_requests_total{{route="/v1/pcs/submit",status="503"}} {n503}', ""])

    before = observe.parse(merge({0: worker(100, 0, 0), 1: worker(60, 0, 0)}).decode())
    after = observe.parse(merge({1: worker(60, 50, 5), 0: worker(200, 0, 0)}).decode())
    assert before["requests"] == {"200": 160.0, "503": 0.0}
    s = observe.sample(before, after, 7.0)
    assert s["requests"] == 150 and math.isclose(s["error_rate"], 5 / 150) and s["latency_p95_ms"] == 250.0


def test_holt_winters_follows_a_season_ewma_does_not_and_both_are_exact_on_a_constant():
    season = [0, 0, 10, 30, 10, 0, 0, 0]
    series = season * 4
    assert abs(holt_winters(series, 8, 0.3, 0.05, 0.3) - season[0]) < 2.0
    assert abs(holt_winters(series[:-5], 8, 0.3, 0.05, 0.3) - season[3]) < 5.0
    assert abs(ewma(series[:-5], 0.3) - season[3]) > 10.0
    assert holt_winters([4.0] * 20, 5, 0.3, 0.1, 0.3) == pytest.approx(4.0)
    assert ewma([4.0] * 5, 0.5) == 4.0


def _tier_spec(**over):
    pol = check_policy({"kind": "TieringPolicy", "name": "t", "spec": {
        "forecaster": "ewma", "max_promotions_per_cycle": 2, "hot_s": 10.0, "warm_s": 100.0, **over}})
    return pol.spec


def test_prewarm_respects_the_budget_prefers_likely_keys_and_skips_unpredicted_tenants():
    spec = _tier_spec()
    hist = {"a": [5.0, 5.0, 5.0], "b": [0.0, 0.0, 0.0]}
    cands = [["a", "k1", 10], ["a", "k2", 1], ["a", "k3", 5], ["b", "k9", 100]]
    keys, rep = plan_prewarm(spec, hist, cands)
    assert keys == [["a", "k1"], ["a", "k3"]] and rep["chosen"] == 2
    assert plan_prewarm(_tier_spec(forecaster="none"), hist, cands)[0] == []


def test_monthly_cost_scales_byte_seconds_to_a_month():
    cost = _tier_spec()["cost"]
    c = monthly_cost(cost, {"hot": (1 << 30) * 10.0}, 10.0, 0, 0)
    assert c["by_tier"]["hot"] == pytest.approx(cost["hot_gb_month"]) and c["requests"] == 0


def test_crr_policy_applies_then_reapplies_a_changed_spec_and_degrades_on_lag():
    g = {"window_s": 5.0, "min_samples": 1, "max_replication_lag_s": 2.0}
    pol = check_policy({"kind": "CRRPolicy", "name": "c", "spec": {"mode": "full", "gates": g}})
    res = controller.reconcile(pol, None, {}, 0.0)
    assert res.status["phase"] == "Applying" and res.actions[0]["op"] == "crr.apply"
    obs = {"crr": {"applied": {"r1": pol.generation, "r2": pol.generation}}}
    res = controller.reconcile(pol, res.status, obs, 1.0)
    assert res.status["phase"] == "Active" and res.actions == []
    res = controller.reconcile(pol, res.status, {**obs, "sample": {"t": 2.0, "replication_lag_s": 9.0}}, 2.0)
    assert res.status["phase"] == "Degraded"
    sel = check_policy({"kind": "CRRPolicy", "name": "c", "spec": {"mode": "selective", "tenants": ["t1"],
                                                                   "gates": g}})
    res = controller.reconcile(sel, res.status, obs, 3.0)
    assert res.status["phase"] == "Applying" and res.actions[0]["spec"]["tenants"] == ["t1"]
    assert [a["to"] for a in res.status["pending_audit"]][-1] == "Applying"


def test_tiering_policy_configures_then_prewarms_once_per_cycle():
    pol = check_policy({"kind": "TieringPolicy", "name": "t", "spec": {
        "forecaster": "ewma", "cycle_s": 10.0, "hot_s": 5.0, "warm_s": 50.0}})
    res = controller.reconcile(pol, None, {}, 0.0)
    assert res.actions[0]["op"] == "tier.configure"
    tier = {"generation": pol.generation, "history": {"a": [3.0, 3.0]}, "candidates": [["a", "k", 3]]}
    res = controller.reconcile(pol, res.status, {"tier": tier}, 1.0)
    assert res.status["phase"] == "Active" and res.actions == [{"op": "tier.prewarm", "keys": [["a", "k"]],
                                                                "policy": pol.key, "id": res.actions[0]["id"]}]
    res = controller.reconcile(pol, res.status, {"tier": tier}, 2.0)
    assert res.actions == []  # next cycle at 11.0


def test_a_malformed_observation_is_a_condition_not_a_traceback():
    pol = parse_policy(MIGRATION.encode())
    st0 = controller.reconcile(pol, None, {}, 0.0).status
    bad = {"migration": {"phase": "dual_write"}, "servers": 3}
    res = controller.reconcile(pol, controller.reconcile(pol, st0, bad, 1.0).status, bad, 2.0)
    assert res.status["phase"] == "DualWrite"
    assert any(c["type"] == "ActionFailed" and c["status"] == "True" for c in res.status["conditions"])


def test_pruning_issues_prune_batches_until_done_and_names_the_copies_it_kept():
    """Cleanup -> Pruning once every server cleaned up; migration.prune batches of spec.prune_batch
    until the prune walked every shard, then Completed; copies the prune kept (an owner lacked the
    key or held another outcome) are the CopiesKept condition, not a silent Completed."""
    pol = parse_policy(MIGRATION.encode())
    st = {**controller.reconcile(pol, None, {}, 0.0).status, "phase": "Cleanup"}
    prune = {"done": False, "deleted": 0, "missing": 0, "different": 0}
    mig = {"phase": "cleaned", "copy": {}, "verify": {}, "catchup": {"done": True}, "prune": prune}
    res = controller.reconcile(pol, st, {"migration": mig, "servers": ["cleaned", "cut_over"]}, 1.0)
    assert res.status["phase"] == "Cleanup"  # a server has not re-read cleaned yet
    res = controller.reconcile(pol, res.status, {"migration": mig, "servers": ["cleaned", "cleaned"]}, 2.0)
    assert res.status["phase"] == "Pruning"
    assert [(a["op"], a["batch"]) for a in res.actions] == [("migration.prune", pol.spec["prune_batch"])]
    assert not any(c["type"] == "CopiesKept" for c in res.status["conditions"])
    done = {**mig, "prune": {**prune, "done": True, "deleted": 40, "different": 1}}
    res = controller.reconcile(pol, res.status, {"migration": done, "servers": ["cleaned", "cleaned"]}, 3.0)
    assert res.status["phase"] == "Completed" and res.actions == []
    kept = next(c for c in res.status["conditions"] if c["type"] == "CopiesKept")
    assert kept["status"] == "True" and kept["message"] == "0 missing, 1 different", kept
    # every condition spec/OPERATOR.md documents is the one a status carries here, and no other
    assert [c["type"] for c in res.status["conditions"]] == list(controller.CONDITIONS)
