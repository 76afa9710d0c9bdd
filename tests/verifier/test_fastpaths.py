"""The hand-optimised hot paths equal their plain definitions exactly."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.canonical import round9
from flk.impl.core.signals import d_hat
from flk.impl.dedup import base as dedup_base
from flk.impl.verifier.pipeline import Policy, Verifier, _fast_valid, _validate_full, validate_pcs

from .pcsgen import HMAC_A, make_pcs, registry, sign

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=150, deadline=None)
@given(region=st.text(max_size=12), version=st.text(max_size=12),
       reasons=st.lists(st.sampled_from(["d_hat_mismatch", "x\u00e9\"\\", "budget_mismatch"]), max_size=3),
       dh=finite, b=st.floats(0, 1), reg=st.sampled_from(["sticky", "mixed", "non_sticky"]),
       now=st.floats(0, 4e9) | st.integers(0, 2**40))
def test_response_body_equals_json_dumps(region, version, reasons, dh, b, reg, now):
    v = Verifier(registry(), policy=Policy(version=version), region=region)
    pid = "ab" * 32
    esc = bool(reasons)
    want = json.dumps({
        "pcs_id": pid, "accepted": not esc, "escalated": esc, "reasons": reasons,
        "recomputed": {"D_hat": round9(dh), "budget": round9(b), "regime": reg},
        "policy_version": version, "region": region, "first_seen": float(now),
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert v.answer_body(pid, esc, reasons, dh, b, reg, now) == want


@settings(max_examples=150, deadline=None)
@given(scales=st.lists(st.integers(2, 2**31), min_size=2, max_size=8, unique=True).map(sorted),
       data=st.data(), legacy=st.booleans())
def test_pipeline_d_hat_equals_signals_d_hat(scales, data, legacy):
    counts = data.draw(st.lists(st.integers(1, 2**40), min_size=len(scales), max_size=len(scales)))
    profile = "legacy-0.1" if legacy else "v1"
    doc = make_pcs(scales=scales, counts=counts, version="0.1" if legacy else "1")
    _, dh, _, _ = Verifier(registry()).check_signals(doc, profile)
    assert dh == round9(d_hat(scales, counts, profile))  # the published (round9) value, SPEC 2


MUTATIONS = [
    ("epoch", 2**53), ("epoch", 1.0), ("scales", [2, 4, 8, 16, 16]), ("N_j", {"2": 1}), ("coh_star", True),
    ("v_star", [1e308, "x"]), ("attempt", -1), ("sent_at", "x" * 65), ("seed", 3), ("meta", {"a": "b"}),
    ("shard_id", "é"), ("pcs_id", "A" * 64), ("sig", "x" * 257), ("regime", "Sticky"), ("r", 10**400 // 10**399),
    ("version", 1), ("extra", None), ("ft", {}), ("vrf_proof", "ab"), ("sig_alg", "hmac"),
]


@settings(max_examples=200, deadline=None)
@given(muts=st.lists(st.sampled_from(MUTATIONS), max_size=3), drop=st.sampled_from([None, "sig", "N_j", "v_star"]))
def test_fast_validator_never_accepts_what_the_full_one_rejects(muts, drop):
    doc = sign(make_pcs(seed=7), HMAC_A)
    for k, v in muts:
        doc[k] = v
    if drop:
        doc.pop(drop, None)
    if _fast_valid(doc):
        assert _validate_full(doc) == []
    assert (validate_pcs(doc) == []) == (_validate_full(doc) == [])


@settings(max_examples=100, deadline=None)
@given(digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), status=st.sampled_from([200, 202]),
       first_seen=st.floats(0, 4e9), region=st.text(max_size=10), pv=st.text(max_size=10))
def test_stored_outcome_header_equals_json(digest, status, first_seen, region, pv):
    want = json.dumps([digest, status, first_seen, region, pv], separators=(",", ":"), ensure_ascii=True)
    assert dedup_base._head(digest, status, first_seen, region, pv) == want.encode() + b"\n"


@settings(max_examples=200, deadline=None)
@given(coh=st.floats(-0.5, 1.5), r=st.floats(-0.5, 1.5), counts=st.lists(st.integers(1, 10**6), min_size=3, max_size=3),
       w=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 4)),
       t=st.tuples(st.floats(0, 1), st.floats(0, 3), st.floats(0, 4)))
def test_pipeline_budget_and_regime_equal_signals(coh, r, counts, w, t):
    from flk.impl.core.signals import BudgetParams, RegimeThresholds, budget, regime

    bp = BudgetParams(*w)
    rt = RegimeThresholds(*t)
    v = Verifier(registry(), policy=Policy(budget=bp, regime=rt))
    doc = make_pcs(scales=(2, 4, 8), counts=counts, coh=coh, r=r)
    _, dh, b, reg = v.check_signals(doc, "v1")
    cc, rc = min(1.0, max(0.0, round9(coh))), min(1.0, max(0.0, round9(r)))
    assert b == budget(dh, cc, rc, bp)
    assert reg == regime(dh, cc, rt)


class _Float(float):
    """A float the core's fast paths do not take (``type(x) is float`` is false): the checked path."""


class _Int(int):
    """An int the core's fast paths do not take: the checked path."""


@settings(max_examples=300, deadline=None, derandomize=True)
@given(d=st.floats(-1e6, 1e6), coh=st.floats(0, 1), r=st.floats(0, 1),
       w=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 4)),
       t=st.tuples(st.floats(0, 1), st.floats(0, 3), st.floats(0, 4)))
def test_signals_fast_paths_equal_the_checked_paths(d, coh, r, w, t):
    """budget / regime / d_hat / pcs_id give the same result on their fast paths (plain
    floats and ints) as on the fully checked paths (the same values, as subclasses)."""
    from flk.impl.core.pcs import pcs_id, pcs_id_of_checked
    from flk.impl.core.signals import (
        BudgetParams,
        RegimeThresholds,
        budget,
        regime,
        theil_sen_slope,
    )

    bp, rt = BudgetParams(*w), RegimeThresholds(*t)
    assert budget(d, coh, r, bp) == budget(_Float(d), _Float(coh), _Float(r), bp)
    assert regime(d, coh, rt) == regime(_Float(d), _Float(coh), rt)
    scales, counts = [2, 4, 8, 16], [3, 5, 5, 17]
    assert d_hat(scales, counts) == d_hat([_Int(s) for s in scales], [_Int(c) for c in counts])
    assert d_hat(scales, counts) == theil_sen_slope(scales, counts)
    root = "ab" * 32
    assert pcs_id(root, 7, "s-1") == pcs_id_of_checked(root, 7, "s-1")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(scales=st.lists(st.integers(2, 2**31), min_size=2, max_size=8, unique=True).map(sorted), data=st.data(),
       legacy=st.booleans())
def test_theil_sen_slope_equals_d_hat_on_checked_inputs(scales, data, legacy):
    from flk.impl.core.signals import theil_sen_slope

    counts = data.draw(st.lists(st.integers(1, 2**60), min_size=len(scales), max_size=len(scales)))
    profile = "legacy-0.1" if legacy else "v1"
    assert theil_sen_slope(scales, counts, profile) == d_hat(tuple(_Int(s) for s in scales), counts, profile)
