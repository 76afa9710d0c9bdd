"""`flk prove` and the proofs: the quick tier matches the manifest, and every proof
catches a planted bug (a mutant must turn "proved" into "counterexample")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flk.formal import merge, ring, rounding, signals
from flk.formal.registry import PROOFS, load_manifest
from flk.impl.core import canonical
from flk.impl.core.signals import BudgetParams, RegimeThresholds

FLK = [sys.executable, "-m", "flk.impl"]


def _flk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FLK, *args], capture_output=True, text=True, timeout=300)


def test_inv_prove_quick_tier_matches_manifest_json():
    p = _flk("prove", "--tier", "quick", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] and out["tier"] == "quick" and out["seconds"] <= 60
    manifest = load_manifest()
    quick = [i for i, e in manifest["proofs"].items() if "quick" in e["tiers"]]
    assert [r["id"] for r in out["results"]] == quick
    for r in out["results"]:
        assert r["status"] == manifest["proofs"][r["id"]]["expected"]


def test_inv_prove_manifest_and_registry_agree():
    manifest = load_manifest()
    assert set(manifest["proofs"]) == set(PROOFS)
    for entry in manifest["proofs"].values():
        assert entry["expected"] in ("proved", "counterexample")
        assert set(entry["budget_s"]) >= set(entry["tiers"])


def test_inv_prove_only_and_table():
    p = _flk("prove", "--only", "INV-ROUND")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert len(lines) == 5 and all("INV-ROUND" in ln for ln in lines[:-1])


def test_inv_prove_unknown_id_is_usage_error():
    p = _flk("prove", "--only", "INV-NOPE")
    assert p.returncode == 2 and "unknown proof ID" in p.stderr and "Traceback" not in p.stderr


def test_inv_prove_fails_when_result_differs_from_manifest(monkeypatch, capsys):
    """A proof returning something else than the manifest expects makes flk prove exit 1."""
    from flk.formal import registry
    from flk.impl.lab.cli import main

    monkeypatch.setitem(registry.PROOFS, "INV-ROUND.monotonic",
                        lambda tier: rounding.prove_idempotent(tier, variant="float32_parse"))
    assert main(["prove", "--only", "INV-ROUND.monotonic"]) == 1
    assert "expected proved" in capsys.readouterr().out


# ------------------------------------------------------------------ mutants
def test_inv_round_mutant_float32_reader_is_caught():
    r = rounding.prove_idempotent("quick", variant="float32_parse")
    assert r.status == "counterexample"
    x = float(r.counterexample["x"])
    text = canonical.fmt9(x)
    import numpy as np

    assert canonical.fmt9(float(np.float32(float(text)))) != text  # confirmed outside Z3


def test_inv_round_shortcuts_disagree_with_v1_confirmed_in_python():
    r = rounding.search_shortcut_c("quick")
    assert r.status == "counterexample"
    for ex in r.counterexample["examples"]:
        x = float(ex["x"])
        assert canonical.fmt9(x) == ex["v1"] == rounding.spec_text(x)
        assert rounding.c_round_text(x) == ex["round(x*1e9)/1e9"] != ex["v1"]
    r = rounding.search_shortcut_halfup("quick")
    assert r.status == "counterexample"
    for ex in r.counterexample["examples"]:
        x = float(ex["x"])
        assert canonical.fmt9(x) == ex["v1"] != rounding.halfup_text(x)


def test_inv_round_spec_text_matches_fmt9_on_hard_inputs():
    xc = rounding.crosscheck_fmt9("quick")
    assert xc["cases"] > 500 and xc["mismatches"] == 0


def test_inv_budget_bounds_mutant_without_clamp_is_caught():
    assert signals.prove_budget_real("quick", clamp=False).status == "counterexample"
    r = signals.prove_budget_fp("quick", clamp=False)
    assert r.status == "counterexample"
    v = r.counterexample
    p = signals.signals.DEFAULT_BUDGET
    d, c, rr = float(v["D"]), float(v["coh"]), float(v["r"])
    raw = p.base + p.alpha * (1.0 - rr) + p.beta * max(0.0, d - p.d0) + p.gamma * c
    assert not 0.0 <= raw <= 1.0  # the unclamped expression really leaves [0, 1]


def test_inv_budget_bounds_mutant_negative_weight_breaks_monotonicity():
    r = signals.prove_budget_real("quick", params=BudgetParams(gamma=-0.2))
    assert r.status == "counterexample" and r.counterexample["claim"] == "monotone-coh"


def test_inv_regime_partition_mutant_overlapping_thresholds_is_caught():
    r = signals.prove_regime("quick", RegimeThresholds(sticky_d_max=3.0))
    assert r.status == "counterexample" and r.counterexample["regimes"] == ["sticky", "non_sticky"]


@pytest.mark.parametrize("variant", ["first_seen_only", "prefer_local"])
def test_inv_convergence_mutant_merge_not_commutative_is_caught(variant):
    r = merge.prove_semilattice("quick", variant)
    assert r.status == "counterexample" and r.counterexample["law"] == "commutative"


def test_inv_convergence_mutant_latest_wins_is_a_semilattice_but_caught():
    assert merge.prove_semilattice("quick", "latest").status == "proved"
    assert merge.prove_earliest("quick", "latest").status == "counterexample"


@pytest.mark.parametrize("variant", ["no_wrap", "inclusive"])
def test_inv_ring_owner_mutants_are_caught(variant):
    r = ring.prove_ring("quick", variant, max_vnodes=3)
    assert r.status == "counterexample"
    assert len(r.counterexample["selected"]) != 1


def test_inv_verify_before_dedup_mutant_dedup_before_verify_is_caught():
    from flk.formal import verifier

    r = verifier.prove("quick", "INV-VERIFY-BEFORE-DEDUP", "dedup_before_verify")
    assert r.status == "counterexample"
    assert any(s.startswith("GET") for s in r.counterexample["steps"])


def test_inv_fww_mutant_overwrite_on_duplicate_is_caught():
    from flk.formal import verifier

    r = verifier.prove("quick", "INV-FWW", "overwrite", max_k=6)
    assert r.status == "counterexample"
    assert sum(s.startswith("PUT") for s in r.counterexample["steps"]) == 2


def test_inv_fww_z3_encoding_agrees_with_model_traces():
    from flk.formal import verifier

    xc = verifier.crosscheck_model(30, seed=2)
    assert xc["mismatches"] == 0 and xc["steps"] > 300
