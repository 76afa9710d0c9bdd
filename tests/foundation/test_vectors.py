"""The frozen vectors: schema, coverage, freshness, and independent oracles.

The generator takes its expected values from the core, so these tests check
the files again against oracles that do not share the core's code: decimal
arithmetic for fmt9, Python's json for the canonical bytes, hmac/cryptography
for signatures, a bottom-up RFC 6962 tree, scipy's Theil-Sen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import pathlib
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal

import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from scipy import stats

from flk.impl.core.canonical import FLOAT_FIELDS, SIGNED_FIELDS
from flk.impl.lab import vectors

SPEC = pathlib.Path(__file__).resolve().parents[2] / "spec"
VDIR = SPEC / "vectors"
FILES = sorted(VDIR.glob("*.json"))


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _cases(op=None, profile=None):
    out = []
    for path in FILES:
        doc = _load(path)
        if op and doc["operation"] != op or profile and doc["profile"] != profile:
            continue
        for g in doc["testGroups"]:
            for t in g["tests"]:
                out.append((doc["profile"], t))
    return out


def test_every_file_validates_against_vectors_schema():
    schema = json.loads((SPEC / "vectors.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert len(FILES) >= 17
    for path in FILES:
        errors = list(validator.iter_errors(_load(path)))
        assert not errors, f"{path.name}: {errors[0].message}"


def test_schema_rejects_malformed_vector_files():
    validator = jsonschema.Draft202012Validator(json.loads((SPEC / "vectors.schema.json").read_text()))
    doc = _load(VDIR / "fmt9.v1.json")
    bad = json.loads(json.dumps(doc))
    bad["testGroups"][0]["tests"][0]["result"] = "acceptable"
    assert list(validator.iter_errors(bad))
    bad = json.loads(json.dumps(doc))
    bad["testGroups"][0]["tests"][0]["expected"] = {"text": "0.5"}
    assert list(validator.iter_errors(bad))
    bad = json.loads(json.dumps(doc))
    del bad["testGroups"][0]["tests"][0]["tcId"]
    assert list(validator.iter_errors(bad))


def test_at_least_300_cases_positive_and_negative_with_stable_ids_and_notes():
    total = 0
    for path in FILES:
        doc = _load(path)
        assert path.name == f"{doc['operation']}.{doc['profile']}.json"
        ids = [t["tcId"] for g in doc["testGroups"] for t in g["tests"]]
        assert ids == list(range(1, len(ids) + 1)), path.name
        assert doc["numberOfTests"] == len(ids)
        results = {t["result"] for g in doc["testGroups"] for t in g["tests"]}
        assert results == {"valid", "invalid"}, path.name
        used = {f for g in doc["testGroups"] for t in g["tests"] for f in t["flags"]}
        assert used == set(doc["notes"]), path.name
        total += len(ids)
    assert total >= 300
    ops = {(_load(p)["operation"], _load(p)["profile"]) for p in FILES}
    for need in [("canonical_bytes", "v1"), ("fmt9", "v1"), ("sign_hmac", "v1"), ("verify_hmac", "v1"),
                 ("sign_ed25519", "v1"), ("verify_ed25519", "v1"), ("pcs_id", "v1"), ("merkle_root", "v1"),
                 ("merkle_root", "legacy-0.1"), ("d_hat", "v1"), ("d_hat", "legacy-0.1"), ("budget", "v1"),
                 ("regime", "v1"), ("verify_hmac", "legacy-0.1")]:
        assert need in ops


def test_pitfall_flags_are_all_covered():
    flags = {f for _p, t in _cases() for f in t["flags"]}
    for f in ["key-order", "float-format", "round-tie", "negative-zero", "tiny-exponent", "unicode-escape",
              "control-char", "surrogate", "base64-strict", "prehash", "epoch-range", "pipe-in-shard-id",
              "x1e9-rounding", "shortest-repr", "half-up", "nan-inf", "key-rotation", "merkle-odd",
              "merkle-empty", "median-even"]:
        assert f in flags, f


def test_vectors_are_fresh():
    """What `flk vectors check` (run by make test) checks: regenerating changes nothing."""
    assert vectors.check(VDIR) == []


def test_vectors_check_detects_a_changed_missing_or_stray_file(tmp_path):
    assert vectors.write(tmp_path)  # every file written
    assert vectors.check(tmp_path) == []
    p = tmp_path / "fmt9.v1.json"
    p.write_text(p.read_text().replace('"0.000976562"', '"0.000976563"'))
    (tmp_path / "pcs_id.v1.json").unlink()
    (tmp_path / "extra.v1.json").write_text("{}")
    problems = "\n".join(vectors.check(tmp_path))
    assert "fmt9.v1.json: differs" in problems
    assert "pcs_id.v1.json: missing" in problems
    assert "extra.v1.json: not produced" in problems
    assert vectors.write(tmp_path) == ["fmt9.v1.json", "pcs_id.v1.json"]


def test_the_issue_examples_are_vectors():
    v1 = [t for _p, t in _cases("canonical_bytes", "v1") if "v1-example" in t["flags"]]
    want = (b'{"D_hat":1.234567890,"budget":0.350000000,"coh_star":0.750000000,"epoch":1,'
            b'"merkle_root":"abc123def456789012345678901234567890abcd","pcs_id":"sha256_abc123def456",'
            b'"r":0.500000000,"shard_id":"shard-001"}')
    assert v1 and all(base64.b64decode(t["expected"]["bytes_b64"]) == want for t in v1)
    legacy = [t for _p, t in _cases("verify_hmac", "legacy-0.1") if "legacy-record" in t["flags"] and t["comment"].endswith(" verifies")]
    assert {t["input"]["sig"] for t in legacy} == {"x5KLRpKb75Oy1oxLA+3V+bgY/HL/3ZYOk1rw3pCiSm4=",
                                                  "wahFdOY1XKgg9WTr5UTpryZTviM5zay5VMHcrzHH5hE="}
    assert all(t["expected"] == {"valid": True} for t in legacy)


# ------------------------------------------------------------------ oracles

def oracle_fmt9(x: float) -> str:
    d = Decimal(x).quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN, context=Context(prec=400))
    s = f"{d:f}"
    return "0.000000000" if s == "-0.000000000" else s


def oracle_legacy_float(x: float) -> str:
    q = Decimal(repr(float(x))).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP, context=Context(prec=400))
    return repr(float(q))


def oracle_bytes(subset: dict, profile: str) -> bytes:
    parts = []
    for k in sorted(SIGNED_FIELDS):
        v = subset[k]
        if k in FLOAT_FIELDS:
            text = oracle_fmt9(float(v)) if profile == "v1" else oracle_legacy_float(v)
        elif k == "epoch":
            text = str(v)
        else:
            text = json.dumps(v, ensure_ascii=(profile != "v1"))
        parts.append(json.dumps(k) + ":" + text)
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def rfc6962_bottom_up(chunks: list[bytes]) -> str:
    if not chunks:
        return hashlib.sha256(b"").hexdigest()
    level = [hashlib.sha256(b"\x00" + c).digest() for c in chunks]
    while len(level) > 1:  # an odd last node is promoted unchanged: same tree as RFC 6962's split
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def test_fmt9_vectors_match_decimal_oracle():
    n = 0
    for _p, t in _cases("fmt9"):
        if t["result"] == "valid":
            x = vectors.decode(t["input"])["x"]
            assert t["expected"]["text"] == oracle_fmt9(float(x)), t["comment"]
            n += 1
    assert n > 40


@pytest.mark.parametrize("profile", ["v1", "legacy-0.1"])
def test_canonical_vectors_match_json_oracle(profile):
    n = 0
    for _p, t in _cases("canonical_bytes", profile):
        if t["result"] == "valid":
            subset = vectors.decode(t["input"])["subset"]
            assert base64.b64decode(t["expected"]["bytes_b64"]) == oracle_bytes(subset, profile), t["comment"]
            n += 1
    assert n > 20


def test_signature_vectors_match_hmac_and_cryptography():
    for profile, t in _cases("sign_hmac"):
        if t["result"] == "valid":
            x = vectors.decode(t["input"])
            msg = oracle_bytes(x["subset"], profile)
            want = base64.b64encode(hmac.new(base64.b64decode(x["key_b64"]), msg, "sha256").digest()).decode()
            assert t["expected"]["sig"] == want, t["comment"]
    for _profile, t in _cases("sign_ed25519"):
        if t["result"] == "valid":
            x = vectors.decode(t["input"])
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(x["private_key_b64"]))
            digest = hashlib.sha256(oracle_bytes(x["subset"], "v1")).digest()
            key.public_key().verify(base64.b64decode(t["expected"]["sig"]), digest)
            assert t["expected"]["sig"] == base64.b64encode(key.sign(digest)).decode()
    for _profile, t in _cases("verify_ed25519"):
        if t["result"] == "valid":
            x = vectors.decode(t["input"])
            digest = hashlib.sha256(oracle_bytes(x["subset"], "v1")).digest()
            ok = any(_ed_ok(pk, x["sig"], digest) for pk in x["public_keys_b64"])
            assert ok


def _ed_ok(pk_b64, sig_b64, digest):
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(pk_b64)).verify(base64.b64decode(sig_b64), digest)
        return True
    except Exception:  # noqa: BLE001
        return False


def test_pcs_id_and_merkle_vectors_match_hashlib():
    for _p, t in _cases("pcs_id"):
        if t["result"] == "valid":
            i = t["input"]
            pre = f"{i['merkle_root']}|{i['epoch']}|{i['shard_id']}".encode()
            assert t["expected"]["pcs_id"] == hashlib.sha256(pre).hexdigest()
    for _p, t in _cases("merkle_root", "v1"):
        if t["result"] == "valid":
            chunks = [base64.b64decode(c) for c in t["input"]["chunks_b64"]]
            assert t["expected"]["root"] == rfc6962_bottom_up(chunks), t["comment"]


def test_d_hat_vectors_match_scipy_and_upper_median():
    for profile, t in _cases("d_hat"):
        if t["result"] != "valid":
            continue
        x = [math.log2(s) for s in t["input"]["scales"]]
        y = [math.log2(n) for n in t["input"]["n_j"]]
        got = float(t["expected"]["d_hat"])
        if profile == "v1":
            assert abs(got - stats.theilslopes(y, x)[0]) <= 1e-9 + 5e-10, t["comment"]
        else:
            slopes = sorted((y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x)))
            assert t["expected"]["d_hat"] == oracle_fmt9(slopes[len(slopes) // 2])


def test_budget_and_regime_vectors_match_formula():
    for _p, t in _cases("budget"):
        if t["result"] != "valid":
            continue
        i = t["input"]
        p = {"base": 0.10, "alpha": 0.30, "beta": 0.50, "gamma": 0.20, "d0": 2.2, **i.get("params", {})}
        v = p["base"] + p["alpha"] * (1 - i["r"]) + p["beta"] * max(0.0, i["D_hat"] - p["d0"]) + p["gamma"] * i["coh_star"]
        assert t["expected"]["budget"] == oracle_fmt9(min(1.0, max(0.0, v)))
    for _p, t in _cases("regime"):
        if t["result"] != "valid":
            continue
        d, c = t["input"]["D_hat"], t["input"]["coh_star"]
        want = "sticky" if c >= 0.70 and d <= 1.5 else "non_sticky" if d >= 2.6 else "mixed"
        assert t["expected"]["regime"] == want


def test_invalid_cases_name_a_field_and_valid_cases_none():
    for _p, t in _cases():
        if t["result"] == "invalid" and not t["expected"]:
            assert t["errorField"], t["comment"]
        else:
            assert "errorField" not in t
