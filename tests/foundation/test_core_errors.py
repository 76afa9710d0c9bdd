"""Every error path of the canonical core raises InvalidInput naming the field."""

from __future__ import annotations

import math

import pytest

from flk.impl.core import canonical, merkle, pcs, signals, signing
from flk.impl.core.errors import InvalidInput

GOOD = {
    "pcs_id": "p",
    "merkle_root": "m",
    "epoch": 1,
    "shard_id": "s",
    "D_hat": 1.0,
    "coh_star": 0.5,
    "r": 0.5,
    "budget": 0.5,
}
ROOT = "ab" * 32
SIG = signing.sign_hmac(GOOD, b"k")


def _with(**kw):
    d = dict(GOOD)
    for k, v in kw.items():
        if v is None and k.startswith("drop_"):
            d.pop(k[5:])
        else:
            d[k] = v
    return d


CASES = [
    # canonical
    ("unknown profile", lambda: canonical.canonical_bytes(GOOD, "v2"), "profile"),
    ("subset not a mapping", lambda: canonical.canonical_bytes([1, 2]), "subset"),
    ("missing budget", lambda: canonical.canonical_bytes(_with(drop_budget=None)), "budget"),
    ("D_hat a string", lambda: canonical.canonical_bytes(_with(D_hat="1")), "D_hat"),
    ("coh_star bool", lambda: canonical.canonical_bytes(_with(coh_star=True)), "coh_star"),
    ("r NaN", lambda: canonical.canonical_bytes(_with(r=math.nan)), "r"),
    ("budget -inf", lambda: canonical.canonical_bytes(_with(budget=-math.inf)), "budget"),
    ("D_hat huge int", lambda: canonical.canonical_bytes(_with(D_hat=10**400)), "D_hat"),
    ("epoch float", lambda: canonical.canonical_bytes(_with(epoch=1.0)), "epoch"),
    ("epoch bool", lambda: canonical.canonical_bytes(_with(epoch=True)), "epoch"),
    ("epoch negative", lambda: canonical.canonical_bytes(_with(epoch=-1)), "epoch"),
    ("epoch 2^53", lambda: canonical.canonical_bytes(_with(epoch=2**53)), "epoch"),
    ("shard_id int", lambda: canonical.canonical_bytes(_with(shard_id=3)), "shard_id"),
    ("pcs_id surrogate", lambda: canonical.canonical_bytes(_with(pcs_id="\udfff")), "pcs_id"),
    ("legacy merkle_root None", lambda: canonical.canonical_bytes(_with(merkle_root=None), "legacy-0.1"), "merkle_root"),
    ("legacy D_hat inf", lambda: canonical.canonical_bytes(_with(D_hat=math.inf), "legacy-0.1"), "D_hat"),
    ("fmt9 NaN", lambda: canonical.fmt9(math.nan), "value"),
    ("fmt9 named field", lambda: canonical.fmt9("x", "coh_star"), "coh_star"),
    ("escape non-string", lambda: canonical.escape_string(b"x", "shard_id"), "shard_id"),
    # signing
    ("b64 not a string", lambda: signing.b64decode_strict(b"AAAA"), "sig"),
    ("b64 whitespace", lambda: signing.b64decode_strict("AAAA\n", field="key_b64"), "key_b64"),
    ("b64 missing padding", lambda: signing.b64decode_strict("AA"), "sig"),
    ("b64 url-safe", lambda: signing.b64decode_strict("-_-_"), "sig"),
    ("b64 trailing bits", lambda: signing.b64decode_strict("AB=="), "sig"),
    ("b64 length", lambda: signing.b64decode_strict("AAAA", 32), "sig"),
    ("hmac empty key", lambda: signing.sign_hmac(GOOD, b""), "key"),
    ("hmac key int", lambda: signing.sign_hmac(GOOD, 5), "key"),
    ("hmac bad subset", lambda: signing.sign_hmac(_with(r=math.nan), b"k"), "r"),
    ("verify keys a single bytes key", lambda: signing.verify_hmac(GOOD, SIG, b"k"), "keys"),
    ("verify empty key in set", lambda: signing.verify_hmac(GOOD, SIG, [b"k", b""]), "key"),
    ("verify bad subset", lambda: signing.verify_hmac(_with(epoch=-5), SIG, [b"k"]), "epoch"),
    ("ed25519 private key length", lambda: signing.sign_ed25519(GOOD, b"x" * 31), "key"),
    ("ed25519 private key type", lambda: signing.sign_ed25519(GOOD, "seed"), "key"),
    ("ed25519 public key length", lambda: signing.verify_ed25519(GOOD, SIG, [b"x" * 33]), "key"),
    ("ed25519 keys not a list", lambda: signing.verify_ed25519(GOOD, SIG, "k"), "keys"),
    ("ed25519 legacy profile", lambda: signing.sign_ed25519(GOOD, b"x" * 32, "legacy-0.1"), "profile"),
    ("ed25519 unknown profile", lambda: signing.verify_ed25519(GOOD, SIG, [], "v0"), "profile"),
    ("hmac unknown profile", lambda: signing.sign_hmac(GOOD, b"k", "v0"), "profile"),
    # pcs
    ("pcs_id root uppercase", lambda: pcs.pcs_id(ROOT.upper(), 1, "s"), "merkle_root"),
    ("pcs_id root short", lambda: pcs.pcs_id(ROOT[:-1], 1, "s"), "merkle_root"),
    ("pcs_id epoch", lambda: pcs.pcs_id(ROOT, -1, "s"), "epoch"),
    ("pcs_id epoch type", lambda: pcs.pcs_id(ROOT, "1", "s"), "epoch"),
    ("pcs_id pipe", lambda: pcs.pcs_id(ROOT, 1, "a|b"), "shard_id"),
    ("pcs_id shard too long", lambda: pcs.pcs_id(ROOT, 1, "a" * 129), "shard_id"),
    ("pcs_id shard type", lambda: pcs.pcs_id(ROOT, 1, None), "shard_id"),
    # merkle
    ("merkle profile", lambda: merkle.merkle_root([], "v0"), "profile"),
    ("merkle chunks bytes", lambda: merkle.merkle_root(b"abc"), "chunks"),
    ("merkle chunks None", lambda: merkle.merkle_root(None), "chunks"),
    ("merkle chunk str", lambda: merkle.merkle_root([b"a", "b"]), "chunks[1]"),
    ("stream raw str", lambda: merkle.chunk_stream("abc"), "raw"),
    ("stream chunk_size 0", lambda: merkle.chunk_stream(b"abc", 0), "chunk_size"),
    ("stream chunk_size str", lambda: merkle.chunk_stream(b"abc", "4"), "chunk_size"),
    # signals: d_hat
    ("d_hat profile", lambda: signals.d_hat([2, 4], [1, 2], "v9"), "profile"),
    ("d_hat scales not a list", lambda: signals.d_hat("24", [1, 2]), "scales"),
    ("d_hat scale float", lambda: signals.d_hat([2, 4.0], [1, 2]), "scales[1]"),
    ("d_hat scale 1", lambda: signals.d_hat([1, 4], [1, 2]), "scales[0]"),
    ("d_hat count 0", lambda: signals.d_hat([2, 4], [1, 0]), "N_j[1]"),
    ("d_hat count bool", lambda: signals.d_hat([2, 4], [True, 2]), "N_j[0]"),
    ("d_hat one scale", lambda: signals.d_hat([2], [1]), "scales"),
    ("d_hat too many scales", lambda: signals.d_hat(list(range(2, 67)), [1] * 65), "scales"),
    ("d_hat length mismatch", lambda: signals.d_hat([2, 4], [1, 2, 3]), "N_j"),
    ("d_hat not increasing", lambda: signals.d_hat([2, 8, 4], [1, 2, 3]), "scales[2]"),
    # signals: points, coherence
    ("points ragged", lambda: signals.coherence([[0, 1], [1]], 1), "points"),
    ("points strings", lambda: signals.box_counts([["a"]]), "points"),
    ("points 3-d array", lambda: signals.normalise([[[0.0]]]), "points"),
    ("points too many dims", lambda: signals.coherence([[0.0] * 9], 1), "points"),
    ("points NaN", lambda: signals.coherence([[0.0], [math.nan]], 1), "points"),
    ("points range overflow", lambda: signals.normalise([[-1e308], [1e308]]), "points"),
    ("box_counts scale", lambda: signals.box_counts([[0.0]], [1]), "scales[0]"),
    ("seed negative", lambda: signals.coherence([[0.0]], -1), "seed"),
    ("seed too big", lambda: signals.SplitMix64(2**64), "seed"),
    ("seed bool", lambda: signals.coherence([[0.0]], True), "seed"),
    ("n_directions 0", lambda: signals.coherence([[0.0]], 1, n_directions=0), "n_directions"),
    ("bins float", lambda: signals.coherence([[0.0]], 1, bins=2.0), "bins"),
    ("compressibility str", lambda: signals.compressibility("abc"), "raw"),
    # signals: regime, budget
    ("regime D_hat NaN", lambda: signals.regime(math.nan, 0.5), "D_hat"),
    ("regime coh_star > 1", lambda: signals.regime(1.0, 1.5), "coh_star"),
    ("regime D_hat str", lambda: signals.regime("1", 0.5), "D_hat"),
    ("budget r < 0", lambda: signals.budget(1.0, 0.5, -0.1), "r"),
    ("budget coh inf", lambda: signals.budget(1.0, math.inf, 0.5), "coh_star"),
    ("budget D_hat huge int", lambda: signals.budget(10**400, 0.5, 0.5), "D_hat"),
    ("budget_params not a mapping", lambda: signals.budget_params([1]), "params"),
    ("budget_params unknown", lambda: signals.budget_params({"delta": 1}), "params.delta"),
    ("budget_params NaN", lambda: signals.budget_params({"beta": math.nan}), "params.beta"),
    ("budget_params negative weight", lambda: signals.budget_params({"alpha": -1}), "params.alpha"),
]


@pytest.mark.parametrize("name,call,field", CASES, ids=[c[0] for c in CASES])
def test_core_error_names_the_field(name, call, field):
    with pytest.raises(InvalidInput) as exc:
        call()
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ") and exc.value.message
    assert isinstance(exc.value, ValueError)


def test_malformed_signature_is_not_valid_rather_than_an_error():
    for bad in ["", "AAAA", SIG + "\n", SIG.rstrip("="), 5, None, "*" * 44]:
        assert signing.verify_hmac(GOOD, bad, [b"k"]) is False
        assert signing.verify_ed25519(GOOD, bad, [signing.public_key_bytes(b"\x01" * 32)]) is False
    assert signing.verify_hmac(GOOD, SIG, [b"k"]) is True
    assert signing.verify_hmac(GOOD, SIG, []) is False


def test_the_issue_examples_reproduce():
    ex = {"pcs_id": "sha256_abc123def456", "merkle_root": "abc123def456789012345678901234567890abcd", "epoch": 1,
          "shard_id": "shard-001", "D_hat": 1.23456789, "coh_star": 0.75, "r": 0.5, "budget": 0.35}
    assert canonical.canonical_bytes(ex) == (
        b'{"D_hat":1.234567890,"budget":0.350000000,"coh_star":0.750000000,"epoch":1,'
        b'"merkle_root":"abc123def456789012345678901234567890abcd","pcs_id":"sha256_abc123def456",'
        b'"r":0.500000000,"shard_id":"shard-001"}'
    )
    from flk.impl.lab.vectors import LEGACY_KEY, LEGACY_RECORDS

    for rec, sig in LEGACY_RECORDS:
        assert signing.verify_hmac(rec, sig, [LEGACY_KEY], "legacy-0.1")
        assert pcs.pcs_id(rec["merkle_root"], rec["epoch"], rec["shard_id"]) == rec["pcs_id"]
    # record 1's floats all have nine decimals, so its v1 bytes are the same; record 2's D_hat 1.0 is not
    assert signing.verify_hmac(LEGACY_RECORDS[0][0], LEGACY_RECORDS[0][1], [LEGACY_KEY], "v1")
    assert not signing.verify_hmac(LEGACY_RECORDS[1][0], LEGACY_RECORDS[1][1], [LEGACY_KEY], "v1")
    assert LEGACY_RECORDS[0][1] == "x5KLRpKb75Oy1oxLA+3V+bgY/HL/3ZYOk1rw3pCiSm4="
    assert LEGACY_RECORDS[1][1] == "wahFdOY1XKgg9WTr5UTpryZTviM5zay5VMHcrzHH5hE="
