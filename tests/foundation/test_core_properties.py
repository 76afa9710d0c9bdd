"""Hypothesis properties of the canonical core and its invariants.

INV-CANON, INV-ROUND, INV-PCSID, INV-BUDGET-BOUNDS and INV-REGIME-PARTITION
are checked here by name; the fast path of canonical_bytes is checked against
the careful path byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import ROUND_HALF_EVEN, Context, Decimal

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from flk.impl.core import canonical, merkle, pcs, signals, signing
from flk.impl.core.errors import InvalidInput

SETTINGS = settings(max_examples=150, deadline=None)

finite = st.floats(allow_nan=False, allow_infinity=False)
moderate = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
any_float = st.floats()  # NaN, infinities, -0.0, subnormals
text = st.text(st.characters(codec="utf-8"), max_size=20)
shard_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
epochs = st.integers(0, 2**53 - 1)


def subsets(floats=moderate, strings=text):
    return st.fixed_dictionaries(
        {
            "pcs_id": strings,
            "merkle_root": strings,
            "epoch": epochs,
            "shard_id": strings,
            "D_hat": floats,
            "coh_star": floats,
            "r": floats,
            "budget": floats,
        }
    )


def exact_fmt9(x: float) -> str:
    d = Decimal(x).quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN, context=Context(prec=400))
    s = f"{d:f}"
    return "0.000000000" if s == "-0.000000000" else s


# ------------------------------------------------------------ INV-ROUND

@SETTINGS
@given(finite)
def test_inv_round_fmt9_is_correctly_rounded_half_even(x):
    assert canonical.fmt9(x) == exact_fmt9(x)


@SETTINGS
@given(finite)
def test_inv_round_fmt9_idempotent_through_parse(x):
    t = canonical.fmt9(x)
    assert canonical.fmt9(float(t)) == t
    assert canonical.round9(canonical.round9(x)) == canonical.round9(x)
    assert "e" not in t and "E" not in t and len(t.split(".")[1]) == 9


@SETTINGS
@given(finite, finite)
def test_inv_round_fmt9_monotonic(x, y):
    lo, hi = min(x, y), max(x, y)
    assert canonical.round9(lo) <= canonical.round9(hi)


@SETTINGS
@given(st.integers(-(10**12), 10**12), st.sampled_from([1, 3, 5, 7, 1023]))
def test_inv_round_exact_ties_go_to_even(k, j):
    x = k + j / 1024  # exact in binary64
    d = Decimal(x)
    assert d.as_tuple().exponent == -10 and d.as_tuple().digits[-1] == 5  # an exact tie at 9 dp
    want = d.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN)
    assert want.as_tuple().digits[-1] % 2 == 0
    assert canonical.fmt9(x) == f"{want:f}"


# ------------------------------------------------------------ INV-CANON

@SETTINGS
@given(subsets())
def test_inv_canon_bytes_parse_back_to_the_rounded_values(s):
    try:
        raw = canonical.canonical_bytes(s)
    except InvalidInput as exc:  # only lone surrogates are rejected among these inputs
        assert exc.field in ("pcs_id", "merkle_root", "shard_id")
        assert any(0xD800 <= ord(c) <= 0xDFFF for k in ("pcs_id", "merkle_root", "shard_id") for c in s[k])
        return
    back = json.loads(raw.decode("utf-8"))
    assert list(back) == sorted(canonical.SIGNED_FIELDS)
    for k in canonical.FLOAT_FIELDS:
        assert back[k] == float(canonical.fmt9(s[k]))
    for k in ("pcs_id", "merkle_root", "shard_id", "epoch"):
        assert back[k] == s[k]
    assert raw.startswith(b'{"D_hat":') and raw.endswith(b"}")


TRICKY = st.sampled_from(['"', "\\", "\x7f", "\x00", "\x1f", "\ud800", "\udfff", "é", "😀", ":-0.000000000", "a" * 64])
fast_strings = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(exclude_categories=()), max_size=8),  # includes lone surrogates
    st.lists(st.one_of(TRICKY, st.text(max_size=3)), max_size=4).map("".join),
)
fast_floats = st.one_of(any_float, st.sampled_from([-0.0, -1e-10, -5e-10, 5e-10, 1 / 1024, 1e21]))
fast_epochs = st.one_of(epochs, st.sampled_from([-1, 2**53, 2**64, True, 1.0, "1"]))


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {"pcs_id": fast_strings, "merkle_root": fast_strings, "epoch": fast_epochs, "shard_id": fast_strings,
         "D_hat": fast_floats, "coh_star": fast_floats, "r": fast_floats, "budget": fast_floats}
    ),
    st.sampled_from(["v1", "legacy-0.1"]),
)
def test_inv_canon_fast_path_and_careful_path_agree_byte_for_byte(s, profile):
    def run(fn):
        try:
            return ("ok", fn(s, profile))
        except InvalidInput as exc:
            return ("err", exc.field)

    assert run(canonical.canonical_bytes) == run(canonical.canonical_bytes_careful)


ascii_tricky = st.lists(
    st.one_of(TRICKY, st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=4)), max_size=4
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"pcs_id": ascii_tricky, "merkle_root": ascii_tricky, "epoch": epochs, "shard_id": ascii_tricky,
         "D_hat": fast_floats.filter(math.isfinite), "coh_star": moderate, "r": moderate, "budget": moderate}
    )
)
def test_inv_canon_fast_path_agrees_on_valid_subsets_with_tricky_strings(s):
    """Focused on the inputs the fast path itself accepts or must hand over (escapes, -0)."""
    try:
        want = canonical.canonical_bytes_careful(s)
    except InvalidInput:
        with pytest.raises(InvalidInput):
            canonical.canonical_bytes(s)
        return
    assert canonical.canonical_bytes(s) == want


@SETTINGS
@given(subsets(), st.data())
def test_inv_canon_equal_after_rounding_iff_equal_bytes(s, data):
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for k in ("pcs_id", "merkle_root", "shard_id") for c in s[k]))
    t = dict(s)
    k = data.draw(st.sampled_from(canonical.FLOAT_FIELDS))
    t[k] = data.draw(st.one_of(moderate, st.just(s[k] + 1e-12), st.just(s[k] + 4e-10)))
    same = canonical.fmt9(s[k]) == canonical.fmt9(t[k])
    assert (canonical.canonical_bytes(s) == canonical.canonical_bytes(t)) == same


@SETTINGS
@given(subsets(), st.permutations(list(canonical.SIGNED_FIELDS)))
def test_inv_canon_key_order_and_extra_fields_do_not_matter(s, order):
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for k in ("pcs_id", "merkle_root", "shard_id") for c in s[k]))
    shuffled = {k: s[k] for k in order}
    shuffled["sig"] = "x"
    shuffled["attempt"] = 3
    assert canonical.canonical_bytes(shuffled) == canonical.canonical_bytes(s)


# ------------------------------------------------------------ signatures

def _valid_subset():
    return st.fixed_dictionaries(
        {"merkle_root": hex64, "epoch": epochs, "shard_id": shard_ids,
         "D_hat": st.floats(0, 4), "coh_star": st.floats(0, 1), "r": st.floats(0, 1), "budget": st.floats(0, 1)}
    ).map(lambda d: {**d, "pcs_id": pcs.pcs_id(d["merkle_root"], d["epoch"], d["shard_id"])})


def _mutate(s, field, data):
    t = dict(s)
    if field in canonical.FLOAT_FIELDS:
        t[field] = data.draw(st.one_of(st.floats(-10, 10), st.just(s[field] + 1e-9), st.just(s[field] + 1e-11)))
    elif field == "epoch":
        t[field] = data.draw(epochs)
    elif field == "shard_id":
        t[field] = data.draw(shard_ids)
    else:
        t[field] = data.draw(hex64)
    return t


@settings(max_examples=100, deadline=None)
@given(_valid_subset(), st.sampled_from(canonical.SIGNED_FIELDS), st.data(), st.binary(min_size=1, max_size=80))
def test_hmac_verifies_iff_signed_subset_unchanged(s, field, data, key):
    sig = signing.sign_hmac(s, key)
    assert signing.verify_hmac(s, sig, [key])
    assert signing.verify_hmac(s, sig, [b"other", key])  # rotation overlap
    t = _mutate(s, field, data)
    unchanged = canonical.canonical_bytes(t) == canonical.canonical_bytes(s)
    assert signing.verify_hmac(t, sig, [key]) == unchanged
    if field in canonical.FLOAT_FIELDS:
        assert unchanged == (canonical.fmt9(t[field]) == canonical.fmt9(s[field]))
    else:
        assert unchanged == (t[field] == s[field])


@settings(max_examples=60, deadline=None)
@given(_valid_subset(), st.sampled_from(canonical.SIGNED_FIELDS), st.data(), st.binary(min_size=32, max_size=32))
def test_ed25519_verifies_iff_signed_subset_unchanged(s, field, data, seed):
    sig = signing.sign_ed25519(s, seed)
    pub = signing.public_key_bytes(seed)
    assert signing.verify_ed25519(s, sig, [pub])
    t = _mutate(s, field, data)
    unchanged = canonical.canonical_bytes(t) == canonical.canonical_bytes(s)
    assert signing.verify_ed25519(t, sig, [pub]) == unchanged


@SETTINGS
@given(st.binary(max_size=64))
def test_strict_base64_round_trips_and_rejects_lenient_forms(raw):
    text = signing.b64encode(raw)
    assert signing.b64decode_strict(text) == raw
    for bad in (text + "\n", " " + text, text + "=" if text else "=", text.replace("+", "-").replace("/", "_")):
        if bad != text:
            with pytest.raises(InvalidInput):
                signing.b64decode_strict(bad)


# ------------------------------------------------------------ INV-PCSID

@SETTINGS
@given(hex64, epochs, shard_ids, hex64, epochs, shard_ids)
def test_inv_pcsid_is_sha256_of_an_unambiguous_preimage(r1, e1, s1, r2, e2, s2):
    assert pcs.pcs_id(r1, e1, s1) == hashlib.sha256(f"{r1}|{e1}|{s1}".encode()).hexdigest()
    # no '|' in shard_id and a fixed-length root: the preimage determines the triple
    if f"{r1}|{e1}|{s1}" == f"{r2}|{e2}|{s2}":
        assert (r1, e1, s1) == (r2, e2, s2)
    else:
        assert pcs.pcs_id(r1, e1, s1) != pcs.pcs_id(r2, e2, s2)


@SETTINGS
@given(hex64, epochs, st.tuples(st.text(max_size=5), st.text(max_size=5)).map("|".join))
def test_inv_pcsid_rejects_pipe_in_shard_id(root, epoch, shard):
    with pytest.raises(InvalidInput) as exc:
        pcs.pcs_id(root, epoch, shard)
    assert exc.value.field == "shard_id"


# ------------------------------------------------------------ Merkle

def _bottom_up(chunks):
    if not chunks:
        return hashlib.sha256(b"").hexdigest()
    level = [hashlib.sha256(b"\x00" + c).digest() for c in chunks]
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=40))
def test_merkle_v1_matches_bottom_up_rfc6962(chunks):
    assert merkle.merkle_root(chunks) == _bottom_up(chunks)


@SETTINGS
@given(st.binary(max_size=20000))
def test_merkle_stream_chunks_are_4096_bytes(raw):
    chunks = merkle.chunk_stream(raw)
    assert b"".join(chunks) == raw
    assert all(len(c) == merkle.CHUNK_SIZE for c in chunks[:-1])
    assert merkle.stream_root(raw) == merkle.merkle_root(chunks)


# ------------------------------------------------------------ D-hat

@st.composite
def scales_counts(draw):
    k = draw(st.integers(2, 12))
    scales = sorted(draw(st.sets(st.integers(2, 10**6), min_size=k, max_size=k)))
    counts = draw(st.lists(st.integers(1, 10**9), min_size=k, max_size=k))
    return scales, counts


@settings(max_examples=200, deadline=None)
@given(scales_counts())
def test_d_hat_equals_scipy_theilslopes(sc):
    scales, counts = sc
    want = stats.theilslopes(np.log2(counts), np.log2(scales))[0]
    assert abs(signals.d_hat(scales, counts) - want) <= 1e-9


@SETTINGS
@given(scales_counts())
def test_d_hat_legacy_is_the_upper_median(sc):
    scales, counts = sc
    slopes = signals.pairwise_slopes(scales, counts)
    assert signals.d_hat(scales, counts, "legacy-0.1") == slopes[len(slopes) // 2]
    if len(slopes) % 2:
        assert signals.d_hat(scales, counts) == signals.d_hat(scales, counts, "legacy-0.1")


# ------------------------------------------------------------ coherence, r

def test_splitmix64_reference_outputs():
    g = signals.SplitMix64(0)
    assert [g.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 2**64 - 1), st.data())
def test_coherence_is_deterministic_bounded_and_directions_are_unit(n, d, seed, data):
    pts = data.draw(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=d, max_size=d), min_size=n, max_size=n))
    c1, v1 = signals.coherence_detail(pts, seed)
    c2, v2 = signals.coherence_detail(pts, seed)
    assert (c1, v1) == (c2, v2)
    assert 1.0 / signals.COH_BINS - 1e-12 <= c1 <= 1.0  # pigeonhole: some bin holds >= n/bins
    assert abs(math.fsum(x * x for x in v1) - 1.0) < 1e-12


@SETTINGS
@given(st.binary(max_size=3000))
def test_compressibility_is_zlib6_ratio_clamped(raw):
    import zlib

    r = signals.compressibility(raw)
    assert 0.0 <= r <= 1.0
    assert r == (1.0 if not raw else min(1.0, len(zlib.compress(raw, 6)) / len(raw)))


# ------------------------------------------------------------ INV-BUDGET-BOUNDS, INV-REGIME-PARTITION

unit = st.floats(0, 1)
params = st.builds(
    signals.BudgetParams,
    base=st.floats(-1, 1), alpha=st.floats(0, 2), beta=st.floats(0, 2), gamma=st.floats(0, 2), d0=st.floats(0, 4),
)


@SETTINGS
@given(st.floats(-10, 10), unit, unit, unit, unit, params)
def test_inv_budget_bounds_range_and_monotonicity(d, c1, c2, r1, r2, p):
    b = signals.budget(d, c1, r1, p)
    assert 0.0 <= b <= 1.0
    lo_c, hi_c = sorted((c1, c2))
    assert signals.budget(d, lo_c, r1, p) <= signals.budget(d, hi_c, r1, p)  # non-decreasing in coh_star
    lo_r, hi_r = sorted((r1, r2))
    assert signals.budget(d, c1, lo_r, p) >= signals.budget(d, c1, hi_r, p)  # non-increasing in r


@SETTINGS
@given(st.floats(-10, 10), unit)
def test_inv_regime_partition_exactly_one_regime(d, c):
    got = signals.regime(d, c)
    conditions = {
        "sticky": c >= 0.70 and d <= 1.5,
        "non_sticky": not (c >= 0.70 and d <= 1.5) and d >= 2.6,
        "mixed": not (c >= 0.70 and d <= 1.5) and d < 2.6,
    }
    assert sum(conditions.values()) == 1
    assert conditions[got]


# ------------------------------------------------------------ legacy-0.1

def _legacy_oracle(s):
    from decimal import ROUND_HALF_UP

    def f(x):
        q = Decimal(repr(float(x))).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP, context=Context(prec=400))
        return float(q)

    sub = {k: (f(s[k]) if k in canonical.FLOAT_FIELDS else s[k]) for k in canonical.SIGNED_FIELDS}
    return json.dumps(sub, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@SETTINGS
@given(subsets(floats=finite, strings=st.text(max_size=12)))
def test_legacy_bytes_are_what_the_seed_agent_json_dumps_wrote(s):
    assert canonical.canonical_bytes(s, "legacy-0.1") == _legacy_oracle(s)
