"""The compiled fast path of the core is byte-identical to the pure reference (INV-CANON).

``flk.impl.core._fastcore`` answers the common case of canonical bytes (profile
v1), HMAC-SHA256 and strict base64; the readable pure-Python code is the oracle.
Each test is marked with the registry entries (``flk.impl.core.accel``) it
compares, and fails if it never calls their compiled functions; the pure path
is switched with ``accel.pure()``.
Differential Hypothesis tests feed both arbitrary PCS-like inputs (every field
any JSON value, missing and extra keys, other mappings, tricky floats and
strings, arbitrary keys and signatures) and assert the same bytes, or the same
exception type, field and message. The frozen vectors are checked through both
paths, and a subprocess runs part of this folder with ``FLK_PURE=1`` so the
pure path keeps passing where the compiled one is the default.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import types
from collections.abc import Mapping

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flk.impl.core import accel, canonical, signing
from flk.impl.core.errors import InvalidInput
from flk.impl.lab import vectors

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLK = [sys.executable, "-m", "flk.impl"]
COMPILED = None if accel.entry("canonical_v1").compiled is None else accel.ACTIVE
BUILT = importlib.util.find_spec("flk.impl.core._fastcore") is not None
PURE_REQUESTED = os.environ.get("FLK_PURE", "") not in ("", "0")
IN_CI = os.environ.get("CI", "").lower() == "true"
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="compiled core not active (FLK_PURE=1 or not built)")
DIFF = settings(max_examples=500, deadline=None)


pure_core = accel.pure  # every consumer on the pure reference inside the block (the registry's switch)


def outcome(fn, *args):
    """What a call does: its value, or the exception's type, field and message."""
    try:
        return ("ok", fn(*args))
    except InvalidInput as exc:
        return ("invalid", exc.field, str(exc))
    except Exception as exc:  # noqa: BLE001 - the type must match too
        return ("raised", type(exc).__name__, str(exc))


def both_paths(fn, *args):
    """(compiled outcome, pure outcome) of the same call."""
    fast = outcome(fn, *args)
    with pure_core():
        slow = outcome(fn, *args)
    return fast, slow


# ------------------------------------------------------------ strategies

TIES = st.one_of(
    st.integers(-(10**7), 10**7).map(lambda j: j / 1024),  # halfway at the ninth decimal
    st.builds(lambda j, n: j / 2**n, st.integers(-(2**20), 2**20), st.integers(10, 60)),
)
SPECIAL_FLOATS = st.sampled_from(
    [0.0, -0.0, 0.9999999995, 0.9999999999, -2.9999999996, 2.0**52 + 0.5, 2.0**53 - 1, -1e-10, -4.9e-10, -5e-10, 5e-10, 1.5e-9, 2.5e-9, 1 / 1024, 0.1, 1e21, 2.0**53, 2.0**63,
     1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -5e-324, 2.2250738585072014e-308]
)
FLOATS = st.one_of(st.floats(), st.floats(allow_nan=False, allow_infinity=False, width=64), TIES, SPECIAL_FLOATS)
TRICKY = st.sampled_from(
    ['"', "\\", "\x7f", "\x00", "\x1f", "\x20", "\b", "\u2028", "\u2029", "\ud800", "\udfff", "\ufeff",
     "é", "ÿ", "Ā", "😀", "\U0010ffff", ":-0.000000000", "a" * 64, "}", ","]
)
STRINGS = st.one_of(
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True),
    st.text(max_size=12),
    st.text(st.characters(exclude_categories=()), max_size=8),  # lone surrogates included
    st.lists(st.one_of(TRICKY, st.text(max_size=3)), max_size=5).map("".join),
)
EPOCHS = st.one_of(
    st.integers(0, 2**53 - 1),
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 0, 2**53 - 1, 2**53, 2**63, 2**64, True, False, 1.0, "1", None]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**1100), 2**1100) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
TYPICAL = {
    "D_hat": FLOATS, "budget": FLOATS, "coh_star": FLOATS, "r": FLOATS, "epoch": EPOCHS,
    "merkle_root": STRINGS, "pcs_id": STRINGS, "shard_id": STRINGS,
}


class PlainMapping(Mapping):
    """A Mapping that is not a dict."""

    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


class DictSubclass(dict):
    pass


WRAPPERS = st.sampled_from(
    [dict, dict, dict, DictSubclass, collections.OrderedDict, types.MappingProxyType, PlainMapping,
     lambda d: list(d.items())]
)


@st.composite
def pcs_like(draw):
    """A PCS-like subset: mostly typical values, any field may be any JSON value, missing or extra."""
    out = {}
    for key, typical in TYPICAL.items():
        choice = draw(st.integers(0, 19))
        if choice == 0:
            continue  # missing
        out[key] = draw(JSON_VALUES) if choice == 1 else draw(typical)
    extras = draw(st.dictionaries(st.sampled_from(["sig", "seed", "ft", "version", "extra", "D_hat "]), JSON_VALUES,
                                  max_size=3))
    for key, value in extras.items():
        out.setdefault(key, value)
    return draw(WRAPPERS)(out)


def valid_subset(floats=st.floats(allow_nan=False, allow_infinity=False)):
    plain = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\', min_codepoint=0x20))
    return st.fixed_dictionaries(
        {"pcs_id": plain, "merkle_root": plain, "epoch": st.integers(0, 2**53 - 1), "shard_id": plain,
         "D_hat": floats, "coh_star": floats, "r": floats, "budget": floats}
    )


BASE = {
    "pcs_id": "c50bb25a7aff94164147b73c846f0e5e10890d75df204875ca70c448f52c6edf",
    "merkle_root": "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112",
    "epoch": 1, "shard_id": "shard-001", "D_hat": 1.234567891, "coh_star": 0.75, "r": 0.318421053, "budget": 0.35,
}


@st.composite
def near_common(draw):
    """A valid subset (the case the compiled path takes) with one or two fields made tricky."""
    out = draw(valid_subset())
    for key in draw(st.lists(st.sampled_from(sorted(TYPICAL)), min_size=1, max_size=2)):
        out[key] = draw(st.one_of(TYPICAL[key], TRICKY if key in canonical.STRING_FIELDS else TYPICAL[key]))
    return out


# ------------------------------------------------------------ the switch

def test_core_path_follows_the_flk_pure_switch():
    if PURE_REQUESTED:
        assert canonical.CORE_PATH == "pure" and COMPILED is None
    elif IN_CI:  # CI installs gcc and the headers: a silent fallback there is a broken build
        assert canonical.CORE_PATH == "compiled", "the compiled core was not built; see the pip install warning"
    elif COMPILED is None:
        pytest.skip("compiled core not built here (no C compiler or headers)")
    else:
        assert canonical.CORE_PATH == "compiled"


@pytest.mark.parametrize("pure", [False, True])
def test_version_and_bench_say_which_core_path_is_active(pure):
    env = {k: v for k, v in os.environ.items() if k != "FLK_PURE"}
    if pure:
        env["FLK_PURE"] = "1"
    expected = "pure" if pure or not BUILT else "compiled"
    version = subprocess.run([*FLK, "--version"], capture_output=True, text=True, timeout=60, env=env, check=True)
    first, second = version.stdout.strip().splitlines()
    assert first.endswith(f"(core: {expected})"), version.stdout
    names = [d.rsplit(".", 1)[1] for d in accel.EXTENSIONS]
    if pure:
        assert second == f"compiled: none; pure: {', '.join(names)} (FLK_PURE set)", second
    elif IN_CI:  # CI builds every extension: each one is named active
        assert second == f"compiled: {', '.join(names)}; pure: none", second
    bench = subprocess.run([*FLK, "bench", "canon", "--json", "--quick", "--repeat", "1"],
                           capture_output=True, text=True, timeout=120, env=env, check=True)
    assert json.loads(bench.stdout)["core_path"] == expected


def test_extensions_list_is_what_setup_builds():
    setup_py = (pathlib.Path(__file__).resolve().parents[2] / "setup.py").read_text()
    built = set(re.findall(r'Extension\(\s*(?:#[^\n]*\n\s*)?"([\w.]+)"', setup_py))
    assert built == set(accel.EXTENSIONS)


# ------------------------------------------------------------ canonical bytes

@pytest.mark.differential("canonical_v1")
@needs_compiled
@DIFF
@given(st.one_of(pcs_like(), near_common()), st.sampled_from(["v1", "v1", "legacy-0.1", "v2", None]))
@example(dict(BASE, D_hat=-0.0), "v1")
@example(dict(BASE, D_hat=0.9999999999, r=-2.9999999996, budget=2.0**53 - 0.5, coh_star=2.0**53), "v1")
@example(dict(BASE, epoch=2**53), "v1")
@example(dict(BASE, epoch=2**53 - 1), "v1")
@example(dict(BASE, pcs_id="a\\b"), "v1")
@example(dict(BASE, merkle_root='a"b'), "v1")
@example(dict(BASE, shard_id="a\x1fb\x7f"), "v1")
@example(dict(BASE, r=-4.9e-10), "v1")
@example(dict(BASE, budget=1 / 1024), "v1")
@example(dict(BASE, shard_id="a\u2028b\ud800"), "v1")
@example(dict(BASE, epoch=True), "v1")
@example(dict(BASE, coh_star=1), "v1")
def test_inv_canon_compiled_and_pure_canonical_bytes_agree(subset, profile):
    fast, slow = both_paths(canonical.canonical_bytes, subset, profile)
    assert fast == slow
    assert slow == outcome(canonical.canonical_bytes_careful, subset, profile)
    direct = COMPILED.canonical_v1(subset)
    assert direct is None or ("ok", direct) == outcome(canonical.canonical_bytes_careful, subset, "v1")


@pytest.mark.differential("canonical_v1")
@needs_compiled
@DIFF
@given(valid_subset(st.one_of(FLOATS.filter(lambda x: x - x == 0), TIES)))
def test_inv_canon_compiled_path_takes_every_common_case(subset):
    """Valid dicts with plain strings never fall back (the fast path is really used), bytes equal."""
    raw = COMPILED.canonical_v1(subset)
    assert raw is not None
    assert raw == canonical.canonical_bytes_careful(subset) == canonical.pure_canonical_bytes(subset)


@pytest.mark.differential("canonical_v1")
@needs_compiled
@pytest.mark.parametrize("value", [-0.0, -1e-10, -4.999999e-10, -5e-324])
def test_inv_canon_negative_zero_is_written_as_zero_on_the_compiled_path(value):
    raw = COMPILED.canonical_v1(dict(BASE, D_hat=value))
    assert raw.startswith(b'{"D_hat":0.000000000,'), raw
    assert canonical.fmt9(value) == "0.000000000"


# ------------------------------------------------------------ HMAC and base64

@pytest.mark.differential("hmac_sha256_b64")
@needs_compiled
@DIFF
@given(st.binary(min_size=1, max_size=200), st.binary(max_size=600))
@example(b"k" * 64, b"")
@example(b"k" * 65, b"msg")
def test_compiled_hmac_equals_the_standard_library(key, msg):
    want = base64.b64encode(hmac.digest(key, msg, "sha256")).decode("ascii")
    assert COMPILED.hmac_sha256_b64(key, msg) == signing.pure_hmac_b64(key, msg) == want


@pytest.mark.differential("hmac_sha256_any")
@needs_compiled
@DIFF
@given(st.lists(st.binary(min_size=1, max_size=100), max_size=4), st.binary(max_size=300),
       st.one_of(st.binary(max_size=40), st.just(None)), st.data())
def test_compiled_hmac_any_equals_the_pure_loop(keys, msg, expected, data):
    if expected is None:  # the right digest under one of the keys, or a key not in the list
        key = data.draw(st.one_of(st.sampled_from(keys), st.binary(min_size=1))) if keys else b"x"
        expected = hmac.digest(key, msg, "sha256")
    assert COMPILED.hmac_sha256_any(keys, msg, expected) == signing.pure_hmac_any(keys, msg, expected)


B64_TEXT = st.one_of(
    st.binary(max_size=70).map(lambda raw: base64.b64encode(raw).decode("ascii")),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=48),
    st.text(max_size=48),
)


@st.composite
def mutated_b64(draw):
    text = draw(B64_TEXT)
    if text and draw(st.booleans()):
        at = draw(st.integers(0, len(text) - 1))
        char = draw(st.sampled_from("AB+/=\n -_é\x00\ud800") | st.characters())
        text = text[:at] + char + text[at + 1:]
    return text


@pytest.mark.differential("b64decode_canonical")
@needs_compiled
@DIFF
@given(st.one_of(mutated_b64(), JSON_VALUES, st.binary(max_size=10)), st.sampled_from([None, 0, 1, 2, 32, 64]))
@example("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", 32)  # trailing bits set
@example("AB==", None)
@example("AA==", None)
@example("", None)
@example("AAAA\n", None)
def test_compiled_b64decode_agrees_with_the_pure_reference(text, length):
    fast, slow = both_paths(signing.b64decode_strict, text, length, "sig")
    assert fast == slow
    assert slow == outcome(signing.pure_b64decode_strict, text, length, "sig")
    direct = COMPILED.b64decode_canonical(text)
    assert direct is None or ("ok", direct) == outcome(signing.pure_b64decode_strict, text, None, "sig")


# ------------------------------------------------------------ sign_hmac / verify_hmac end to end

KEYS = st.one_of(
    st.binary(max_size=100), st.text(max_size=8), st.binary(max_size=20).map(bytearray), st.integers(), st.none()
)


@pytest.mark.differential("canonical_v1", "hmac_sha256_b64")
@needs_compiled
@DIFF
@given(pcs_like(), KEYS, st.sampled_from(["v1", "v1", "legacy-0.1", "bogus"]))
def test_sign_hmac_is_the_same_on_both_paths(subset, key, profile):
    fast, slow = both_paths(signing.sign_hmac, subset, key, profile)
    assert fast == slow
    if fast[0] == "ok":
        msg = canonical.canonical_bytes_careful(subset, profile)
        raw_key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        assert fast[1] == base64.b64encode(hmac.digest(raw_key, msg, "sha256")).decode("ascii")


@st.composite
def verify_case(draw):
    subset = draw(pcs_like())
    key_list = draw(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=3))
    keys = draw(st.sampled_from([list, tuple, set, lambda k: k[0], lambda k: [*k, b""], lambda k: [*k, "text-key"],
                                 lambda k: [*k, bytearray(b"ba")], lambda k: None]))(key_list)
    signer = draw(st.one_of(st.sampled_from(key_list), st.binary(min_size=1, max_size=10)))
    try:
        sig = base64.b64encode(hmac.digest(signer, canonical.canonical_bytes_careful(subset), "sha256")).decode()
    except Exception:  # noqa: BLE001 - an invalid subset: any signature will do
        sig = "A" * 43 + "="
    spliced = mutated_b64().map(lambda text: sig[:-2] + text[:2])
    sig = draw(st.one_of(st.just(sig), spliced, mutated_b64(), JSON_VALUES, st.just(sig + "\n"), st.just(sig[:-1])))
    return subset, sig, keys


@pytest.mark.differential("hmac_sha256_any")
@needs_compiled
@DIFF
@given(verify_case(), st.sampled_from(["v1", "v1", "legacy-0.1"]))
def test_verify_hmac_is_the_same_on_both_paths(case, profile):
    subset, sig, keys = case
    fast, slow = both_paths(signing.verify_hmac, subset, sig, keys, profile)
    assert fast == slow


@pytest.mark.differential("canonical_v1", "hmac_sha256_any", "hmac_sha256_b64")
@needs_compiled
def test_verify_hmac_accepts_a_rotated_key_and_rejects_a_wrong_one_on_both_paths():
    sig = signing.sign_hmac(BASE, b"new-key")
    for run in (contextlib.nullcontext, pure_core):
        with run():
            assert signing.verify_hmac(BASE, sig, [b"old-key", b"new-key"])
            assert not signing.verify_hmac(BASE, sig, [b"old-key"])
            assert not signing.verify_hmac(dict(BASE, epoch=2), sig, [b"new-key"])


# ------------------------------------------------------------ vectors and the pure path

@pytest.mark.differential("canonical_v1")
def test_every_frozen_vector_matches_through_both_paths():
    assert vectors.check(vectors.default_dir()) == []
    with pure_core():
        assert vectors.check(vectors.default_dir()) == []


def test_ed25519_message_uses_the_same_bytes_on_both_paths():
    fast = signing.ed25519_message(BASE)
    with pure_core():
        assert signing.ed25519_message(BASE) == fast == hashlib.sha256(canonical.canonical_bytes_careful(BASE)).digest()


PURE_SUBSET = {
    "foundation": ["test_fastcore.py", "test_vectors.py", "test_core_properties.py", "test_core_errors.py",
                   "test_constant_time.py"],
    # the verify core's accelerated paths (parse, validation, signals) have pure twins: the
    # pipeline's own tests must pass on them alone too
    "verifier": ["test_fastpaths.py", "test_pipeline.py", "test_total_function.py", "test_schema_agreement.py",
                 "test_fastpath_differential.py"],
}


@pytest.mark.skipif(PURE_REQUESTED, reason="this is the pure run itself")
@pytest.mark.parametrize("folder", sorted(PURE_SUBSET))
def test_tests_pass_on_the_pure_path(folder):
    """``make test`` covers the pure path: part of the suite again, in a process with FLK_PURE=1."""
    env = dict(os.environ, FLK_PURE="1")
    paths = [str(ROOT / "tests" / folder / name) for name in PURE_SUBSET[folder]]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
