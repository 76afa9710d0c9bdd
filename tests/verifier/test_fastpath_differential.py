"""The compiled verify core answers exactly what the pure reference answers.

``flk.impl.verifier._fastverify`` takes the accept path of the hot loop -- strict
JSON parsing (``wire.parse_strict``), wire validation with INV-PCSID
(``wire.validate_pcs``), steps 4 and 6 and the fused accept path -- and
``flk.impl.core._fastcore`` the Theil-Sen slope and ``round9``; both hand
everything else to the readable pure-Python code, which stays the oracle.
Each test is marked with the registry entries (``flk.impl.core.accel``) it
compares and fails if it never calls their compiled functions; the pure path
is switched with ``accel.pure()``. These
differential tests run the same inputs through both paths and compare:

* parsing: arbitrary bytes, arbitrary JSON values in every spelling
  (whitespace, escapes, duplicate keys, NaN, huge and tiny numbers, deep
  nesting, invalid UTF-8) -> the same value (type, bits and key order) or the
  same error message;
* validation: a realistic PCS with any field set to any JSON value, missing or
  unknown -> the same error list;
* signals: arbitrary scales/counts/floats -> the same bits or the same error;
* the whole pipeline: arbitrary bodies, headers and tenants through
  ``Verifier.handle`` -> the same status, headers, body bytes and emitted events.

They also check that the compiled path is really taken for realistic and
minimal PCS (the tests would otherwise be vacuous). Every test is derandomized
so CI runs are repeatable.
"""

from __future__ import annotations

import contextlib
import json
import struct
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flk.impl.agent import factory
from flk.impl.core import accel, canonical, signals
from flk.impl.core.errors import InvalidInput
from flk.impl.dedup import StoreUnavailable, open_store
from flk.impl.dedup.base import BatchMixin
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier import core, pipeline, wire
from flk.impl.verifier.pipeline import Policy, Request, Verifier, run_sync

from .pcsgen import ED_SEED_C, HMAC_A, HMAC_B, make_pcs, registry

COMPILED = None if accel.entry("parse_json").compiled is None else accel.ACTIVE
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="compiled core not active (FLK_PURE=1 or not built)")
DIFF = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


pure_core = accel.pure  # every consumer on the pure reference inside the block (the registry's switch)


def typed(value):
    """A value with its exact type, float bits and key order (so 1 != 1.0 != True, 0.0 != -0.0)."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


def outcome(fn, *args):
    try:
        return ("ok", typed(fn(*args)))
    except InvalidInput as exc:
        return ("invalid", exc.field, str(exc))
    except Exception as exc:  # noqa: BLE001 - the type and message must match too
        return ("raised", type(exc).__name__, str(exc))


def both(fn, *args):
    fast = outcome(fn, *args)
    with pure_core():
        slow = outcome(fn, *args)
    return fast, slow


# ------------------------------------------------------------ inputs

NUMBERS = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.integers(-(10**400), 10**400),
    st.floats(), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 2.0**53, 2.0**53 + 2, 1e22, 1e23, 0.1, 0.857365188]),
)
TEXT = st.one_of(st.text(max_size=6), st.text(st.characters(exclude_categories=()), max_size=4),
                 st.sampled_from(["pcs_id", "sig", "\\", '"', "\x00", "é", "😀", "\ud800", "1", "N_j"]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)
NUMBER_TOKENS = st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,4})?", fullmatch=True)
JUNK_TOKENS = st.from_regex(r"[-+0-9.eE]{1,12}", fullmatch=True)


@st.composite
def spelled(draw, values=JSON_VALUES):
    """``value`` written as JSON bytes in one of many legal or illegal spellings."""
    value = draw(values)
    indent = draw(st.sampled_from([None, None, 0, 2]))
    seps = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :\t")]))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=indent, separators=seps)
    pad = draw(st.sampled_from(["", " ", "\n\t\r ", "\u00a0", "\ufeff"]))
    text = pad + text + draw(st.sampled_from(["", " ", "\n", " x", ",", "\x00"]))
    return text.encode("utf-8", "surrogatepass")


def realistic_pcs(i: int = 0, seed: int = 2**63 + 11) -> dict:
    """A PCS as ``flk agent build`` and the submit client send it: seed, sig_alg, nine-digit
    floats, attempt and sent_at (and ``ft``/``meta`` in some)."""
    doc = make_pcs(seed=i + 1, epoch=i, coh=0.731234567, r=0.318421053, v_star=[0.123456789, -0.992345678])
    doc["seed"] = seed  # the coh-star seed (make_pcs's ``seed`` names the merkle root)
    doc["sig_alg"] = "hmac"
    doc = factory.sign(doc, HMAC_A)
    doc["attempt"] = 1 + i % 3
    doc["sent_at"] = "2027-01-15T08:00:00.125Z"
    if i % 2:
        doc["ft"] = {"attempt": 1, "path": ["a", 1.5]}
    if i % 3 == 2:
        doc["meta"] = {"source": "sensor-7"}
    return doc


def compact(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def mutated_pcs(draw):
    """A realistic signed PCS with some fields replaced by any JSON value, dropped or added."""
    doc = realistic_pcs(draw(st.integers(0, 5)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*wire.REQUIRED, *wire.OPTIONAL, "extra", "pcs_id "]))
        action = draw(st.integers(0, 3))
        if action == 0:
            doc.pop(name, None)
        else:
            doc[name] = draw(JSON_VALUES if action == 1 else st.sampled_from(NEAR_VALUES.get(name, [None])))
    return doc


NEAR_VALUES = {  # values one step from valid, per field
    "epoch": [0, 2**53 - 1, 2**53, -1, 1.0, True],
    "seed": [0, 2**64 - 1, 2**64, -1, 1.0, "1"],
    "attempt": [0, -1, 2**70, 1.5, False],
    "sent_at": ["x" * 64, "x" * 65, 0, -0.0, -1, 1e308, True],
    "sig_alg": ["hmac", "ed25519", "HMAC", None],
    "scales": [[2, 4], [2, 2], [4, 2], [1, 2], [2, 2**31], [2, 2**31 + 1], [2.0, 4.0], list(range(2, 66))],
    "N_j": [{"2": 1, "4": 1}, {"2": 0, "4": 1}, {"02": 1, "4": 1}, {"2": 2**70, "4": 1}, {"2": 1.0, "4": 1}],
    "v_star": [[1, -1], [1.0000001], [0], [], [0.5] * 9, [True], [2**70]],
    "coh_star": [0, 1, 2**63, 2**1100, 1e308, -0.0, True, "0.5"],
    "shard_id": ["a" * 128, "a" * 129, "", "a|b", "é", "a\n"],
    "pcs_id": ["0" * 64, "A" * 64, "0" * 63],
    "sig": ["A" * 43 + "=", "A" * 42 + "B=", "A" * 86 + "==", "A" * 85 + "B==", ""],
    "version": ["1", "0.1", 1, "2"],
    "ft": [{}, [], None],
    "meta": [{}, {"a": 1}, {"a": "b"}, "x"],
    "vrf_proof": ["", 1],
}


# ------------------------------------------------------------ the compiled path is taken

@pytest.mark.differential("parse_json", "pcs_check", "theil_sen")
@needs_compiled
@pytest.mark.parametrize("doc", [realistic_pcs(0), realistic_pcs(1), realistic_pcs(2),
                                 factory.sign(make_pcs(), HMAC_A)], ids=["realistic", "ft", "meta", "minimal"])
def test_the_compiled_path_takes_realistic_and_minimal_pcs(doc):
    for body in (compact(doc), json.dumps(doc).encode(), json.dumps(doc, indent=2).encode()):
        parsed = COMPILED.parse_json(body)
        assert parsed is not None and typed(parsed[0]) == typed(json.loads(body))
        assert COMPILED.pcs_check(parsed[0]) == 1
    assert COMPILED.theil_sen(doc["scales"], [doc["N_j"][str(s)] for s in doc["scales"]], False) is not None


# ------------------------------------------------------------ parsing

@pytest.mark.differential("parse_json")
@needs_compiled
@DIFF
@given(body=st.one_of(spelled(), st.binary(max_size=40), NUMBER_TOKENS.map(str.encode),
                      JUNK_TOKENS.map(str.encode), st.builds(compact, mutated_pcs())))
@example(b'{"a":1,"a":1}')
@example(b'{"a":{"b":1,"b":2}}')
@example(b"[NaN]")
@example(b"-Infinity")
@example(b"1e400")
@example(b"-1e-400")
@example(b"[" * 70 + b"]" * 70)
@example(b'"\xed\xa0\x80"')  # a UTF-8-encoded surrogate
@example(b'"\xc0\xaf"')  # overlong
@example(b"0" * 400)
@example(b"1" * 4400)
@example(b"9007199254740993")
@example(b"9007199254740993.0")
@example(b"123456789012345678901234567890e-20")
@example(b"01")
@example(b"1.")
@example(b".5")
@example(b"1e")
@example(b"-")
@example(b" {} ")
@example(b'{"a":1,}')
@example(b"[1,]")
@example(b"\xef\xbb\xbf{}")
@example(b"{" + b",".join(b'"%d":%d' % (i, i) for i in range(40)) + b"}")  # more pairs than the C parser buffers
@example(b"{" + b",".join(b'"%d":1' % i for i in range(40)) + b',"7":2}')  # duplicate after the buffer
@example(b"{" + b",".join(b'"%d":1' % i for i in range(20)) + b',"7":2}')  # duplicate inside the buffer
def test_parse_strict_is_the_same_on_both_paths(body):
    fast, slow = both(wire.parse_strict, body)
    assert fast == slow


@pytest.mark.differential("parse_json")
@needs_compiled
@DIFF
@given(token=NUMBER_TOKENS)
def test_number_tokens_parse_to_the_same_bits(token):
    fast, slow = both(wire.parse_strict, token.encode())
    assert fast == slow
    if fast[0] == "ok" and "." not in token and "e" not in token.lower():
        assert fast[1] == typed(int(token))
    elif fast[0] == "ok":
        assert fast[1] == typed(float(token))


@pytest.mark.differential("parse_json")
@needs_compiled
def test_parse_strict_takes_only_exact_bytes_on_the_compiled_path():
    for body in (bytearray(b"{}"), memoryview(b"[1]")):
        assert COMPILED.parse_json(body) is None
        assert outcome(wire.parse_strict, body) == both(wire.parse_strict, body)[1]


# ------------------------------------------------------------ validation

@pytest.mark.differential("pcs_check")
@needs_compiled
@DIFF
@given(doc=st.one_of(mutated_pcs(), JSON_VALUES))
def test_validate_pcs_is_the_same_on_both_paths(doc):
    fast, slow = both(wire.validate_pcs, doc)
    assert fast == slow


@pytest.mark.differential("pcs_check")
@needs_compiled
@DIFF
@given(doc=mutated_pcs())
def test_the_compiled_validator_never_accepts_what_the_reference_rejects(doc):
    verdict = COMPILED.pcs_check(doc)
    with pure_core():
        errors = wire.validate_pcs(doc)
    if verdict == 1:
        assert errors == []
    elif verdict == 2:
        assert errors == [("pcs_id", wire.PCS_ID_MISMATCH)]
    else:
        assert verdict == 0


def _single_mutations():
    """Every field of a realistic PCS set to each value one step from valid, or dropped."""
    out = []
    for name in [*wire.REQUIRED, *wire.OPTIONAL]:
        out.append((name, "<dropped>"))
        out += [(name, value) for value in NEAR_VALUES.get(name, [None, 0, "", [], {}])]
    return out


@pytest.mark.differential("pcs_check")
@needs_compiled
@pytest.mark.parametrize("base", [0, 1, 2])
def test_validate_pcs_is_the_same_for_every_single_near_valid_field(base):
    """Boundaries found by enumeration, not by chance: each field at each near value, alone
    (a mutation that is invalid alongside another invalid field would hide behind it)."""
    for name, value in _single_mutations():
        doc = realistic_pcs(base)
        if value == "<dropped>":
            doc.pop(name, None)
        else:
            doc[name] = value
        for candidate in (doc, factory.sign(doc, HMAC_A) if name not in canonical.SIGNED_FIELDS else doc):
            fast, slow = both(wire.validate_pcs, candidate)
            assert fast == slow, (name, value)


# ------------------------------------------------------------ signals

@pytest.mark.differential("theil_sen")
@needs_compiled
@DIFF
@given(scales=st.lists(st.integers(-3, 2**31 + 2), min_size=0, max_size=18),
       counts=st.lists(st.one_of(st.integers(-2, 2**60), st.sampled_from([2**53, 2**53 + 1, 0, True])), max_size=18),
       legacy=st.booleans())
@example(scales=[2, 4, 8, 16, 32], counts=[3, 5, 9, 17, 31], legacy=False)
@example(scales=[2, 4, 4], counts=[1, 2, 3], legacy=False)
@example(scales=[32, 16, 8, 4, 2], counts=[31, 17, 9, 5, 3], legacy=True)
def test_theil_sen_slope_is_the_same_on_both_paths(scales, counts, legacy):
    if len(counts) > len(scales):
        counts = counts[: len(scales)]
    profile = "legacy-0.1" if legacy else "v1"
    fast, slow = both(signals.theil_sen_slope, scales, counts, profile)
    assert fast == slow


@pytest.mark.differential("theil_sen")
@needs_compiled
@DIFF
@given(scales=st.lists(st.integers(2, 2**31), min_size=2, max_size=16, unique=True).map(sorted), data=st.data())
def test_theil_sen_slope_agrees_on_realistic_box_counts(scales, data):
    counts = sorted(data.draw(st.lists(st.integers(1, 2**53), min_size=len(scales), max_size=len(scales))))
    for profile in ("v1", "legacy-0.1"):
        fast, slow = both(signals.theil_sen_slope, scales, counts, profile)
        assert fast == slow and fast[0] == "ok"


@pytest.mark.differential("round9")
@needs_compiled
@DIFF
@given(x=st.one_of(NUMBERS, st.floats(-(2.0**54), 2.0**54), st.integers(-3, 3).map(lambda j: j / 2e9 + 0.5),
                   st.sampled_from([None, "1", True, 2.0**53 - 0.5, -(2.0**53) + 1, 0.9999999995, -4.9e-10])))
def test_round9_is_the_same_on_both_paths(x):
    fast, slow = both(canonical.round9, x)
    assert fast == slow


@st.composite
def signal_docs(draw):
    """A PCS as step 3 leaves it, with signals anywhere (also out of range, ints, ties at thresholds)."""
    n = draw(st.integers(2, 18))
    scales = sorted(draw(st.lists(st.integers(2, 2**31), min_size=n, max_size=n, unique=True)))
    counts = draw(st.lists(st.one_of(st.integers(1, 64), st.integers(1, 2**53 + 2)), min_size=n, max_size=n))
    if draw(st.booleans()):
        counts = sorted(counts)
    claim = st.one_of(st.floats(-2, 4), st.integers(-1, 3), st.sampled_from([0.7, 1.5, 2.6, 1.05, 0.0, 1.0, 2.2]),
                      st.floats(allow_nan=False, allow_infinity=False), st.floats(2.0**52, 2.0**54))
    return {"scales": scales, "N_j": {str(s): c for s, c in zip(scales, counts, strict=True)},
            "coh_star": draw(claim), "r": draw(claim), "D_hat": draw(claim), "budget": draw(claim),
            "regime": draw(st.sampled_from(["sticky", "mixed", "non_sticky"]))}


POLICIES = st.one_of(
    st.just(Policy()),
    st.builds(Policy, tol_d=st.floats(0, 1), tol_coh=st.floats(0, 0.5), tol_budget=st.floats(0, 0.5)),
    st.builds(Policy, tol_d=st.integers(0, 1)),  # int parameters: the pure code
)


@pytest.mark.differential("signal_check")
@needs_compiled
@DIFF
@given(doc=signal_docs(), policy=POLICIES, legacy=st.booleans())
def test_check_signals_is_the_same_on_both_paths(doc, policy, legacy):
    verifier = Verifier(registry(), policy=policy)
    profile = "legacy-0.1" if legacy else "v1"
    fast, slow = both(verifier.check_signals, doc, profile)
    assert fast == slow
    assert fast == outcome(verifier.pure_check_signals, doc, profile)


@pytest.mark.differential("signal_check")
@needs_compiled
@DIFF
@given(doc=signal_docs(), legacy=st.booleans())
def test_check_signals_is_the_same_at_every_threshold_and_tolerance_tie(doc, legacy):
    """Policies whose tolerances and regime thresholds equal this PCS's own differences and
    signals exactly, so every ``>`` / ``>=`` of step 6 is decided by a tie."""
    profile = "legacy-0.1" if legacy else "v1"
    claims = [doc[name] for name in ("coh_star", "r", "D_hat", "budget")]
    if not all(type(x) is float and abs(x) < 2.0**52 for x in claims):
        return
    first = Verifier(registry()).pure_check_signals(doc, profile)
    coh = min(1.0, max(0.0, canonical.round9(doc["coh_star"])))
    tol_d = abs(first.d_hat - canonical.round9(doc["D_hat"]))
    for policy in (
        Policy(tol_d=tol_d, tol_budget=abs(first.budget - canonical.round9(doc["budget"])),
               tol_coh=max(0.0, canonical.round9(doc["coh_star"]) - 1.0)),
        Policy(regime=signals.RegimeThresholds(sticky_coh=coh, sticky_d_max=first.d_hat, non_sticky_d_min=9.0)),
        Policy(regime=signals.RegimeThresholds(sticky_coh=2.0, sticky_d_max=0.0, non_sticky_d_min=first.d_hat)),
        Policy(budget=signals.BudgetParams(d0=first.d_hat), tol_d=tol_d),
    ):
        verifier = Verifier(registry(), policy=policy)
        fast, slow = both(verifier.check_signals, doc, profile)
        assert fast == slow == outcome(verifier.pure_check_signals, doc, profile)


# ------------------------------------------------------------ the whole pipeline

def _run_all(requests, now=1_700_000_000.0):
    """Responses and emitted events of ``requests`` (body, tenant) run one after another."""
    events: list = []
    verifier = Verifier(registry(), region="eu")
    store, wal = open_store("memory"), MemoryWal()
    out = []
    for i, (body, tenant) in enumerate(requests):
        resp = run_sync(verifier.handle(Request(body, tenant), now + i), wal, store, events.append)
        out.append((resp.status, resp.headers, resp.body))
    return out, [json.dumps(e, sort_keys=True, default=repr) for e in events]


def _both_pipelines(requests):
    fast = _run_all(requests)
    with pure_core():
        slow = _run_all(requests)
    return fast, slow


TENANTS = st.sampled_from(["ta", "ta", "tb", "tc", None, "nobody"])


@st.composite
def request_bodies(draw):
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        doc = draw(mutated_pcs()) if kind else realistic_pcs(draw(st.integers(0, 5)))
        if draw(st.booleans()):  # re-signed after the mutation: reaches the later steps
            with contextlib.suppress(Exception):
                doc = factory.sign(doc, draw(st.sampled_from([HMAC_A, HMAC_B])))
        return compact(doc) if draw(st.booleans()) else json.dumps(doc).encode()
    if kind == 3:
        doc = factory.sign(make_pcs(seed=draw(st.integers(0, 3))), ED_SEED_C, "ed25519")
        return compact(doc)
    if kind == 4:
        return draw(spelled())
    return draw(st.binary(max_size=60))


@pytest.mark.differential("parse_json", "pcs_check", "hmac_auth_v1", "signal_check")
@needs_compiled
@DIFF
@given(requests=st.lists(st.tuples(request_bodies(), TENANTS), min_size=1, max_size=4))
def test_the_pipeline_answers_the_same_on_both_paths(requests):
    fast, slow = _both_pipelines(requests)
    assert fast == slow


@pytest.mark.differential("hmac_auth_v1", "signal_check")
@needs_compiled
def test_the_pipeline_answers_the_same_for_accepted_escalated_replayed_and_conflicting_pcs():
    accepted = realistic_pcs(0)
    escalated = factory.sign({**make_pcs(seed=9), "D_hat": 2.5}, HMAC_A)
    conflict = factory.sign({**accepted, "coh_star": 0.5}, HMAC_A)
    requests = [(compact(accepted), "ta"), (compact(accepted), "ta"), (compact(escalated), "ta"),
                (compact(conflict), "ta"), (compact(accepted), "tb")]
    fast, slow = _both_pipelines(requests)
    assert fast == slow
    assert [status for status, _, _ in fast[0]] == [200, 200, 202, 409, 401]


# ------------------------------------------------------------ the batch driver without generators

class _FlakyStore(BatchMixin):
    """A memory store whose batch calls fail on command (a store outage mid-batch):
    ``fail_first`` -- the batch's first call (the lookup, or the write where the core skips
    the lookup: no hooks, ``VerifyBatch.needs_lookup``); ``fail_put`` -- the write.
    ``begin()`` starts a batch."""

    def __init__(self) -> None:
        self.inner = open_store("memory")
        self.fail_first = self.fail_put = False
        self.calls = 0

    def begin(self, fail_first: bool, fail_put: bool) -> None:
        self.fail_first, self.fail_put, self.calls = fail_first, fail_put, 0

    def _call(self) -> None:
        self.calls += 1
        if self.fail_first and self.calls == 1:
            raise StoreUnavailable("down")

    def get(self, tenant, pcs_id, now):
        return self.inner.get(tenant, pcs_id, now)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.inner.put_if_absent(tenant, pcs_id, outcome, now, ttl_s)

    def get_many(self, keys, now):
        self._call()
        return self.inner.get_many(keys, now)

    def put_many_if_absent(self, items, now, ttl_s=None):
        self._call()
        if self.fail_put:
            raise StoreUnavailable("down")
        return self.inner.put_many_if_absent(items, now, ttl_s)

    def state(self):
        entries, cursor = [], None
        while True:
            page, cursor = self.inner.scan(cursor, 100, -1e300)
            entries += [(t, p, o.to_bytes()) for t, p, o in page]
            if cursor is None:
                return entries


def _flag_hook(doc, tenant):
    """A hook whose reasons depend on the PCS: some reject (reject_status), some only escalate."""
    tail = doc["pcs_id"][-1]
    return {"0": ["pii_detected"], "1": ["vrf_invalid"], "2": ["custom_flag"], "3": ["custom_flag", "pii_detected"]}.get(
        tail, [])


BATCH_TENANTS = st.sampled_from(["ta", "ta", "ta", "tb", "tc", "tr", None, "", "nobody", "x" * 300, "\ud800"])
NOWS = st.sampled_from([1_700_000_000.0, 1_700_000_000.5, 1_700_000_001.25, 0.0, -0.0, 1_700_000_000, 5e9])


@st.composite
def batches(draw):
    """Batches of requests drawn partly from a shared pool (duplicates within a batch, replays and
    conflicts across batches), with WAL failures and store outages on some batches."""
    pool = [compact(realistic_pcs(i)) for i in range(3)]
    conflicting = factory.sign({**realistic_pcs(0), "coh_star": 0.5, "sig_alg": "hmac"}, HMAC_A)
    pool += [compact(conflicting), json.dumps(realistic_pcs(1)).encode()]
    body = st.one_of(st.sampled_from(pool), request_bodies())
    out = []
    for _ in range(draw(st.integers(1, 4))):
        requests = draw(st.lists(st.tuples(body, BATCH_TENANTS), min_size=0, max_size=6))
        fault = draw(st.sampled_from([None, None, None, "wal", "first", "put"]))
        out.append((requests, draw(NOWS), fault))
    return out


def _drive(batch_list, fast, wal_kind, hooks, limits, tmp):
    """Every batch through run_requests (fast) or run_batch (the generator reference)."""
    from flk.impl.storage.wal import SegmentedLog

    verifier = Verifier(registry(tr={"alg": "hmac", "keys": [{"secret": HMAC_A.decode()}], "rate_per_s": 1.0,
                                     "burst": 2}), region="eu", hooks=hooks, limits=limits)
    store = _FlakyStore()
    wal = MemoryWal() if wal_kind == "memory" else SegmentedLog(tmp)
    events, labels, out = [], [], []
    try:
        for requests, now, fault in batch_list:
            if not fast and not hooks and fault == "put":
                # without hooks run_requests makes one store call, the write (step 5 skipped): a
                # failing write fails the whole batch, as a failing lookup does on the reference
                # (whose write would come only after its hits were answered)
                fault = "first"
            store.begin(fault == "first", fault == "put")
            if wal_kind == "memory":
                wal.fail = fault == "wal"
            reqs = [Request(b, t) for b, t in requests]

            def latency(label, _seconds):
                labels.append(label)
            if fast:
                got = core.run_requests(verifier, reqs, now, wal, store, events.append, latency)
            else:
                got = pipeline.run_batch([verifier.handle(r, now) for r in reqs], wal, store, events.append, latency)
            out.append([(r.status, r.headers, r.body) for r in got])
        records = list(wal.records) if wal_kind == "memory" else [p for _, p in wal.records(0)]
    finally:
        if wal_kind != "memory":
            wal.close()
    events = [json.dumps(e, sort_keys=True, default=repr) for e in events]
    return out, events, labels, records, store.state()


def _unordered(driven):
    """``_drive``'s result with the events and latency labels as multisets: without hooks
    ``run_requests`` skips step 5 (``VerifyBatch.needs_lookup``), so a held key is answered
    by the put (step 7, in request order) where the reference answers it at its lookup
    (before the writes): the same events and labels, in another order."""
    out, events, labels, records, state = driven
    return out, sorted(events), sorted(labels), records, state


@pytest.mark.differential("accept_v1")
@DIFF
@given(batch_list=batches(), wal_kind=st.sampled_from(["memory", "memory", "segmented"]),
       hooked=st.booleans(), max_body=st.sampled_from([64 * 1024, 700]))
def test_run_requests_answers_exactly_what_run_batch_answers(batch_list, wal_kind, hooked, max_body):
    """Same responses (status, headers, body bytes), events (in the same order with hooks;
    without them as a multiset, see :func:`_unordered`), latency labels, WAL records (byte
    for byte on a SegmentedLog) and dedup state."""
    hooks = (_flag_hook,) if hooked else ()
    limits = pipeline.Limits(max_body_bytes=max_body)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        fast = _drive(batch_list, True, wal_kind, hooks, limits, a)
        slow = _drive(batch_list, False, wal_kind, hooks, limits, b)
    if hooked:
        assert fast == slow
    else:
        assert _unordered(fast) == _unordered(slow)


@pytest.mark.differential("accept_v1")
@needs_compiled
@DIFF
@given(batch_list=batches(), wal_kind=st.sampled_from(["memory", "memory", "segmented"]),
       hooked=st.booleans(), max_body=st.sampled_from([64 * 1024, 700]))
def test_run_requests_is_the_same_on_both_paths(batch_list, wal_kind, hooked, max_body):
    """The batch path with every compiled function (accept_v1 first) and on the pure
    reference alone: the same responses, events, latency labels, WAL records and dedup state."""
    hooks = (_flag_hook,) if hooked else ()
    limits = pipeline.Limits(max_body_bytes=max_body)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        fast = _drive(batch_list, True, wal_kind, hooks, limits, a)
        with pure_core():
            slow = _drive(batch_list, True, wal_kind, hooks, limits, b)
    assert fast == slow


@pytest.mark.differential("accept_v1")
def test_run_requests_covers_every_outcome():
    """Accepted, escalated, in-batch duplicate, replay, conflict, 400, 401, 413, 429, 503 (WAL and store)."""
    accepted, escalated = realistic_pcs(0), factory.sign({**make_pcs(seed=9), "D_hat": 2.5}, HMAC_A)
    conflict = factory.sign({**accepted, "coh_star": 0.5}, HMAC_A)
    first = [(compact(accepted), "ta"), (compact(accepted), "ta"), (compact(escalated), "ta"),
             (compact(conflict), "ta"), (compact(accepted), "tb"), (b"{", "ta"), (b"x" * 800, "ta")]
    first += [(compact(realistic_pcs(1)), "tr")] * 3
    batch_list = [(first, 1_700_000_000.0, None), ([(compact(accepted), "ta")], 1_700_000_001.0, None),
                  ([(compact(realistic_pcs(2)), "ta")], 1_700_000_002.0, "wal"),
                  ([(compact(realistic_pcs(3)), "ta")], 1_700_000_003.0, "first"),
                  ([(compact(realistic_pcs(4)), "ta")], 1_700_000_004.0, "put")]
    limits = pipeline.Limits(max_body_bytes=700)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        fast = _drive(batch_list, True, "memory", (), limits, a)
        assert _unordered(fast) == _unordered(_drive(batch_list, False, "memory", (), limits, b))
    statuses = [status for batch in fast[0] for status, _, _ in batch]
    assert statuses == [200, 200, 202, 409, 401, 400, 413, 200, 200, 429, 200, 503, 503, 503]
