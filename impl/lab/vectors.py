"""Frozen test vectors (``spec/vectors/*.json``), generated from the canonical core.

Why this module exists: SDKs in other languages are judged against these files
byte for byte, so each case names the pitfall it probes (``flags``) and the
expected answer. The files are Wycheproof-style (spec/ARCHITECTURE.md, "Test
vectors and conformance ops"): one file per (operation, profile), groups of
cases with stable ``tcId``, ``result`` valid/invalid and ``expected`` outputs.

How the expected values are obtained: every case's input is run through the
core through the conformance op table (:func:`evaluate`). Many cases
also carry a literal ``check`` written by hand (SPEC.md's v1 example, the two
legacy records, RFC 6962 roots, exact rounding ties ...); generation fails if
the core disagrees with one of them. Independent oracles (``decimal``,
``scipy``, a second Merkle implementation) check the files again in the tests.

Determinism: no clock, no global RNG; Ed25519 keys come from fixed seeds.
``tcId``s are assigned in definition order, so new cases go at the end of their
file; ``flk vectors check`` fails if regenerating would change a frozen file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import pathlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from flk.conformance.base64_spellings import lenient_spellings
from flk.conformance.ops import OPS
from flk.conformance.vectors import decode_input, encode_f64, json_number

from ..core import canonical, merkle, pcs, signing
from ..core.errors import InvalidInput

SCHEMA_NAME = "vectors.schema.json"

FLAG_NOTES: dict[str, str] = {
    "v1-example": "The worked example of SPEC.md section 3.6; must reproduce byte for byte.",
    "legacy-record": "A record emitted by the seed system's Python agent (HMAC key 'testsecret').",
    "key-order": "Input keys arrive in a non-canonical order; output keys are sorted by code point.",
    "extra-field": "The input carries fields outside the signed subset; they are ignored.",
    "missing-field": "A signed field is absent; the input must be rejected.",
    "type": "A field has the wrong JSON type; the input must be rejected.",
    "float-format": "Fixed-point text with exactly nine fractional digits, never exponent form.",
    "shortest-repr": "Shortest round-trip text (repr / JS toString / %g) differs from the 9-dp text.",
    "round-tie": "The exact binary64 value is a tie at the 10th decimal (x = j/1024, j odd); half-to-even applies.",
    "half-up": "Rounding half-up on the shortest decimal string differs from half-even on the exact binary value.",
    "x1e9-rounding": "round(x*1e9)/1e9 disagrees with the correct 9-dp rounding of x.",
    "negative-zero": "-0.0, or a negative value that rounds to zero, is written 0.000000000.",
    "tiny-exponent": "A value whose shortest form uses an exponent (1e-07 ...) is written in fixed point.",
    "large-value": "A large magnitude (>= 1e21 switches JS toString to exponent form); all integer digits are written.",
    "integer-valued": "A float field given as a JSON integer is still written with nine decimals.",
    "nan-inf": "NaN and infinities are rejected.",
    "unicode-escape": "Non-ASCII text: raw UTF-8 in v1; \\uXXXX escapes (surrogate pairs) in legacy-0.1.",
    "control-char": "U+0000..U+001F use \\b \\f \\n \\r \\t or lowercase \\u00xx; U+007F is raw in v1 (escaped in legacy-0.1).",
    "quote-backslash": "Only '\"' and '\\\\' (and control characters) are escaped; '/' is not.",
    "surrogate": "A lone surrogate cannot be encoded as UTF-8: rejected (v1).",
    "isolated": "Isolated group: the base record every common serializer writes right, or it with one dimension changed.",
    "html-escape": "'<', '>' and '&' are written raw (Go's encoding/json escapes them as \\u003c \\u003e \\u0026).",
    "line-separator": "U+2028 / U+2029 are written raw (JavaScript-safe serializers and Go escape them).",
    "truncation": "Digits after the ninth are rounded, never dropped.",
    "epoch-float": "epoch written as a float literal (1.0) is rejected: epoch is an integer literal.",
    "legacy-extension": "The seed agent itself could not produce this (it raised); the vector follows the profile's definition (SPEC.md section 10).",
    "epoch-range": "epoch is an integer in [0, 2^53-1].",
    "round-stability": "Values that agree after 9-dp rounding give the same bytes and signature.",
    "base64-strict": "Strict standard base64: padding required, no whitespace, no URL-safe alphabet, canonical trailing bits, exact length.",
    "prehash": "HMAC is over the canonical bytes, not their SHA-256; Ed25519 signs SHA-256(bytes), not the bytes.",
    "key-rotation": "Several keys are active; a signature by any one of them verifies.",
    "wrong-key": "The signature was made with a key that is not in the verifier's set.",
    "modified-field": "One signed field differs from what was signed; verification must fail.",
    "unsigned-field": "A field outside the signed subset changed; the signature still verifies.",
    "hmac-key-length": "HMAC keys shorter, equal to and longer than the SHA-256 block (64 bytes).",
    "profile-mismatch": "A signature made under the other profile does not verify under this one.",
    "malleability": "Ed25519 signature with S >= L (non-canonical) must be rejected.",
    "empty-keys": "No active key: nothing verifies.",
    "non-canonical-key": "A public key whose encoding RFC 8032 section 5.1.3 refuses (y >= p, or x = 0 with the sign "
                         "bit set) verifies nothing; a lenient decoder (y mod p) accepts the signature.",
    "pipe-in-shard-id": "shard_id must not contain '|' (the pcs_id preimage separator) or other characters outside [A-Za-z0-9._:-].",
    "shard-id-length": "shard_id is 1..128 characters.",
    "merkle-root-format": "merkle_root is exactly 64 lowercase hex characters.",
    "merkle-empty": "The empty tree's root is SHA-256 of the empty string.",
    "merkle-odd": "A tree whose size is not a power of two (RFC 6962 split / legacy self-pairing).",
    "merkle-rfc6962": "Root from the RFC 6962 / Certificate Transparency reference test data.",
    "merkle-empty-chunk": "A zero-length chunk is a valid leaf.",
    "merkle-chunk-size": "Chunks of CHUNK_SIZE (4096) bytes as cut from a raw stream.",
    "median-even": "An even number of pairwise slopes: v1 takes the mean of the two middle values, legacy the upper one.",
    "median-odd": "An odd number of pairwise slopes.",
    "scales": "Scales are strictly increasing integers >= 2 (2..64 of them); N_j integers >= 1, one per scale.",
    "budget-clamp": "The budget formula leaves [0, 1] and is clamped.",
    "budget-params": "Non-default budget parameters (policy).",
    "boundary": "A value exactly on a threshold.",
    "range": "A value outside its allowed range is rejected.",
    "coherence-zero-width": "All projections equal (hi == lo): every point is in one bin, coh_star = 1.",
    "coherence-seed": "The same points under different seeds sample different directions.",
    "coherence-params": "Non-default number of directions or bins.",
    "unknown-param": "An unknown parameter name is rejected.",
}


# ------------------------------------------------------- encoding and evaluation
# The f64 codec and the op table belong to the conformance kit (one owner each):
# a vector's expected output is by construction what the kit's reference
# adapter answers.
f64 = encode_f64
num = json_number
decode = decode_input


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def evaluate(op: str, profile: str, inp: Mapping[str, Any]) -> dict:
    """The output of ``op`` on ``inp`` (f64-encoded) under ``profile``; raises InvalidInput.

    The conformance op table (:data:`flk.conformance.ops.OPS`) computes it.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    return OPS[op](decode_input(dict(inp)), profile)


# ---------------------------------------------------------------------- builder

class VectorFile:
    """Collects the groups and cases of one (operation, profile) file."""

    def __init__(self, operation: str, profile: str, description: str) -> None:
        self.operation = operation
        self.profile = profile
        self.description = description
        self.groups: list[dict] = []
        self.next_id = 1

    @property
    def name(self) -> str:
        return f"{self.operation}.{self.profile}.json"

    def group(self, comment: str) -> None:
        self.groups.append({"comment": comment, "tests": []})

    def case(self, comment: str, flags: list[str], inp: dict, check: Any = None) -> dict:
        """Add a case; ``check`` is a hand-written expectation: an output dict,
        ``"invalid"`` (must be rejected) or None."""
        for f in flags:
            if f not in FLAG_NOTES:
                raise ValueError(f"flag {f!r} has no note")
        verify = self.operation.startswith("verify_")
        test: dict[str, Any] = {"tcId": self.next_id, "comment": comment, "flags": list(dict.fromkeys(flags)), "input": inp}
        try:
            out = evaluate(self.operation, self.profile, inp)
        except InvalidInput as exc:
            test["result"] = "invalid"
            test["expected"] = {}
            test["errorField"] = exc.field
        else:
            test["result"] = "invalid" if verify and out["valid"] is False else "valid"
            test["expected"] = out
        if check == "invalid":
            if test["result"] != "invalid" or test["expected"]:
                raise AssertionError(f"{self.name} #{self.next_id} {comment}: core accepted {test['expected']}")
        elif check is not None and test["expected"] != check:
            raise AssertionError(f"{self.name} #{self.next_id} {comment}: core gives {test['expected']}, expected {check}")
        self.next_id += 1
        self.groups[-1]["tests"].append(test)
        return test

    def document(self) -> dict:
        flags = sorted({f for g in self.groups for t in g["tests"] for f in t["flags"]})
        return {
            "schema": SCHEMA_NAME,
            "operation": self.operation,
            "profile": self.profile,
            "description": self.description,
            "numberOfTests": self.next_id - 1,
            "notes": {f: FLAG_NOTES[f] for f in flags},
            "testGroups": self.groups,
        }


# ------------------------------------------------------------------------- data

V1_EXAMPLE = {
    "pcs_id": "sha256_abc123def456",
    "merkle_root": "abc123def456789012345678901234567890abcd",
    "epoch": 1,
    "shard_id": "shard-001",
    "D_hat": 1.23456789,
    "coh_star": 0.75,
    "r": 0.5,
    "budget": 0.35,
}
V1_EXAMPLE_BYTES = (
    b'{"D_hat":1.234567890,"budget":0.350000000,"coh_star":0.750000000,"epoch":1,'
    b'"merkle_root":"abc123def456789012345678901234567890abcd","pcs_id":"sha256_abc123def456",'
    b'"r":0.500000000,"shard_id":"shard-001"}'
)
LEGACY_KEY = b"testsecret"
LEGACY_RECORDS = [
    (
        {
            "pcs_id": "c50bb25a7aff94164147b73c846f0e5e10890d75df204875ca70c448f52c6edf",
            "merkle_root": "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112",
            "epoch": 1,
            "shard_id": "test-shard-001",
            "D_hat": 0.528320834,
            "coh_star": 0.066666667,
            "r": 0.318421053,
            "budget": 0.317807017,
        },
        "x5KLRpKb75Oy1oxLA+3V+bgY/HL/3ZYOk1rw3pCiSm4=",
    ),
    (
        {
            "pcs_id": "ee69f7b2dd5ad8e1f3a4c407aca789ae0d74b47d1d34c09b28a2fc3b5148ed6e",
            "merkle_root": "96875c47a824f4cd6203f87da38c3b903550d1db574ce279ad65f787be37c359",
            "epoch": 1,
            "shard_id": "test-shard-001",
            "D_hat": 1.0,
            "coh_star": 0.2,
            "r": 0.303088803,
            "budget": 0.349073359,
        },
        "wahFdOY1XKgg9WTr5UTpryZTviM5zay5VMHcrzHH5hE=",
    ),
]

# A realistic v1 subset (pcs_id consistent with merkle_root, epoch, shard_id).
_ROOT = hashlib.sha256(b"flk-vectors merkle root").hexdigest()
BASE = {
    "pcs_id": pcs.pcs_id(_ROOT, 7, "shard-007"),
    "merkle_root": _ROOT,
    "epoch": 7,
    "shard_id": "shard-007",
    "D_hat": 1.412345678,
    "coh_star": 0.734,
    "r": 0.318421053,
    "budget": 0.402155142,
}

HMAC_KEYS = {
    "k32": hashlib.sha256(b"flk-vectors hmac key 1").digest(),
    "k32b": hashlib.sha256(b"flk-vectors hmac key 2").digest(),
    "k1": b"k",
    "k64": bytes(range(64)),
    "k65": bytes(range(65)),
    "k100": bytes(range(100)),
}
ED_SEEDS = [hashlib.sha256(b"flk-vectors ed25519 seed %d" % i).digest() for i in range(3)]

# exact 9-dp ties j/1024 (j odd) and their half-even results
TIES = [
    (1 / 1024, "0.000976562"),
    (3 / 1024, "0.002929688"),
    (5 / 1024, "0.004882812"),
    (7 / 1024, "0.006835938"),
    (1 + 1 / 1024, "1.000976562"),
    (2 + 3 / 1024, "2.002929688"),
    (1023 / 1024, "0.999023438"),
    (12345 + 9 / 1024, "12345.008789062"),
    (-1 / 1024, "-0.000976562"),
    (-3 / 1024, "-0.002929688"),
]
# round(x*1e9)/1e9 disagrees with fmt9 (found by a seeded search, frozen here)
X1E9 = [
    (0.4107276175, "0.410727617"),
    (1.3279912645, "1.327991265"),
    (2.8742553815, "2.874255381"),
    (2.4912005335, "2.491200533"),
    (2.7466427625, "2.746642763"),
    (2.3157388905, "2.315738891"),
]
# half-up on the shortest string rounds up, the exact binary value is below the tie
HALF_UP = [
    (1.3151875505, "1.315187550"),
    (0.8291030205, "0.829103020"),
    (1.4630957445, "1.463095744"),
    (2.7779531265, "2.777953126"),
    (0.4839382235, "0.483938223"),
]


def _with(base: Mapping, **changes: Any) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


_DROP = object()


def _subset_json(subset: Mapping) -> dict:
    return {k: num(v) if isinstance(v, float) else v for k, v in subset.items()}


def _ed_pub(seed: bytes) -> bytes:
    return signing.public_key_bytes(seed)


# The isolated base record: every value is written identically by the spec and
# by common serializers (Python, JavaScript, Go, Java, Rust defaults: shortest
# text = nine decimals, plain ASCII strings, keys already sorted), so a case
# that changes one dimension fails only an implementation with that one bug.
ISOLATED_BASE = {
    "D_hat": 1.412345678,
    "budget": 0.402155142,
    "coh_star": 0.734000002,
    "epoch": 7,
    "merkle_root": _ROOT,
    "pcs_id": pcs.pcs_id(_ROOT, 7, "shard-007"),
    "r": 0.318421053,
    "shard_id": "shard-007",
}
# (value, fmt9 text, flags): each trips one rounding rule only (seeded searches, frozen)
ISOLATED_ROUNDING = [
    (0.2610426485, "0.261042648", ["half-up"]),  # half-up on "0.2610426485"; x*1e9 and truncation agree
    (0.8820090094999999, "0.882009009", ["x1e9-rounding"]),  # Math.round(x*1e9) only
    (0.1234567896, "0.123456790", ["truncation"]),  # truncation only
]
ISOLATED_PITFALLS = [
    ("keys in reverse order", ["key-order"], dict(reversed(list(ISOLATED_BASE.items())))),
    ("D_hat 0.5 (shortest text 0.5)", ["shortest-repr"], _with(ISOLATED_BASE, D_hat=0.5)),
    ("D_hat given as the JSON integer 2", ["integer-valued"], _with(ISOLATED_BASE, D_hat=2)),
    ("D_hat 1e21 (toFixed and shortest text switch to exponent form)", ["large-value"], _with(ISOLATED_BASE, D_hat=1e21)),
    ("D_hat 1e-07 (shortest text in exponent form)", ["tiny-exponent"], _with(ISOLATED_BASE, D_hat=1e-7)),
    *[(f"coh_star {x!r} ({flags[0]} only)", flags, _with(ISOLATED_BASE, coh_star=x)) for x, _t, flags in ISOLATED_ROUNDING],
    ("coh_star 0.0009765625, an exact tie (half-to-even)", ["round-tie"], _with(ISOLATED_BASE, coh_star=1 / 1024)),
    ("r -0.0", ["negative-zero"], _with(ISOLATED_BASE, r=-0.0)),
    ("shard_id with U+00E9", ["unicode-escape"], _with(ISOLATED_BASE, shard_id="shard-\u00e9")),
    ("shard_id with U+2028", ["unicode-escape", "line-separator"], _with(ISOLATED_BASE, shard_id="a\u2028b")),
    ("shard_id with U+007F", ["control-char"], _with(ISOLATED_BASE, shard_id="del\x7f")),
    ("shard_id with '<', '>' and '&'", ["html-escape"], _with(ISOLATED_BASE, shard_id="a<b>&c")),
]


def _isolated_group(f: VectorFile, make_input) -> None:
    """The base record, then one case per pitfall differing from it in one dimension."""
    f.group("Isolated pitfalls: a base record every common serializer writes correctly, "
            "then one dimension changed per case (the other groups are realistic records)")
    f.case("isolated base record", ["isolated"], make_input(dict(ISOLATED_BASE)))
    for comment, flags, subset in ISOLATED_PITFALLS:
        f.case(f"isolated: {comment}", ["isolated", *flags], make_input(_subset_json(subset)))


# ------------------------------------------------------------------ the files

def _canonical_v1_floats(f: VectorFile) -> None:
    """Float format cases of the realistic record."""
    f.group("Float format")
    for x, comment, flags in [
        (0.1, "0.1: shortest repr is 0.1", ["shortest-repr"]),
        (0.35, "0.35 (binary value below the decimal)", ["shortest-repr"]),
        (1.23456789012, "more than nine decimals", ["shortest-repr"]),
        (1e-7, "1e-07 in shortest form", ["tiny-exponent"]),
        (1e-10, "1e-10 rounds to zero", ["tiny-exponent"]),
        (5e-324, "smallest subnormal", ["tiny-exponent"]),
        (1.5e-9, "1.5e-09: exact binary value is below the tie", ["tiny-exponent"]),
        (1e21, "1e21 (JS switches to exponent form)", ["large-value"]),
        (123456789.123456789, "large with fraction", ["large-value"]),
        (2.0**53 + 2, "above 2^53", ["large-value"]),
        (-0.0, "negative zero", ["negative-zero"]),
        (-1e-10, "negative value that rounds to zero", ["negative-zero"]),
        (-4.99e-10, "negative value just above the tie rounds to zero", ["negative-zero"]),
        (-6e-10, "negative value that rounds to -0.000000001", ["negative-zero"]),
        (-1.5, "negative", ["float-format"]),
    ]:
        f.case(f"D_hat = {comment}", ["float-format", *flags], {"subset": _subset_json(_with(BASE, D_hat=x))})
    for x, text in TIES[:5]:
        f.case(f"coh_star = {x!r} is an exact tie -> {text}", ["float-format", "round-tie"],
               {"subset": _subset_json(_with(BASE, coh_star=x))})
    for x, _text in X1E9[:3]:
        f.case(f"r = {x!r}: round(x*1e9)/1e9 gives the other neighbour", ["float-format", "x1e9-rounding"],
               {"subset": _subset_json(_with(BASE, r=x))})
    for x, _text in HALF_UP[:3]:
        f.case(f"budget = {x!r}: half-up on the decimal string would round up", ["float-format", "half-up"],
               {"subset": _subset_json(_with(BASE, budget=x))})
    f.case("all four floats as JSON integers", ["float-format", "integer-valued"],
           {"subset": _with(BASE, D_hat=2, coh_star=1, r=0, budget=1)})
    f.case("all four floats zero", ["float-format"], {"subset": _with(BASE, D_hat=0.0, coh_star=0.0, r=0.0, budget=0.0)})


def _canonical_v1_strings(f: VectorFile) -> None:
    """String escaping cases of the realistic record."""
    f.group("Strings")
    for sid, comment, flags in [
        ("shard-é", "non-ASCII (U+00E9) is raw UTF-8", ["unicode-escape"]),
        ("分片-7", "CJK is raw UTF-8", ["unicode-escape"]),
        ("shard-😀", "astral plane (U+1F600) is raw 4-byte UTF-8, not a surrogate pair", ["unicode-escape"]),
        ("a\u2028b", "U+2028 is raw (JavaScript escapes it in some serializers)", ["unicode-escape"]),
        ("a\nb\tc", "newline and tab use short escapes", ["control-char"]),
        ("a\b\fc\r", "backspace, form feed and carriage return use short escapes", ["control-char"]),
        ("\x00\x01\x1f", "U+0000, U+0001, U+001F use lowercase \\u00xx", ["control-char"]),
        ("\x0b\x1b", "vertical tab and escape use \\u000b and \\u001b", ["control-char"]),
        ("del\x7f", "U+007F is not escaped", ["control-char"]),
        ('q"uote', "double quote is escaped", ["quote-backslash"]),
        ("back\\slash", "backslash is escaped", ["quote-backslash"]),
        ("a/b", "solidus is not escaped", ["quote-backslash"]),
        ("a|b", "the canonicalizer accepts any string (the PCS schema is stricter)", ["pipe-in-shard-id"]),
        ("", "empty string", []),
    ]:
        f.case(f"shard_id: {comment}", flags, {"subset": _with(BASE, shard_id=sid)})
    f.case("pcs_id with non-ASCII and a control character", ["unicode-escape", "control-char"],
           {"subset": _with(BASE, pcs_id="ü\x07")})
    f.case("lone high surrogate in shard_id", ["surrogate"], {"subset": _with(BASE, shard_id="a\ud800b")}, "invalid")
    f.case("lone low surrogate in merkle_root", ["surrogate"], {"subset": _with(BASE, merkle_root="\udc00")}, "invalid")


def _canonical_v1() -> VectorFile:
    f = VectorFile("canonical_bytes", "v1", "Canonical bytes of the signed subset (SPEC.md section 3).")
    f.group("The worked example and key order")
    f.case("the spec v1 example", ["v1-example"], {"subset": dict(V1_EXAMPLE)},
           {"bytes_b64": b64(V1_EXAMPLE_BYTES)})
    f.case("the spec v1 example, keys in reverse order", ["v1-example", "key-order"],
           {"subset": dict(reversed(list(V1_EXAMPLE.items())))}, {"bytes_b64": b64(V1_EXAMPLE_BYTES)})
    f.case("keys in insertion order pcs_id first (as an agent builds them)", ["key-order"], {"subset": dict(BASE)})
    f.case("keys shuffled; D_hat (uppercase) sorts before budget (lowercase)", ["key-order"],
           {"subset": {k: BASE[k] for k in ("r", "epoch", "budget", "shard_id", "D_hat", "pcs_id", "coh_star", "merkle_root")}})
    f.case("a whole PCS: fields outside the signed subset are ignored", ["extra-field"],
           {"subset": _with(V1_EXAMPLE, sig="AAAA", attempt=3, sent_at=1700000000.5, schema="fractal-lba-kakeya",
                            version="1", scales=[2, 4], N_j={"2": 3, "4": 9}, ft={"retries": 2}, regime="mixed")},
           {"bytes_b64": b64(V1_EXAMPLE_BYTES)})
    _canonical_v1_floats(f)
    f.group("Round stability: equal after rounding gives equal bytes")
    f.case("D_hat 1.2345678901 (rounds to the example's 1.234567890)", ["round-stability"],
           {"subset": _with(V1_EXAMPLE, D_hat=1.2345678901)}, {"bytes_b64": b64(V1_EXAMPLE_BYTES)})
    f.case("coh_star 0.7500000004 (rounds to 0.750000000)", ["round-stability"],
           {"subset": _with(V1_EXAMPLE, coh_star=0.7500000004)}, {"bytes_b64": b64(V1_EXAMPLE_BYTES)})
    f.case("r 0.4999999996 (rounds to 0.500000000)", ["round-stability"],
           {"subset": _with(V1_EXAMPLE, r=0.4999999996)}, {"bytes_b64": b64(V1_EXAMPLE_BYTES)})
    _canonical_v1_strings(f)
    f.group("epoch")
    for e, ok in [(0, True), (1, True), (2**32, True), (2**53 - 1, True), (2**53, False), (-1, False), (2**64, False)]:
        f.case(f"epoch {e}", ["epoch-range"], {"subset": _with(BASE, epoch=e)}, None if ok else "invalid")
    f.case("epoch 1.5", ["epoch-range", "type"], {"subset": _with(BASE, epoch=1.5)}, "invalid")
    f.case("epoch as a string", ["epoch-range", "type"], {"subset": _with(BASE, epoch="7")}, "invalid")
    f.case("epoch true", ["epoch-range", "type"], {"subset": _with(BASE, epoch=True)}, "invalid")
    f.group("Rejected inputs")
    for field in canonical.SIGNED_FIELDS:
        f.case(f"{field} missing", ["missing-field"], {"subset": _with(BASE, **{field: _DROP})}, "invalid")
    for field in canonical.FLOAT_FIELDS:
        for bad, name in [(math.nan, "NaN"), (math.inf, "+Infinity"), (-math.inf, "-Infinity")]:
            f.case(f"{field} {name}", ["nan-inf"], {"subset": _subset_json(_with(BASE, **{field: bad}))}, "invalid")
        f.case(f"{field} as a string", ["type"], {"subset": _with(BASE, **{field: "0.5"})}, "invalid")
    f.case("D_hat null", ["type"], {"subset": _with(BASE, D_hat=None)}, "invalid")
    f.case("budget true", ["type"], {"subset": _with(BASE, budget=True)}, "invalid")
    f.case("shard_id a number", ["type"], {"subset": _with(BASE, shard_id=7)}, "invalid")
    f.case("pcs_id null", ["type"], {"subset": _with(BASE, pcs_id=None)}, "invalid")
    f.case("merkle_root a list", ["type"], {"subset": _with(BASE, merkle_root=["ab"])}, "invalid")
    _isolated_group(f, lambda subset: {"subset": subset})
    f.case("isolated: epoch written 1.0 (a float literal)", ["isolated", "epoch-float"],
           {"subset": _with(ISOLATED_BASE, epoch=1.0)}, "invalid")
    return f


def _canonical_legacy() -> VectorFile:
    f = VectorFile("canonical_bytes", "legacy-0.1",
                   "Canonical bytes as the seed system's Python agent wrote them (SPEC.md section 10).")
    f.group("The two legacy records")
    for i, (rec, _sig) in enumerate(LEGACY_RECORDS):
        f.case(f"legacy record {i + 1}", ["legacy-record"], {"subset": dict(rec)})
    f.group("Float format: Python repr of the half-up 9-dp value")
    for x, comment, flags in [
        (0.1, "0.1 stays 0.1", ["shortest-repr"]),
        (1.0, "1.0 is written 1.0", ["shortest-repr"]),
        (1.23456789012, "more than nine decimals", ["shortest-repr"]),
        (1e-7, "1e-07 stays in exponent form", ["tiny-exponent"]),
        (1e-10, "1e-10 rounds to 0.0", ["tiny-exponent"]),
        (1.5e-9, "1.5e-09 rounds half-up to 2e-09", ["tiny-exponent", "half-up"]),
        (1e21, "1e21 is written 1e+21 (SPEC.md 10.2 rounds exactly; the seed agent's 28-digit decimal "
               "context raised on it)", ["large-value", "legacy-extension"]),
        (-0.0, "negative zero stays -0.0", ["negative-zero"]),
        (-1e-10, "a tiny negative rounds to -0.0", ["negative-zero"]),
    ]:
        f.case(f"D_hat = {comment}", ["float-format", *flags], {"subset": _subset_json(_with(BASE, D_hat=x))})
    for x, _text in TIES[:3]:
        f.case(f"coh_star = {x!r}: half-up on the decimal string", ["float-format", "round-tie", "half-up"],
               {"subset": _subset_json(_with(BASE, coh_star=x))})
    for x, _text in HALF_UP[:3]:
        f.case(f"budget = {x!r}: half-up on the decimal string", ["float-format", "half-up"],
               {"subset": _subset_json(_with(BASE, budget=x))})
    f.case("floats as JSON integers are written as floats", ["integer-valued"],
           {"subset": _with(BASE, D_hat=2, coh_star=1, r=0, budget=1)})
    f.group("Strings: ASCII with \\uXXXX escapes")
    for sid, comment, flags in [
        ("shard-é", "non-ASCII is \\u00e9", ["unicode-escape"]),
        ("shard-😀", "astral plane is a surrogate pair \\ud83d\\ude00", ["unicode-escape"]),
        ("a\nb\x01", "control characters", ["control-char"]),
        ("del\x7f", "U+007F is escaped as \\u007f (ensure_ascii)", ["control-char"]),
        ('q"\\/', "quote and backslash escaped, solidus not", ["quote-backslash"]),
    ]:
        f.case(f"shard_id: {comment}", flags, {"subset": _with(BASE, shard_id=sid)})
    f.case("key order of the input does not matter", ["key-order"],
           {"subset": dict(reversed(list(LEGACY_RECORDS[0][0].items())))})
    f.group("Rejected inputs")
    f.case("D_hat NaN", ["nan-inf"], {"subset": _subset_json(_with(BASE, D_hat=math.nan))}, "invalid")
    f.case("r +Infinity", ["nan-inf"], {"subset": _subset_json(_with(BASE, r=math.inf))}, "invalid")
    f.case("epoch -1", ["epoch-range"], {"subset": _with(BASE, epoch=-1)}, "invalid")
    f.case("budget missing", ["missing-field"], {"subset": _with(BASE, budget=_DROP)}, "invalid")
    f.case("shard_id a number", ["type"], {"subset": _with(BASE, shard_id=1)}, "invalid")
    return f


def _fmt9() -> VectorFile:
    f = VectorFile("fmt9", "v1", "Nine-decimal fixed-point text, half-to-even from the exact binary64 value.")
    f.group("Ordinary values")
    for x, text in [(0, "0.000000000"), (1, "1.000000000"), (-7, "-7.000000000"), (0.5, "0.500000000"),
                    (0.1, "0.100000000"), (0.35, "0.350000000"), (1.23456789, "1.234567890"),
                    (2.5, "2.500000000"), (1e-9, "0.000000001"), (123.456, "123.456000000"),
                    (0.999999999, "0.999999999"), (0.9999999995, "0.999999999"),
                    (0.3333333333333333, "0.333333333"), (0.6666666666666666, "0.666666667")]:
        flags = ["float-format", "integer-valued"] if isinstance(x, int) else ["float-format", "shortest-repr"]
        f.case(f"{x!r}", flags, {"x": x}, {"text": text})
    f.group("Exact ties j/1024: half-to-even")
    for x, text in TIES:
        f.case(f"{x!r} -> {text}", ["round-tie"], {"x": x}, {"text": text})
    f.group("round(x*1e9)/1e9 pitfalls")
    for x, text in X1E9:
        f.case(f"{x!r} -> {text}", ["x1e9-rounding"], {"x": x}, {"text": text})
    f.group("Half-up on the shortest decimal string pitfalls")
    for x, text in HALF_UP:
        f.case(f"{x!r} -> {text}", ["half-up"], {"x": x}, {"text": text})
    f.group("Negative zero")
    for x, text in [(-0.0, "0.000000000"), (-1e-10, "0.000000000"), (-4.99e-10, "0.000000000"),
                    (-5e-324, "0.000000000"), (-6e-10, "-0.000000001"), (-1e-9, "-0.000000001")]:
        f.case(f"{x!r} -> {text}", ["negative-zero"], {"x": num(x)}, {"text": text})
    f.group("Tiny values (exponent form in shortest repr)")
    for x, text in [(1e-7, "0.000000100"), (1.5e-9, "0.000000001"), (2.5e-9, "0.000000003"),
                    (5e-10, "0.000000001"), (4.9e-10, "0.000000000"), (1e-300, "0.000000000"),
                    (5e-324, "0.000000000"), (2.2250738585072014e-308, "0.000000000"), (1.23e-5, "0.000012300")]:
        f.case(f"{x!r} -> {text}", ["tiny-exponent"], {"x": x}, {"text": text})
    f.group("Large values: every integer digit is written")
    for x, text in [(1e21, "1000000000000000000000.000000000"), (1e22, "10000000000000000000000.000000000"),
                    (2.0**53 + 2, "9007199254740994.000000000"), (123456789.123456789, "123456789.123456791"),
                    (1e16 + 2, "10000000000000002.000000000"), (-1e21, "-1000000000000000000000.000000000")]:
        f.case(f"{x!r}", ["large-value"], {"x": x}, {"text": text})
    f.case("largest finite double", ["large-value"], {"x": 1.7976931348623157e308},
           {"text": str(Decimal(1.7976931348623157e308)) + ".000000000"})
    f.group("Rejected")
    for x, name in [(math.nan, "NaN"), (math.inf, "+Infinity"), (-math.inf, "-Infinity")]:
        f.case(name, ["nan-inf"], {"x": f64(x)}, "invalid")
    f.case("a signalling-NaN bit pattern", ["nan-inf"], {"x": {"f64": "7ff0000000000001"}}, "invalid")
    f.case("a string", ["type"], {"x": "0.5"}, "invalid")
    f.case("null", ["type"], {"x": None}, "invalid")
    f.case("true", ["type"], {"x": True}, "invalid")
    f.group("Isolated rounding rules: each value trips exactly one wrong rule")
    for x, text, flags in ISOLATED_ROUNDING:
        f.case(f"{x!r} -> {text}", flags, {"x": x}, {"text": text})
    return f


def _sign_hmac(profile: str) -> VectorFile:
    f = VectorFile("sign_hmac", profile, "base64(HMAC-SHA256(key, canonical bytes)) (SPEC.md section 4).")
    if profile == "legacy-0.1":
        f.group("The two legacy records (key 'testsecret')")
        for i, (rec, sig) in enumerate(LEGACY_RECORDS):
            f.case(f"legacy record {i + 1}", ["legacy-record"], {"subset": dict(rec), "key_b64": b64(LEGACY_KEY)},
                   {"sig": sig})
        f.group("Other subsets")
        for x in (0.1, 1e-7, 1.5e-9, 1 / 1024):
            f.case(f"D_hat {x!r}", ["float-format"], {"subset": _subset_json(_with(BASE, D_hat=x)), "key_b64": b64(LEGACY_KEY)})
        f.case("non-ASCII shard_id", ["unicode-escape"], {"subset": _with(BASE, shard_id="é"), "key_b64": b64(LEGACY_KEY)})
        f.case("empty key", ["hmac-key-length"], {"subset": dict(BASE), "key_b64": ""}, "invalid")
        return f
    f.group("The v1 example under several keys")
    for name, key in HMAC_KEYS.items():
        f.case(f"v1 example, key {name} ({len(key)} bytes)", ["v1-example", "hmac-key-length"],
               {"subset": dict(V1_EXAMPLE), "key_b64": b64(key)},
               {"sig": b64(hmac.digest(key, V1_EXAMPLE_BYTES, "sha256"))})
    f.case("the legacy key 'testsecret' over v1 bytes", ["profile-mismatch"],
           {"subset": dict(LEGACY_RECORDS[0][0]), "key_b64": b64(LEGACY_KEY)})
    f.group("Subsets probing the canonical bytes")
    k = b64(HMAC_KEYS["k32"])
    probes = [
        (_with(BASE), ["key-order"], "base subset"),
        (_with(BASE, D_hat=1 / 1024), ["round-tie"], "tie"),
        (_with(BASE, D_hat=-0.0), ["negative-zero"], "negative zero"),
        (_with(BASE, D_hat=1e-7), ["tiny-exponent"], "tiny"),
        (_with(BASE, r=X1E9[0][0]), ["x1e9-rounding"], "x*1e9 pitfall"),
        (_with(BASE, budget=HALF_UP[0][0]), ["half-up"], "half-up pitfall"),
        (_with(BASE, shard_id="é😀"), ["unicode-escape"], "non-ASCII"),
        (_with(BASE, shard_id="a\tb\x00"), ["control-char"], "control characters"),
        (_with(BASE, epoch=2**53 - 1), ["epoch-range"], "largest epoch"),
        (_with(BASE, D_hat=2, coh_star=1), ["integer-valued"], "integer-valued floats"),
        (_with(BASE, sig="x", attempt=2), ["extra-field"], "extra fields ignored"),
    ]
    for subset, flags, comment in probes:
        f.case(comment, flags, {"subset": _subset_json(subset), "key_b64": k})
    f.group("Rejected")
    f.case("empty key", ["hmac-key-length"], {"subset": dict(BASE), "key_b64": ""}, "invalid")
    f.case("key not strict base64", ["base64-strict"], {"subset": dict(BASE), "key_b64": "a2V5"[:3]}, "invalid")
    f.case("D_hat NaN", ["nan-inf"], {"subset": _subset_json(_with(BASE, D_hat=math.nan)), "key_b64": k}, "invalid")
    f.case("epoch 2^53", ["epoch-range"], {"subset": _with(BASE, epoch=2**53), "key_b64": k}, "invalid")
    f.case("lone surrogate", ["surrogate"], {"subset": _with(BASE, shard_id="\ud83d"), "key_b64": k}, "invalid")
    f.case("pcs_id missing", ["missing-field"], {"subset": _with(BASE, pcs_id=_DROP), "key_b64": k}, "invalid")
    _isolated_group(f, lambda subset: {"subset": subset, "key_b64": k})
    return f


def _b64_variants(sig: str) -> list[tuple[str, str]]:
    """Lenient spellings of a valid base64 signature that strict decoding rejects."""
    return lenient_spellings(sig)


def _verify_hmac_legacy(f: VectorFile) -> None:
    f.group("The two legacy records (key 'testsecret')")
    for i, (rec, sig) in enumerate(LEGACY_RECORDS):
        f.case(f"legacy record {i + 1} verifies", ["legacy-record"],
               {"subset": dict(rec), "sig": sig, "keys_b64": [b64(LEGACY_KEY)]}, {"valid": True})
        f.case(f"legacy record {i + 1} with a rotated-in second key", ["legacy-record", "key-rotation"],
               {"subset": dict(rec), "sig": sig, "keys_b64": [b64(HMAC_KEYS["k32"]), b64(LEGACY_KEY)]}, {"valid": True})
        f.case(f"legacy record {i + 1} with budget changed by 1e-9", ["legacy-record", "modified-field"],
               {"subset": _with(rec, budget=round(rec["budget"] + 1e-9, 9)), "sig": sig, "keys_b64": [b64(LEGACY_KEY)]},
               {"valid": False})
        f.case(f"legacy record {i + 1} with a wrong key", ["legacy-record", "wrong-key"],
               {"subset": dict(rec), "sig": sig, "keys_b64": [b64(b"testsecreT")]}, {"valid": False})
        f.case(f"legacy record {i + 1}, signature without padding", ["legacy-record", "base64-strict"],
               {"subset": dict(rec), "sig": sig.rstrip("="), "keys_b64": [b64(LEGACY_KEY)]}, {"valid": False})
    f.group("Profiles are not interchangeable")
    v1sig = signing.sign_hmac(BASE, LEGACY_KEY, "v1")
    f.case("a v1 signature does not verify under legacy-0.1", ["profile-mismatch"],
           {"subset": dict(BASE), "sig": v1sig, "keys_b64": [b64(LEGACY_KEY)]}, {"valid": False})
    lsig = signing.sign_hmac(BASE, LEGACY_KEY, "legacy-0.1")
    f.case("a legacy signature of the same subset verifies", ["profile-mismatch"],
           {"subset": dict(BASE), "sig": lsig, "keys_b64": [b64(LEGACY_KEY)]}, {"valid": True})


def _verify_hmac_constructions(f: VectorFile, sig: str, k1: bytes) -> None:
    """Signatures made the wrong way, and lenient spellings of the right one."""
    f.group("Wrong construction")
    cb = canonical.canonical_bytes(BASE)
    f.case("HMAC over SHA-256(bytes) instead of the bytes", ["prehash"],
           {"subset": dict(BASE), "sig": b64(hmac.digest(k1, hashlib.sha256(cb).digest(), "sha256")), "keys_b64": [b64(k1)]},
           {"valid": False})
    f.case("HMAC over the hex SHA-256 of the bytes", ["prehash"],
           {"subset": dict(BASE), "sig": b64(hmac.digest(k1, hashlib.sha256(cb).hexdigest().encode(), "sha256")),
            "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("HMAC over the legacy-0.1 bytes", ["profile-mismatch"],
           {"subset": _with(BASE, D_hat=0.1), "sig": signing.sign_hmac(_with(BASE, D_hat=0.1), k1, "legacy-0.1"),
            "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("HMAC-SHA512 truncated to 32 bytes", ["wrong-key"],
           {"subset": dict(BASE), "sig": b64(hmac.digest(k1, cb, "sha512")[:32]), "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("hex digest instead of base64", ["base64-strict"],
           {"subset": dict(BASE), "sig": hmac.digest(k1, cb, "sha256").hex(), "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("signature truncated to 31 bytes", ["base64-strict"],
           {"subset": dict(BASE), "sig": b64(base64.b64decode(sig)[:31]), "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("signature with a flipped bit", ["modified-field"],
           {"subset": dict(BASE), "sig": b64(bytes([base64.b64decode(sig)[0] ^ 1]) + base64.b64decode(sig)[1:]),
            "keys_b64": [b64(k1)]}, {"valid": False})
    f.group("Lenient base64 spellings of the valid signature")
    for text, comment in _b64_variants(sig):
        f.case(comment, ["base64-strict"], {"subset": dict(BASE), "sig": text, "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("signature not a string", ["base64-strict", "type"],
           {"subset": dict(BASE), "sig": 12345, "keys_b64": [b64(k1)]}, {"valid": False})


def _verify_hmac(profile: str) -> VectorFile:
    f = VectorFile("verify_hmac", profile,
                   "Verify an HMAC signature against a set of active keys (rotation), strict base64, constant time.")
    if profile == "legacy-0.1":
        _verify_hmac_legacy(f)
        return f
    k1, k2 = HMAC_KEYS["k32"], HMAC_KEYS["k32b"]
    sig = signing.sign_hmac(BASE, k1)
    f.group("Valid signatures and key rotation")
    f.case("signed with the only key", [], {"subset": dict(BASE), "sig": sig, "keys_b64": [b64(k1)]}, {"valid": True})
    f.case("old key first, new key second", ["key-rotation"],
           {"subset": dict(BASE), "sig": sig, "keys_b64": [b64(k1), b64(k2)]}, {"valid": True})
    f.case("new key first, old key second", ["key-rotation"],
           {"subset": dict(BASE), "sig": sig, "keys_b64": [b64(k2), b64(k1)]}, {"valid": True})
    f.case("three keys, signing key last", ["key-rotation"],
           {"subset": dict(BASE), "sig": sig, "keys_b64": [b64(HMAC_KEYS["k65"]), b64(k2), b64(k1)]}, {"valid": True})
    f.case("the v1 example signed with a 100-byte key", ["v1-example", "hmac-key-length"],
           {"subset": dict(V1_EXAMPLE), "sig": b64(hmac.digest(HMAC_KEYS["k100"], V1_EXAMPLE_BYTES, "sha256")),
            "keys_b64": [b64(HMAC_KEYS["k100"])]}, {"valid": True})
    f.case("retired key only", ["wrong-key"], {"subset": dict(BASE), "sig": sig, "keys_b64": [b64(k2)]}, {"valid": False})
    f.case("no active key", ["empty-keys"], {"subset": dict(BASE), "sig": sig, "keys_b64": []}, {"valid": False})
    f.case("key that is a prefix of the signing key", ["wrong-key"],
           {"subset": dict(BASE), "sig": sig, "keys_b64": [b64(k1[:31])]}, {"valid": False})
    f.group("Signed subset changes")
    for field, value in [("D_hat", 1.412345679), ("coh_star", 0.735), ("r", 0.318421054), ("budget", 0.402155143),
                         ("epoch", 8), ("shard_id", "shard-008"), ("merkle_root", "0" * 64), ("pcs_id", "0" * 64)]:
        f.case(f"{field} changed after signing", ["modified-field"],
               {"subset": _with(BASE, **{field: value}), "sig": sig, "keys_b64": [b64(k1)]}, {"valid": False})
    f.case("D_hat changed below 9-dp resolution", ["round-stability"],
           {"subset": _with(BASE, D_hat=1.4123456781), "sig": sig, "keys_b64": [b64(k1)]}, {"valid": True})
    f.case("unsigned fields (attempt, sent_at, ft) changed", ["unsigned-field", "extra-field"],
           {"subset": _with(BASE, attempt=5, sent_at=1.5, ft={"x": 1}), "sig": sig, "keys_b64": [b64(k1)]}, {"valid": True})
    f.case("key order of the subset changed", ["key-order"],
           {"subset": dict(reversed(list(BASE.items()))), "sig": sig, "keys_b64": [b64(k1)]}, {"valid": True})
    _verify_hmac_constructions(f, sig, k1)
    f.group("Rejected inputs (not a verdict: the input is malformed)")
    f.case("D_hat NaN", ["nan-inf"], {"subset": _subset_json(_with(BASE, D_hat=math.nan)), "sig": sig, "keys_b64": [b64(k1)]},
           "invalid")
    f.case("epoch -1", ["epoch-range"], {"subset": _with(BASE, epoch=-1), "sig": sig, "keys_b64": [b64(k1)]}, "invalid")
    f.case("empty key in the key set", ["hmac-key-length"], {"subset": dict(BASE), "sig": sig, "keys_b64": [""]}, "invalid")
    f.case("key not strict base64", ["base64-strict"], {"subset": dict(BASE), "sig": sig, "keys_b64": ["a2V5\n"]}, "invalid")
    _isolated_group(f, lambda subset: {"subset": subset, "sig": signing.sign_hmac(decode(subset), k1),
                                       "keys_b64": [b64(k1)]})
    return f


def _sign_ed25519() -> VectorFile:
    f = VectorFile("sign_ed25519", "v1", "Ed25519 (RFC 8032, deterministic) over SHA-256(canonical bytes).")
    f.group("Fixed seeds")
    for i, seed in enumerate(ED_SEEDS):
        f.case(f"v1 example, seed {i}", ["v1-example", "prehash"], {"subset": dict(V1_EXAMPLE), "private_key_b64": b64(seed)})
        f.case(f"base subset, seed {i}", ["prehash"], {"subset": dict(BASE), "private_key_b64": b64(seed)})
    s = b64(ED_SEEDS[0])
    for subset, flags, comment in [
        (_with(BASE, D_hat=1 / 1024), ["round-tie"], "tie"),
        (_with(BASE, coh_star=-0.0), ["negative-zero"], "negative zero"),
        (_with(BASE, r=1e-7), ["tiny-exponent"], "tiny value"),
        (_with(BASE, shard_id="é"), ["unicode-escape"], "non-ASCII"),
        (dict(reversed(list(BASE.items()))), ["key-order"], "keys reversed (same signature as the base subset)"),
        (_with(BASE, epoch=0), ["epoch-range"], "epoch 0"),
        (_with(BASE, D_hat=1.4123456781), ["round-stability"], "same after rounding as the base subset"),
    ]:
        f.case(comment, flags, {"subset": _subset_json(subset), "private_key_b64": s})
    f.group("Rejected")
    f.case("seed of 31 bytes", ["base64-strict"], {"subset": dict(BASE), "private_key_b64": b64(ED_SEEDS[0][:31])}, "invalid")
    f.case("seed of 64 bytes (seed || public key)", ["base64-strict"],
           {"subset": dict(BASE), "private_key_b64": b64(ED_SEEDS[0] + _ed_pub(ED_SEEDS[0]))}, "invalid")
    f.case("seed without padding", ["base64-strict"], {"subset": dict(BASE), "private_key_b64": s.rstrip("=")}, "invalid")
    f.case("r +Infinity", ["nan-inf"], {"subset": _subset_json(_with(BASE, r=math.inf)), "private_key_b64": s}, "invalid")
    f.case("shard_id missing", ["missing-field"], {"subset": _with(BASE, shard_id=_DROP), "private_key_b64": s}, "invalid")
    return f


def lenient_forgery(key: bytes, msg: bytes) -> bytes | None:
    """A signature (S = 0) that a verifier decoding ``key`` leniently (y mod p, sign bit of x = 0
    ignored) accepts for ``msg``: ``key`` spells the identity (0, 1) or the order-2 point (0, -1), so
    R = -[k]A is the identity or A itself, whichever k = SHA-512(R || key || msg) mod L agrees with.
    The generator checks that OpenSSL (a lenient decoder) accepts it, so the vector probes the
    decoding rule and nothing else. None when no such R exists for ``msg``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p, order = 2**255 - 19, 2**252 + 27742317777372353535851937790883648493
    y = (int.from_bytes(key, "little") & ((1 << 255) - 1)) % p
    for r in [(1).to_bytes(32, "little")] + ([(p - 1).to_bytes(32, "little")] if y == p - 1 else []):
        k = int.from_bytes(hashlib.sha512(r + key + msg).digest(), "little") % order
        if y == 1 or (k % 2 == 1) == (r[0] != 1):
            sig = r + bytes(32)
            try:
                Ed25519PublicKey.from_public_bytes(key).verify(sig, msg)
            except InvalidSignature:
                raise AssertionError("the lenient decoder refuses the forgery: the vector would probe nothing") \
                    from None
            return sig
    return None  # (0, -1): for about one message in four neither R fits


def _forgery(key: bytes, msg: bytes) -> bytes:
    sig = lenient_forgery(key, msg)
    if sig is None:
        raise AssertionError("no lenient forgery for this key and message")
    return sig


def _verify_ed25519() -> VectorFile:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    f = VectorFile("verify_ed25519", "v1", "Verify Ed25519 over SHA-256(canonical bytes) against a set of public keys.")
    seed0, seed1, seed2 = ED_SEEDS
    pub0, pub1, pub2 = (b64(_ed_pub(s)) for s in ED_SEEDS)
    sig = signing.sign_ed25519(BASE, seed0)
    raw = base64.b64decode(sig)
    f.group("Valid and rotation")
    f.case("signed with the only key", ["prehash"], {"subset": dict(BASE), "sig": sig, "public_keys_b64": [pub0]}, {"valid": True})
    f.case("rotation: signing key second", ["key-rotation"],
           {"subset": dict(BASE), "sig": sig, "public_keys_b64": [pub1, pub0]}, {"valid": True})
    f.case("rotation: three keys", ["key-rotation"],
           {"subset": dict(BASE), "sig": sig, "public_keys_b64": [pub2, pub0, pub1]}, {"valid": True})
    f.case("v1 example", ["v1-example"],
           {"subset": dict(V1_EXAMPLE), "sig": signing.sign_ed25519(V1_EXAMPLE, seed1), "public_keys_b64": [pub1]},
           {"valid": True})
    f.case("wrong key", ["wrong-key"], {"subset": dict(BASE), "sig": sig, "public_keys_b64": [pub1]}, {"valid": False})
    f.case("no active key", ["empty-keys"], {"subset": dict(BASE), "sig": sig, "public_keys_b64": []}, {"valid": False})
    f.case("key order of the subset changed", ["key-order"],
           {"subset": dict(reversed(list(BASE.items()))), "sig": sig, "public_keys_b64": [pub0]}, {"valid": True})
    f.case("unsigned field changed", ["unsigned-field"],
           {"subset": _with(BASE, attempt=9), "sig": sig, "public_keys_b64": [pub0]}, {"valid": True})
    f.case("D_hat changed below 9-dp resolution", ["round-stability"],
           {"subset": _with(BASE, D_hat=1.4123456781), "sig": sig, "public_keys_b64": [pub0]}, {"valid": True})
    f.group("Signed subset changes")
    for field, value in [("D_hat", 1.412345679), ("coh_star", 0.7340000006), ("r", 0.3), ("budget", 0.5),
                         ("epoch", 6), ("shard_id", "shard-7"), ("merkle_root", "f" * 64), ("pcs_id", "e" * 64)]:
        f.case(f"{field} changed after signing", ["modified-field"],
               {"subset": _with(BASE, **{field: value}), "sig": sig, "public_keys_b64": [pub0]}, {"valid": False})
    f.group("Wrong construction")
    cb = canonical.canonical_bytes(BASE)
    k = Ed25519PrivateKey.from_private_bytes(seed0)
    f.case("signature over the canonical bytes themselves (no prehash)", ["prehash"],
           {"subset": dict(BASE), "sig": b64(k.sign(cb)), "public_keys_b64": [pub0]}, {"valid": False})
    f.case("signature over the hex digest", ["prehash"],
           {"subset": dict(BASE), "sig": b64(k.sign(hashlib.sha256(cb).hexdigest().encode())), "public_keys_b64": [pub0]},
           {"valid": False})
    order = 2**252 + 27742317777372353535851937790883648493
    s_int = int.from_bytes(raw[32:], "little") + order
    f.case("S + L (non-canonical S, malleated signature)", ["malleability"],
           {"subset": dict(BASE), "sig": b64(raw[:32] + s_int.to_bytes(32, "little")), "public_keys_b64": [pub0]},
           {"valid": False})
    f.case("R with a flipped bit", ["modified-field"],
           {"subset": dict(BASE), "sig": b64(bytes([raw[0] ^ 1]) + raw[1:]), "public_keys_b64": [pub0]}, {"valid": False})
    f.case("signature truncated to 63 bytes", ["base64-strict"],
           {"subset": dict(BASE), "sig": b64(raw[:63]), "public_keys_b64": [pub0]}, {"valid": False})
    f.case("all-zero signature", ["modified-field"],
           {"subset": dict(BASE), "sig": b64(bytes(64)), "public_keys_b64": [pub0]}, {"valid": False})
    f.group("Lenient base64 spellings of the valid signature")
    for text, comment in _b64_variants(sig):
        f.case(comment, ["base64-strict"], {"subset": dict(BASE), "sig": text, "public_keys_b64": [pub0]}, {"valid": False})
    f.group("Rejected inputs")
    f.case("public key of 31 bytes", ["base64-strict"],
           {"subset": dict(BASE), "sig": sig, "public_keys_b64": [b64(_ed_pub(seed0)[:31])]}, "invalid")
    f.case("public key without padding", ["base64-strict"],
           {"subset": dict(BASE), "sig": sig, "public_keys_b64": [pub0.rstrip("=")]}, "invalid")
    f.case("coh_star NaN", ["nan-inf"],
           {"subset": _subset_json(_with(BASE, coh_star=math.nan)), "sig": sig, "public_keys_b64": [pub0]}, "invalid")
    # appended last: the tcIds above stay what they were
    f.group("Non-canonical public keys (RFC 8032 section 5.1.3 decoding fails)")
    p = 2**255 - 19
    msg = signing.ed25519_message(BASE)
    for enc, comment in [((p + 1).to_bytes(32, "little"), "public key y = p + 1 (the identity spelled with y >= p)"),
                         ((1 | 1 << 255).to_bytes(32, "little"), "public key x = 0 with the sign bit set (the identity)"),
                         ((p - 1 | 1 << 255).to_bytes(32, "little"), "public key y = p - 1, x = 0 with the sign bit set")]:
        f.case(comment, ["non-canonical-key"],
               {"subset": dict(BASE), "sig": b64(_forgery(enc, msg)), "public_keys_b64": [b64(enc)]},
               {"valid": False})
    return f


def _pcs_id() -> VectorFile:
    f = VectorFile("pcs_id", "v1", 'hex SHA-256 of merkle_root + "|" + decimal(epoch) + "|" + shard_id (SPEC.md section 5).')
    root = _ROOT
    f.group("Valid")
    for i, (rec, _sig) in enumerate(LEGACY_RECORDS):
        f.case(f"legacy record {i + 1}", ["legacy-record"],
               {"merkle_root": rec["merkle_root"], "epoch": rec["epoch"], "shard_id": rec["shard_id"]},
               {"pcs_id": rec["pcs_id"]})
    for epoch, sid, flags in [
        (0, "s", ["epoch-range", "shard-id-length"]),
        (1, "shard-001", []),
        (7, "shard-007", []),
        (2**32, "a.b_c:d-e", ["pipe-in-shard-id"]),
        (2**53 - 1, "Z" * 128, ["epoch-range", "shard-id-length"]),
        (10, "0123456789", []),
        (1, "tenant:shard.9", []),
    ]:
        f.case(f"epoch {epoch}, shard_id {sid[:20]!r}", flags, {"merkle_root": root, "epoch": epoch, "shard_id": sid},
               {"pcs_id": hashlib.sha256(f"{root}|{epoch}|{sid}".encode()).hexdigest()})
    f.case("empty-tree root", ["merkle-empty"], {"merkle_root": hashlib.sha256(b"").hexdigest(), "epoch": 1, "shard_id": "x"})
    f.group("Rejected shard_id")
    for sid, comment in [("a|b", "contains '|'"), ("|", "only '|'"), ("", "empty"), ("Z" * 129, "129 characters"),
                         ("a b", "space"), ("é", "non-ASCII"), ("a/b", "slash"), ("a\n", "trailing newline"),
                         ("a\x00", "NUL")]:
        flags = ["shard-id-length"] if comment in ("empty", "129 characters") else ["pipe-in-shard-id"]
        f.case(f"shard_id {comment}", flags, {"merkle_root": root, "epoch": 1, "shard_id": sid}, "invalid")
    f.case("shard_id a number", ["type"], {"merkle_root": root, "epoch": 1, "shard_id": 5}, "invalid")
    f.group("Rejected merkle_root")
    for mr, comment in [(root.upper(), "uppercase hex"), (root[:63], "63 characters"), (root + "0", "65 characters"),
                        ("g" * 64, "not hex"), ("", "empty"), ("abc123def456789012345678901234567890abcd", "40 characters")]:
        f.case(f"merkle_root {comment}", ["merkle-root-format"], {"merkle_root": mr, "epoch": 1, "shard_id": "s"}, "invalid")
    f.group("Rejected epoch")
    for e, comment in [(-1, "-1"), (2**53, "2^53"), (1.5, "1.5"), ("1", "a string"), (True, "true"), (None, "null")]:
        flags = ["epoch-range"] + (["type"] if not isinstance(e, int) or isinstance(e, bool) else [])
        f.case(f"epoch {comment}", flags, {"merkle_root": root, "epoch": e, "shard_id": "s"}, "invalid")
    f.group("Epoch written as a float")
    f.case("epoch 1.0 (a float literal, even though its value is an integer)", ["epoch-range", "epoch-float"],
           {"merkle_root": root, "epoch": 1.0, "shard_id": "s"}, "invalid")
    return f


# RFC 6962 / Certificate Transparency reference leaves and roots (merkle_tree_test.cc)
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _merkle(profile: str) -> VectorFile:
    desc = ("RFC 6962 Merkle root over chunks (SPEC.md section 6)." if profile == "v1"
            else "The seed agent's hex-concatenation Merkle tree (SPEC.md section 10).")
    f = VectorFile("merkle_root", profile, desc)
    empty = hashlib.sha256(b"").hexdigest()
    f.group("Empty tree and the RFC 6962 reference data")
    if profile == "v1":
        f.case("no chunks", ["merkle-empty"], {"chunks_b64": []}, {"root": empty})
    else:
        f.case("no chunks: SHA-256 of the empty string as SPEC.md 10.3 defines it (the seed agent indexed an "
               "empty level and raised; it never signed an empty stream)", ["merkle-empty", "legacy-extension"],
               {"chunks_b64": []}, {"root": empty})
    for n in range(1, 9):
        flags = (["merkle-rfc6962"] if profile == "v1" else []) + (["merkle-odd"] if n & (n - 1) else [])
        if n == 1:
            flags.append("merkle-empty-chunk")
        f.case(f"the first {n} CT test leaves", flags, {"chunks_b64": [b64(c) for c in CT_LEAVES[:n]]},
               {"root": CT_ROOTS[n - 1]} if profile == "v1" else None)
    f.group("Sizes that are not powers of two")
    for n in (3, 5, 6, 7, 9, 10, 11, 13, 16, 17, 31, 33):
        chunks = [hashlib.sha256(b"chunk %d" % i).digest() * (1 + i % 3) for i in range(n)]
        f.case(f"{n} chunks", ["merkle-odd"] if n & (n - 1) else [], {"chunks_b64": [b64(c) for c in chunks]})
    f.group("Chunk contents")
    f.case("one empty chunk", ["merkle-empty-chunk"], {"chunks_b64": [""]})
    f.case("two empty chunks", ["merkle-empty-chunk"], {"chunks_b64": ["", ""]})
    f.case("a chunk equal to a 32-byte digest (leaf/node domain separation)", [],
           {"chunks_b64": [b64(hashlib.sha256(b"x").digest())]})
    stream = bytes((i * 7 + 3) % 256 for i in range(3 * merkle.CHUNK_SIZE + 100))
    chunks = merkle.chunk_stream(stream)
    f.case("a 12388-byte stream cut into 4096-byte chunks (last one 100 bytes)", ["merkle-chunk-size", "merkle-odd"],
           {"chunks_b64": [b64(c) for c in chunks]})
    f.case("one full 4096-byte chunk", ["merkle-chunk-size"], {"chunks_b64": [b64(chunks[0])]})
    f.case("same chunks in another order give another root", [], {"chunks_b64": [b64(c) for c in reversed(chunks)]})
    f.group("Rejected")
    f.case("chunk not strict base64", ["base64-strict"], {"chunks_b64": ["AAA"]}, "invalid")
    f.case("chunk with whitespace", ["base64-strict"], {"chunks_b64": ["AA AA"]}, "invalid")
    f.case("chunks not a list", ["type"], {"chunks_b64": "AAAA"}, "invalid")
    f.case("chunk not a string", ["type"], {"chunks_b64": [5]}, "invalid")
    return f


def _d_hat(profile: str) -> VectorFile:
    f = VectorFile("d_hat", profile,
                   "Theil-Sen slope of log2(N_j) on log2(scale): true median (v1) or upper median (legacy-0.1).")
    f.group("Pairwise slope counts (k scales give k(k-1)/2 slopes)")
    cases = [
        ([2, 4], [3, 9], "2 scales, 1 slope"),
        ([2, 4, 8], [4, 13, 40], "3 scales, 3 slopes"),
        ([2, 4, 8, 16], [3, 9, 20, 50], "4 scales, 6 slopes"),
        ([2, 4, 8, 16, 32], [8, 63, 170, 193, 198], "5 scales, 10 slopes (box counts of 200 points)"),
        ([2, 4, 8, 16, 32, 64], [4, 16, 64, 256, 1024, 4096], "6 scales, exact slope 2"),
        ([2, 4, 8, 16, 32, 64, 128], [2, 3, 5, 9, 17, 33, 65], "7 scales"),
        ([2, 3, 5, 7, 11, 13, 17, 19], [2, 5, 9, 20, 31, 60, 80, 99], "8 scales, 28 slopes, non-power-of-two scales"),
        ([2, 4, 8, 16, 32], [1, 1, 1, 1, 1], "all counts 1: slope 0"),
        ([2, 4, 8, 16, 32], [100, 50, 25, 12, 6], "decreasing counts: negative slope"),
        ([2, 4, 8, 16], [3, 9, 20, 50][::-1], "decreasing counts, 6 slopes"),
        ([2, 4, 8, 16], [4, 16, 17, 70], "6 slopes with distinct middle values"),
        ([2, 4, 8, 16, 32], [3, 11, 29, 80, 170], "10 slopes"),
        ([2, 1000000], [1, 1000000000], "large scale and count"),
        ([2, 4, 8, 16, 32], [2**40, 2**41, 2**43, 2**44, 2**45], "large counts"),
    ]
    for scales, counts, comment in cases:
        m = len(scales) * (len(scales) - 1) // 2
        flags = ["median-even"] if m % 2 == 0 else ["median-odd"]
        f.case(comment, flags, {"scales": scales, "n_j": counts})
    f.group("Rejected")
    for scales, counts, comment in [
        ([2], [3], "one scale"),
        ([], [], "no scales"),
        ([4, 2], [3, 9], "decreasing scales"),
        ([2, 2], [3, 9], "repeated scale"),
        ([1, 2], [3, 9], "scale 1"),
        ([0, 2], [3, 9], "scale 0"),
        ([2, 4], [0, 9], "count 0"),
        ([2, 4], [-1, 9], "negative count"),
        ([2, 4, 8], [3, 9], "fewer counts than scales"),
        ([2, 4], [3, 9, 20], "more counts than scales"),
        ([2, 4.5], [3, 9], "non-integer scale"),
        ([2, 4], [3, 9.5], "non-integer count"),
        ([2, "4"], [3, 9], "scale as a string"),
        ([2, True], [3, 9], "scale true"),
        (list(range(2, 67)), [1] * 65, "65 scales (at most 64)"),
        ("2,4", [3, 9], "scales a string"),
    ]:
        f.case(comment, ["scales"], {"scales": scales, "n_j": counts}, "invalid")
    return f


def _budget() -> VectorFile:
    f = VectorFile("budget", "v1",
                   "((base + alpha*(1-r)) + beta*max(0, D_hat-D0)) + gamma*coh_star, clamped to [0, 1]; no FMA.")
    f.group("Default parameters")
    for d, c, r, comment, flags in [
        (1.23456789, 0.75, 0.5, "the v1 example's signals", ["v1-example"]),
        (0.528320834, 0.066666667, 0.318421053, "legacy record 1", ["legacy-record"]),
        (1.0, 0.2, 0.303088803, "legacy record 2", ["legacy-record"]),
        (2.2, 0.5, 0.5, "D_hat exactly D0", ["boundary"]),
        (2.2000000001, 0.5, 0.5, "D_hat just above D0", ["boundary"]),
        (3.0, 0.9, 0.1, "D_hat above D0", []),
        (4.0, 1.0, 0.0, "formula gives 1.5: clamped to 1", ["budget-clamp"]),
        (0.0, 0.0, 1.0, "lowest default budget: base only", []),
        (-1.0, 0.0, 1.0, "negative D_hat", []),
        (1.5, 0.7, 0.25, "regime boundary values", ["boundary"]),
        (2.9, 0.33, 0.61, "", []),
        (1.9, 0.123456789, 0.987654321, "", []),
    ]:
        f.case(comment or f"D_hat {d}, coh_star {c}, r {r}", flags, {"D_hat": d, "coh_star": c, "r": r})
    f.case("legacy record 1 reproduces its signed budget", ["legacy-record"],
           {"D_hat": 0.528320834, "coh_star": 0.066666667, "r": 0.318421053}, {"budget": "0.317807017"})
    f.group("Policy parameters")
    f.case("alpha 0: r has no effect", ["budget-params"], {"D_hat": 1.0, "coh_star": 0.5, "r": 0.9, "params": {"alpha": 0}})
    f.case("all parameters", ["budget-params"],
           {"D_hat": 2.5, "coh_star": 0.4, "r": 0.3, "params": {"base": 0.05, "alpha": 0.25, "beta": 0.4, "gamma": 0.3, "d0": 2.0}})
    f.case("negative base: clamped to 0", ["budget-params", "budget-clamp"],
           {"D_hat": 0.0, "coh_star": 0.0, "r": 1.0, "params": {"base": -0.5}})
    f.case("empty params object means defaults", ["budget-params"], {"D_hat": 1.0, "coh_star": 0.5, "r": 0.5, "params": {}})
    f.group("Rejected")
    f.case("D_hat NaN", ["nan-inf"], {"D_hat": f64(math.nan), "coh_star": 0.5, "r": 0.5}, "invalid")
    f.case("coh_star +Infinity", ["nan-inf"], {"D_hat": 1.0, "coh_star": f64(math.inf), "r": 0.5}, "invalid")
    f.case("r -Infinity", ["nan-inf"], {"D_hat": 1.0, "coh_star": 0.5, "r": f64(-math.inf)}, "invalid")
    f.case("coh_star 1.5", ["range"], {"D_hat": 1.0, "coh_star": 1.5, "r": 0.5}, "invalid")
    f.case("coh_star -0.1", ["range"], {"D_hat": 1.0, "coh_star": -0.1, "r": 0.5}, "invalid")
    f.case("r 1.0000001", ["range"], {"D_hat": 1.0, "coh_star": 0.5, "r": 1.0000001}, "invalid")
    f.case("r as a string", ["type"], {"D_hat": 1.0, "coh_star": 0.5, "r": "0.5"}, "invalid")
    f.case("unknown parameter", ["unknown-param"], {"D_hat": 1.0, "coh_star": 0.5, "r": 0.5, "params": {"delta": 1}}, "invalid")
    f.case("negative gamma", ["budget-params", "range"],
           {"D_hat": 1.0, "coh_star": 0.5, "r": 0.5, "params": {"gamma": -0.2}}, "invalid")
    f.case("parameter NaN", ["budget-params", "nan-inf"],
           {"D_hat": 1.0, "coh_star": 0.5, "r": 0.5, "params": {"beta": f64(math.nan)}}, "invalid")
    return f


def _regime() -> VectorFile:
    f = VectorFile("regime", "v1", "sticky if coh_star >= 0.70 and D_hat <= 1.5; else non_sticky if D_hat >= 2.6; else mixed.")
    f.group("Partition and boundaries")
    for d, c, want, flags in [
        (1.2, 0.8, "sticky", []),
        (1.5, 0.7, "sticky", ["boundary"]),
        (1.500000001, 0.7, "mixed", ["boundary"]),
        (1.5, 0.699999999, "mixed", ["boundary"]),
        (2.6, 0.5, "non_sticky", ["boundary"]),
        (2.599999999, 0.5, "mixed", ["boundary"]),
        (2.6, 0.95, "non_sticky", ["boundary"]),
        (3.5, 1.0, "non_sticky", []),
        (2.0, 0.9, "mixed", []),
        (0.0, 0.0, "mixed", []),
        (-0.5, 0.7, "sticky", []),
        (1.0, 1.0, "sticky", []),
        (2.2, 0.1, "mixed", []),
        (1.23456789, 0.75, "sticky", ["v1-example"]),
        (0.528320834, 0.066666667, "mixed", ["legacy-record"]),
        (100.0, 0.0, "non_sticky", []),
    ]:
        f.case(f"D_hat {d}, coh_star {c} -> {want}", flags, {"D_hat": d, "coh_star": c}, {"regime": want})
    f.group("Rejected")
    f.case("D_hat NaN", ["nan-inf"], {"D_hat": f64(math.nan), "coh_star": 0.5}, "invalid")
    f.case("coh_star NaN", ["nan-inf"], {"D_hat": 1.0, "coh_star": f64(math.nan)}, "invalid")
    f.case("D_hat -Infinity", ["nan-inf"], {"D_hat": f64(-math.inf), "coh_star": 0.9}, "invalid")
    f.case("coh_star 1.01", ["range"], {"D_hat": 1.0, "coh_star": 1.01}, "invalid")
    f.case("D_hat a string", ["type"], {"D_hat": "1.0", "coh_star": 0.5}, "invalid")
    return f


def _coherence() -> VectorFile:
    f = VectorFile("coherence", "v1", "coh_star with SplitMix64-sampled directions (optional op; SPEC.md section 7.4).")
    line = [[i / 10, 2 * i / 10] for i in range(11)]
    grid = [[x, y] for x in range(5) for y in range(5)]
    spiral = [[round(math.cos(t / 3) * t, 6), round(math.sin(t / 3) * t, 6)] for t in range(40)]
    cube = [[(i * 37 % 11) / 10, (i * 53 % 13) / 12, (i * 71 % 17) / 16] for i in range(60)]
    f.group("Default 100 directions and 20 bins")
    f.case("points on a line", [], {"points": line, "seed": 1})
    f.case("5x5 grid", [], {"points": grid, "seed": 42})
    for seed in (0, 1, 2**63, 2**64 - 1):
        f.case(f"spiral, seed {seed}", ["coherence-seed"], {"points": spiral, "seed": seed})
    f.case("3-D points", [], {"points": cube, "seed": 7})
    f.case("1-D points (directions are +1 or -1)", [], {"points": [[v] for v in (0, 1, 1, 2, 3, 5, 8, 13)], "seed": 3})
    f.case("all points equal: zero width", ["coherence-zero-width"], {"points": [[0.5, 0.5]] * 5, "seed": 9},
           {"coh_star": "1.000000000"})
    f.case("single point", ["coherence-zero-width"], {"points": [[1.0, 2.0, 3.0]], "seed": 9}, {"coh_star": "1.000000000"})
    f.case("one dimension constant", ["coherence-zero-width"], {"points": [[i, 4.0] for i in range(10)], "seed": 5})
    f.case("no points", [], {"points": [], "seed": 1}, {"coh_star": "0.000000000"})
    f.group("Parameters")
    f.case("5 directions, 4 bins", ["coherence-params"], {"points": spiral, "seed": 11, "n_directions": 5, "bins": 4})
    f.case("1 direction, 1 bin", ["coherence-params"], {"points": spiral, "seed": 11, "n_directions": 1, "bins": 1},
           {"coh_star": "1.000000000"})
    f.case("200 directions, 50 bins", ["coherence-params"], {"points": cube, "seed": 12, "n_directions": 200, "bins": 50})
    f.group("Rejected")
    f.case("seed -1", ["range"], {"points": line, "seed": -1}, "invalid")
    f.case("seed 2^64", ["range"], {"points": line, "seed": 2**64}, "invalid")
    f.case("seed as a string", ["type"], {"points": line, "seed": "1"}, "invalid")
    f.case("a NaN coordinate", ["nan-inf"], {"points": [[0.0, f64(math.nan)], [1.0, 1.0]], "seed": 1}, "invalid")
    f.case("ragged points", ["type"], {"points": [[0.0, 1.0], [1.0]], "seed": 1}, "invalid")
    f.case("9 dimensions (at most 8)", ["range"], {"points": [[0.0] * 9, [1.0] * 9], "seed": 1}, "invalid")
    f.case("bins 0", ["coherence-params", "range"], {"points": line, "seed": 1, "bins": 0}, "invalid")
    f.case("n_directions 0", ["coherence-params", "range"], {"points": line, "seed": 1, "n_directions": 0}, "invalid")
    f.group("Higher dimensions (rejection sampling in the unit ball)")
    for dim, seed in ((5, 21), (8, 22)):
        pts = [[((i + 1) * (k + 3) * 7919 % 101) / 100 for k in range(dim)] for i in range(30)]
        f.case(f"{dim}-D points", [], {"points": pts, "seed": seed})
    return f


BUILDERS = (
    _canonical_v1,
    _canonical_legacy,
    _fmt9,
    lambda: _sign_hmac("v1"),
    lambda: _sign_hmac("legacy-0.1"),
    lambda: _verify_hmac("v1"),
    lambda: _verify_hmac("legacy-0.1"),
    _sign_ed25519,
    _verify_ed25519,
    _pcs_id,
    lambda: _merkle("v1"),
    lambda: _merkle("legacy-0.1"),
    lambda: _d_hat("v1"),
    lambda: _d_hat("legacy-0.1"),
    _budget,
    _regime,
    _coherence,
)


def generate() -> dict[str, str]:
    """File name -> file text of every vector file (deterministic)."""
    out: dict[str, str] = {}
    for build in BUILDERS:
        vf = build()
        text = json.dumps(vf.document(), indent=1, ensure_ascii=True, allow_nan=False) + "\n"
        if vf.name in out:
            raise ValueError(f"duplicate vector file {vf.name}")
        out[vf.name] = text
    return out


def default_dir() -> pathlib.Path:
    """``spec/vectors`` of this checkout (or the installed ``flk.spec`` package)."""
    import flk.spec

    return pathlib.Path(flk.spec.__file__).resolve().parent / "vectors"


def _difference(path: pathlib.Path, text: str) -> str | None:
    """Why the file at ``path`` is not ``text`` (None: it is), compared as bytes: a damaged file
    that is not UTF-8 is one more difference, never a decode error."""
    data = path.read_bytes()
    if data == text.encode("utf-8"):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start}; damaged?), differs from what the core generates now"
    return "differs from what the core generates now"


def write(directory: pathlib.Path) -> list[str]:
    """Write every file; return the names that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in generate().items():
        path = directory / name
        if not path.exists() or _difference(path, text):
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def check(directory: pathlib.Path) -> list[str]:
    """Problems: files that regenerating would create, change, or that are not generated."""
    expected = generate()
    problems = []
    for name, text in expected.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing (run `flk vectors generate`)")
        elif why := _difference(path, text):
            problems.append(f"{name}: {why}")
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            if path.name not in expected:
                problems.append(f"{path.name}: not produced by the generator")
    return problems
