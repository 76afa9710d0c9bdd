"""The verify pipeline is a total function: any bytes, any JSON value in any field, any header.

``Verifier.handle`` (driven by run_sync over the memory WAL and store) must
answer every input -- 2xx, or a 4xx / 503 application/problem+json whose type
is a catalog slug with the catalog's status and title -- and never raise. A
raise is not only a 500: the body is already in the inbox WAL, so a replay
after a restart would hit it again. Fuzzed: every field position of a valid
PCS (top level and nested) with arbitrary JSON values (objects, arrays, huge
integers, deep nesting, unicode incl. lone surrogates, floats, null),
re-signed whenever the mutated document can still be signed so that odd
values also reach steps 4-8; arbitrary bytes; arbitrary X-Tenant-Id values;
live and replay mode; with the governance hooks (PII gate, anomaly gate)
plugged in. Derandomized: the same examples every run.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.dedup import open_store
from flk.impl.governance import anomaly, pii
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.pipeline import OPTIONAL, REQUIRED, Request, Verifier, run_sync
from flk.impl.verifier.problems import CATALOG, CONTENT_TYPE, slug_of

from .pcsgen import ED_SEED_C, HMAC_A, make_pcs, registry, sign

NOW = 1_700_000_000.0
ANSWERS = {200, 202, 400, 401, 409, 413, 431, 429, 503}
TOTAL = settings(derandomize=True, max_examples=400, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HUGE = [10**400, -(10**400), 2**64, 2**1024, -(2**1024), 2**53 + 1, 10**308 * 2]
scalars = (st.none() | st.booleans() | st.integers() | st.sampled_from(HUGE)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
           | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# plausible values too, so that mutated documents also pass step 3 and reach steps 4-8
field_values = st.one_of(json_values, st.floats(0, 1), st.floats(-1e308, 1e308), st.integers(0, 2**64),
                         st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
FIELDS = REQUIRED + OPTIONAL + ("unknown", "")


def _verifier() -> Verifier:
    tenants = registry()
    modes = {t: tenants.resolve(t).pii_mode for t in ("ta", "tb", "tc")}
    gate = anomaly.AnomalyGate(window=anomaly.EscalationWindow(size=10, min_events=4))
    return Verifier(tenants, hooks=[pii.make_pii_hook(modes, pii.PiiCounters()), gate.hook])


def _base(kind: int) -> tuple[dict, str]:
    if kind == 0:
        return sign(make_pcs(seed=3), HMAC_A), "ta"
    if kind == 1:
        return sign(make_pcs(seed=4), ED_SEED_C, "ed25519"), "tc"
    return sign(make_pcs(seed=5, version="0.1"), HMAC_A), "ta"


def _resign(doc: dict, kind: int) -> dict:
    """``doc`` signed afresh when its signed subset can still be signed, else as it is."""
    try:
        return sign(dict(doc), *((ED_SEED_C, "ed25519") if kind == 1 else (HMAC_A,)))
    except (InvalidInput, KeyError, TypeError, ValueError, OverflowError):
        return doc


def check_answer(response) -> None:
    assert response.status in ANSWERS, response.status
    doc = json.loads(response.body)
    if response.status >= 400:
        assert response.header("Content-Type") == CONTENT_TYPE
        slug = slug_of(doc["type"])
        assert slug is not None, doc["type"]
        assert (doc["status"], doc["title"]) == tuple(CATALOG[slug]) and doc["status"] == response.status
        assert isinstance(doc["detail"], str)
    else:
        assert set(doc) >= {"pcs_id", "accepted", "escalated", "reasons", "recomputed"}


def answer(verifier: Verifier, raw: bytes, tenant: str | None, replay: bool = False):
    response = run_sync(verifier.handle(Request(raw, tenant), NOW, replay=replay), MemoryWal(),
                        open_store("memory"))
    check_answer(response)
    if currently_in_test_context():  # --hypothesis-show-statistics: odd values reach steps 4-8 too
        event(f"status {response.status}")
    return response


def _dump(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=False).encode()


@TOTAL
@given(kind=st.integers(0, 2), mutations=st.lists(st.tuples(st.sampled_from(FIELDS), field_values), min_size=1,
                                                  max_size=3),
       drop=st.sampled_from((None,) + REQUIRED), resign=st.booleans(), replay=st.booleans())
def test_any_json_value_in_any_top_level_field_gets_an_answer(kind, mutations, drop, resign, replay):
    doc, tenant = _base(kind)
    for name, value in mutations:
        doc[name] = value
    if drop is not None:
        doc.pop(drop, None)
    if resign:
        doc = _resign(doc, kind)
    answer(_verifier(), _dump(doc), tenant, replay)


NESTED = ("scales", "N_j", "v_star", "meta", "ft")


@TOTAL
@given(kind=st.integers(0, 2), where=st.sampled_from(NESTED), position=st.integers(0, 5), key=st.text(max_size=6),
       value=json_values, resign=st.booleans())
def test_any_json_value_in_any_nested_position_gets_an_answer(kind, where, position, key, value, resign):
    doc, tenant = _base(kind)
    container = doc.get(where)
    if isinstance(container, list):
        container = list(container)
        container[min(position, len(container) - 1)] = value
    elif isinstance(container, dict):
        container = dict(container)
        target = key if position % 2 or not container else list(container)[position % len(container)]
        container[target] = value
    else:
        container = {key: value}
    doc[where] = container
    if resign:
        doc = _resign(doc, kind)
    answer(_verifier(), _dump(doc), tenant)


@TOTAL
@given(raw=st.binary(max_size=300), tenant=st.none() | st.sampled_from(["ta", "tb", "tc", ""]) | st.text(max_size=40),
       replay=st.booleans())
def test_any_bytes_and_any_tenant_header_get_an_answer(raw, tenant, replay):
    answer(_verifier(), raw, tenant, replay)


@TOTAL
@given(tenant=st.none() | st.text(max_size=300) | st.text(alphabet=st.characters(min_codepoint=0xD800,
                                                                                  max_codepoint=0xDFFF), max_size=4)
       | st.sampled_from(["ta", "tb", "tc", "", " ta", "TA", "x" * 257, "\x00"]), kind=st.integers(0, 2))
def test_a_valid_pcs_with_any_tenant_header_gets_an_answer(tenant, kind):
    doc, _ = _base(kind)
    answer(_verifier(), _dump(doc), tenant)


@pytest.mark.parametrize("field", REQUIRED + OPTIONAL)
@pytest.mark.parametrize("depth", [2, 500, 100_000])
def test_deep_nesting_in_any_field_gets_a_400(field, depth):
    doc, tenant = _base(0)
    raw = _dump(doc).replace(f'"{field}": '.encode(), f'"{field}": '.encode() + b"[" * depth + b"0" + b"]" * depth
                             + b', "_was": ', 1) if field in doc else _dump(doc)[:-1] + (
        f', "{field}": '.encode() + b"[" * depth + b"0" + b"]" * depth + b"}")
    response = answer(_verifier(), raw, tenant, replay=len(raw) > 60_000)  # replay: no size limit
    assert response.status == 400


# The two bodies that made a server unable to start again: a TypeError (an unhashable
# version) and an integer too large for binary64 reaching the canonical bytes.
POISON = [b'{"version":{}}', b"[]"]


@pytest.mark.parametrize("raw", POISON)
@pytest.mark.parametrize("replay", [False, True])
def test_poison_bodies_get_400(raw, replay):
    response = answer(_verifier(), raw, "ta", replay)
    assert response.status == 400


@pytest.mark.parametrize("field", ["coh_star", "D_hat", "r", "budget"])
@pytest.mark.parametrize("replay", [False, True])
def test_integer_too_large_for_binary64_gets_400_naming_the_field(field, replay):
    doc, tenant = _base(0)
    raw = _dump(doc).replace(f'"{field}": {json.dumps(doc[field])}'.encode(), f'"{field}": 1{"0" * 400}'.encode())
    assert b"0" * 400 in raw
    response = answer(_verifier(), raw, tenant, replay)
    assert response.status == 400
    problem = response.json()
    assert problem["type"].endswith(":invalid-pcs")
    assert problem["errors"] == [{"field": field,
                                  "message": "must be a finite number; this integer is too large for binary64"}]
