"""spec/pcs.schema.json: PCS built by the core validate; mutated ones do not."""

from __future__ import annotations

import copy
import functools
import json
import pathlib

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core import canonical, merkle, pcs, signals, signing
from flk.impl.lab.vectors import LEGACY_KEY, LEGACY_RECORDS

SCHEMA = json.loads((pathlib.Path(__file__).resolve().parents[2] / "spec" / "pcs.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def build(points, raw: bytes, shard_id: str, epoch: int, seed: int, alg: str = "hmac", key=b"k" * 32) -> dict:
    """A v1 PCS from the canonical core alone (SPEC.md sections 2-7)."""
    scales = list(signals.DEFAULT_SCALES)
    n_j = signals.box_counts(points, scales)
    d = canonical.round9(signals.d_hat(scales, n_j))
    coh, v = signals.coherence_detail(points, seed)
    coh = canonical.round9(coh)
    r = canonical.round9(signals.compressibility(raw))
    root = merkle.stream_root(raw)
    out = {
        "pcs_id": pcs.pcs_id(root, epoch, shard_id),
        "schema": "fractal-lba-kakeya",
        "version": "1",
        "shard_id": shard_id,
        "epoch": epoch,
        "scales": scales,
        "N_j": {str(s): n for s, n in zip(scales, n_j, strict=True)},
        "coh_star": coh,
        "v_star": [canonical.round9(x) for x in v],
        "D_hat": d,
        "r": r,
        "regime": signals.regime(d, coh),
        "budget": canonical.round9(signals.budget(d, coh, r)),
        "merkle_root": root,
        "seed": seed,
        "sig_alg": alg,
    }
    out["sig"] = signing.sign_hmac(out, key) if alg == "hmac" else signing.sign_ed25519(out, key)
    return out


def errors(doc) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(doc)]


def test_schema_is_valid_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@settings(max_examples=25, deadline=None)
@given(
    st.integers(3, 200),
    st.integers(1, 3),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=1, max_size=9000),
    st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
    st.integers(0, 2**53 - 1),
    st.sampled_from(["hmac", "ed25519"]),
)
def test_pcs_built_by_the_core_validate(n, dim, seed, raw, shard_id, epoch, alg):
    rng = np.random.default_rng(seed % 2**32)
    points = rng.random((n, dim)).tolist()
    key = b"k" * 32 if alg == "hmac" else bytes(range(32))
    doc = build(points, raw, shard_id, epoch, seed, alg, key)
    wire = json.loads(json.dumps(doc))  # what travels
    assert errors(wire) == []
    if alg == "hmac":
        assert signing.verify_hmac(wire, wire["sig"], [key])
    else:
        assert signing.verify_ed25519(wire, wire["sig"], [signing.public_key_bytes(key)])


def _base() -> dict:
    rng = np.random.default_rng(5)
    return build(rng.random((100, 2)).tolist(), bytes(range(256)) * 20, "shard-1", 3, 42)


MUTATIONS = [
    ("unknown field", lambda d: d.update(extra=1)),
    ("schema name", lambda d: d.update(schema="fractal")),
    ("version 2", lambda d: d.update(version="2")),
    ("version as number", lambda d: d.update(version=1)),
    ("pcs_id uppercase", lambda d: d.update(pcs_id=d["pcs_id"].upper())),
    ("pcs_id prefixed", lambda d: d.update(pcs_id="sha256_" + d["pcs_id"][:57])),
    ("merkle_root short", lambda d: d.update(merkle_root=d["merkle_root"][:63])),
    ("shard_id with pipe", lambda d: d.update(shard_id="a|b")),
    ("shard_id empty", lambda d: d.update(shard_id="")),
    ("shard_id 129 chars", lambda d: d.update(shard_id="a" * 129)),
    ("epoch negative", lambda d: d.update(epoch=-1)),
    ("epoch 2^53", lambda d: d.update(epoch=2**53)),
    ("epoch float", lambda d: d.update(epoch=1.5)),
    ("epoch string", lambda d: d.update(epoch="3")),
    ("scales with 1", lambda d: d.update(scales=[1, 2, 4])),
    ("scales single", lambda d: d.update(scales=[2])),
    ("scales repeated", lambda d: d.update(scales=[2, 2, 4])),
    ("N_j zero count", lambda d: d["N_j"].update({"2": 0})),
    ("N_j key not decimal", lambda d: d["N_j"].update({"x": 3})),
    ("N_j as a list", lambda d: d.update(N_j=[1, 2, 3])),
    ("coh_star above 1", lambda d: d.update(coh_star=1.5)),
    ("coh_star string", lambda d: d.update(coh_star="0.5")),
    ("r negative", lambda d: d.update(r=-0.1)),
    ("budget above 1", lambda d: d.update(budget=1.01)),
    ("D_hat string", lambda d: d.update(D_hat="1.2")),
    ("regime unknown", lambda d: d.update(regime="sticky-ish")),
    ("v_star empty", lambda d: d.update(v_star=[])),
    ("v_star 9 dims", lambda d: d.update(v_star=[0.1] * 9)),
    ("sig not base64", lambda d: d.update(sig="!" * 44)),
    ("sig without padding", lambda d: d.update(sig=d["sig"].rstrip("="))),
    ("sig with newline", lambda d: d.update(sig=d["sig"][:-1] + "\n")),
    ("sig wrong length for hmac", lambda d: d.update(sig="A" * 86 + "==")),
    ("sig non-canonical trailing bits", lambda d: d.update(sig=d["sig"][:42] + "B=")),
    ("sig_alg unknown", lambda d: d.update(sig_alg="rsa")),
    ("seed negative", lambda d: d.update(seed=-1)),
    ("seed above 2^64-1", lambda d: d.update(seed=2**64)),
    ("meta non-string value", lambda d: d.update(meta={"a": 1})),
    ("attempt negative", lambda d: d.update(attempt=-1)),
] + [(f"missing {k}", functools.partial(lambda key, d: d.pop(key), k)) for k in SCHEMA["required"]]


@pytest.mark.parametrize("name,mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutated_pcs_do_not_validate(name, mutate):
    doc = _base()
    assert errors(doc) == []
    bad = copy.deepcopy(doc)
    mutate(bad)
    assert errors(bad), name


def test_unsigned_optional_fields_validate():
    doc = _base()
    doc.update(attempt=2, sent_at=1700000000.25, ft={"retries": 1}, meta={"source": "test"}, vrf_proof="AAAA")
    assert errors(doc) == []


def test_legacy_records_validate_as_version_0_1():
    for rec, sig in LEGACY_RECORDS:
        doc = {
            **rec,
            "schema": "fractal-lba-kakeya",
            "version": "0.1",
            "scales": [2, 4, 8, 16, 32],
            "N_j": {"2": 3, "4": 5, "8": 9, "16": 12, "32": 14},
            "v_star": [0.6, 0.8],
            "regime": signals.regime(rec["D_hat"], rec["coh_star"]),
            "sig": sig,
            "legacy_extra": "tolerated",
        }
        assert errors(doc) == []
        assert signing.verify_hmac(doc, sig, [LEGACY_KEY], "legacy-0.1")
        assert errors({**doc, "sig_alg": "ed25519"})  # legacy is HMAC only
