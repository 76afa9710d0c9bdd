"""The Rust reference adapter (conformance/adapters/rust/) passes every vector, natively and as WASM.

It offers every required op and coherence under both profiles (its own Ed25519 over the packaged
sha2, the signal ops, legacy-0.1's half-up floats and hex Merkle tree), so no vector is skipped;
the Hypothesis tests compare the ops with the Python core.

The crate is built by its build.sh with Debian's /usr/bin/cargo and /usr/bin/rustc and the
Debian-packaged crates, offline (scripts/install_rust.sh, run by `make setup`, installs them);
the same code compiled for wasm32-unknown-unknown runs under Node through
conformance/adapters/wasm/host.mjs. Without the toolchain these tests skip, except under
CI=true, where a missing toolchain fails. The build goes to build/conformance-rust (ignored by
git), so a second run only relinks what changed.
"""

from __future__ import annotations

import base64
import os
import pathlib
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from flk.conformance import runner
from flk.conformance.adapter_io import ProcessAdapter
from flk.conformance.vectors import Case, decode_input, json_number, load_cases
from flk.impl.core import canonical
from flk.impl.core.errors import InvalidInput

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRATE = ROOT / "conformance" / "adapters" / "rust"
HOST = ROOT / "conformance" / "adapters" / "wasm" / "host.mjs"
TARGET = ROOT / "build" / "conformance-rust"
IN_CI = os.environ.get("CI") == "true"
V1_OPS = {"canonical_bytes", "fmt9", "sign_hmac", "verify_hmac", "sign_ed25519", "verify_ed25519", "pcs_id",
          "merkle_root", "d_hat", "budget", "regime", "coherence"}


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} missing: make setup runs scripts/install_rust.sh")
    pytest.skip(f"{what} missing (make setup runs scripts/install_rust.sh)")


@pytest.fixture(scope="module")
def built() -> dict[str, pathlib.Path]:
    if not pathlib.Path("/usr/bin/cargo").exists() or not pathlib.Path("/usr/bin/rustc").exists():
        _missing("Debian's rustc/cargo")
    if not pathlib.Path("/usr/lib/rustlib/wasm32-unknown-unknown").is_dir():
        _missing("libstd-rust-dev-wasm32")
    build = subprocess.run(["bash", str(CRATE / "build.sh"), str(TARGET)], capture_output=True, text=True,
                           timeout=1200)
    assert build.returncode == 0, build.stderr[-3000:]
    return {"native": TARGET / "release" / "flk-rust-adapter",
            "wasm": TARGET / "wasm32-unknown-unknown" / "release" / "flk_pcs.wasm"}


@pytest.fixture(scope="module")
def all_cases():
    return load_cases(ROOT / "spec" / "vectors")


def _command(kind: str, built: dict[str, pathlib.Path]) -> list[str]:
    if kind == "native":
        return [str(built["native"])]
    node = shutil.which("node")
    if node is None:
        _missing("node")
    return [node, str(HOST), str(built["wasm"])]


@pytest.mark.parametrize("kind", ["native", "wasm"])
def test_rust_adapter_passes_every_vector(kind, built, all_cases):
    report = runner.run_cases(ProcessAdapter(_command(kind, built)), all_cases, timeout=20)
    failures = [f"{r.case.case_id}: {r.message}" for r in report.results if r.status == "fail"]
    assert not failures, "\n".join(failures[:20])
    assert report.exit_code == 0 and report.problems == [] and not report.broken
    assert set(report.hello["ops"]) == V1_OPS and report.hello["profiles"] == ["v1", "legacy-0.1"]
    assert {c.operation for c in all_cases} == V1_OPS  # it declares every op the vectors hold
    statuses = {r.case.case_id: r.status for r in report.results}
    assert {c.case_id for c in all_cases} <= set(statuses)
    # every vector answered as expected: pass, or for a tolerance case the expected (acceptable) answer
    assert {statuses[c.case_id] for c in all_cases} <= {"pass", "acceptable"}
    assert all(statuses[c.case_id] == "pass" for c in all_cases if c.result != "acceptable")
    assert sum(c.profile == "legacy-0.1" for c in all_cases) > 0  # both profiles were run
    assert any(r.case.source == "runner" and r.status == "pass" for r in report.results)  # and the base64 probes
    assert [r.case.case_id for r in report.results if r.status in ("skip", "n/a")] == []


def test_native_and_wasm_answer_byte_for_byte_alike(built, all_cases):
    """One signer, two targets: the canonical bytes and signatures are the same bytes."""
    cases = [c for c in all_cases if c.profile == "v1" and c.operation in ("canonical_bytes", "sign_hmac",
                                                                          "sign_ed25519", "d_hat", "coherence")]
    outputs = []
    for kind in ("native", "wasm"):
        report = runner.run_cases(ProcessAdapter(_command(kind, built)), cases, timeout=20, probes=False)
        outputs.append([r.output for r in report.results])
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(cases)


finite = st.floats(allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module", params=["native", "wasm"])
def rust_driver(request, built):
    """Both targets: the wasm32 build has its own libm (log2 in D-hat) and 32-bit pointers."""
    driver = runner.CaseDriver(ProcessAdapter(_command(request.param, built)), timeout=20)
    driver.start()
    yield driver
    driver.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=finite | st.integers(-10**30, 10**30))
def test_rust_fmt9_equals_the_reference_on_any_float(rust_driver, x):
    """Differential: the exact-arithmetic fmt9 of the Rust signer against the Python core."""
    case = Case("fmt9", "v1", 1, "", (), {"x": json_number(x)}, "valid", {"text": canonical.fmt9(x)})
    result = rust_driver.run(case, control=False)
    assert result.status == "pass", (x, result.message)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subset=st.fixed_dictionaries({
    "D_hat": finite, "budget": finite, "coh_star": finite, "r": finite,
    "epoch": st.integers(0, 2**53 - 1), "merkle_root": st.text(max_size=8),
    "pcs_id": st.text(st.characters(blacklist_categories=("Cs",)), max_size=8), "shard_id": st.text(max_size=8)}))
def test_rust_canonical_bytes_equal_the_reference(rust_driver, subset):
    subset = {k: json_number(v) for k, v in subset.items()}
    try:
        want = {"bytes_b64": base64.b64encode(canonical.canonical_bytes(decode_input(subset))).decode()}
    except InvalidInput:  # a lone surrogate: refused by both
        want = None
    case = Case("canonical_bytes", "v1", 1, "", (), {"subset": subset}, "valid" if want else "invalid", want or {})
    result = rust_driver.run(case, control=False)
    assert result.status == "pass", (subset, result.message)


def _agrees_with_the_reference(driver, op: str, inp: dict, profile: str = "v1") -> None:
    """The Rust answer to ``op`` equals the Python core's (output, or an invalid_input refusal)."""
    from flk.conformance.ops import handle

    ref = handle({"id": 1, "op": op, "profile": profile, "input": inp})
    assert ref["ok"] or ref["error"]["kind"] == "invalid_input", ref
    result = "valid" if ref["ok"] and ref["output"].get("valid", True) is not False else "invalid"
    case = Case(op, profile, 1, "", (), inp, result, ref["output"] if ref["ok"] else {})
    got = driver.run(case, control=False)
    assert got.status == "pass", (op, inp, ref, got.message)


unit_floats = st.floats(0.0, 1.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=finite, coh=unit_floats, r=unit_floats | finite,
       params=st.none() | st.dictionaries(st.sampled_from(["base", "alpha", "beta", "gamma", "d0"]),
                                          st.floats(-2.0, 4.0), max_size=3))
def test_rust_budget_and_regime_equal_the_reference(rust_driver, d, coh, r, params):
    inp = {"D_hat": json_number(d), "coh_star": json_number(coh), "r": json_number(r)}
    if params is not None:
        inp["params"] = {k: json_number(v) for k, v in params.items()}
    _agrees_with_the_reference(rust_driver, "budget", inp)
    _agrees_with_the_reference(rust_driver, "regime", inp)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.integers(2, 2**40), st.integers(1, 2**40)), min_size=1, max_size=12))
def test_rust_d_hat_equals_the_reference(rust_driver, pairs):
    scales = sorted({s for s, _ in pairs})
    counts = [n for _, n in pairs][: len(scales)]
    counts += [1] * (len(scales) - len(counts))
    _agrees_with_the_reference(rust_driver, "d_hat", {"scales": scales, "n_j": counts})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dim=st.integers(1, 3), data=st.data(), seed=st.integers(0, 2**64 - 1), bins=st.integers(1, 30))
def test_rust_coherence_equals_the_reference(rust_driver, dim, data, seed, bins):
    rows = data.draw(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=dim, max_size=dim), max_size=25))
    points = [[json_number(x) for x in row] for row in rows]
    _agrees_with_the_reference(rust_driver, "coherence", {"points": points, "seed": seed, "bins": bins,
                                                          "n_directions": 20})


SUBSET = {"D_hat": 1.412345678, "budget": 0.402155142, "coh_star": 0.734, "epoch": 7,
          "merkle_root": "f574bf7e80c25692454dc23f6fd03b664a52d568d7cb4fff06430d6ccaf5ada9",
          "pcs_id": "73406ddc1fa0ebc697648be84c666105b562106889fb5bf1c5ee8dbcb53711f2", "r": 0.318421053,
          "shard_id": "shard-007"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.binary(min_size=32, max_size=32), d=finite, flip=st.none() | st.integers(0, 511),
       other=st.binary(min_size=32, max_size=32))
def test_rust_ed25519_equals_the_reference(rust_driver, seed, d, flip, other):
    """Signatures byte for byte; verdicts on the signature with one bit flipped and on arbitrary keys."""
    from flk.impl.core import signing

    subset = dict(SUBSET, D_hat=json_number(d))
    _agrees_with_the_reference(rust_driver, "sign_ed25519",
                               {"subset": subset, "private_key_b64": base64.b64encode(seed).decode()})
    sig = bytearray(base64.b64decode(signing.sign_ed25519(decode_input(subset), seed)))
    if flip is not None:
        sig[flip // 8] ^= 1 << (flip % 8)
    keys = [base64.b64encode(signing.public_key_bytes(seed)).decode()]
    try:  # an arbitrary 32 bytes: a point or not (the reference refuses what it cannot decode)
        signing.verify_ed25519(decode_input(SUBSET), base64.b64encode(bytes(64)).decode(), [other])
        keys.append(base64.b64encode(other).decode())
    except InvalidInput:
        pass
    _agrees_with_the_reference(rust_driver, "verify_ed25519",
                               {"subset": subset, "sig": base64.b64encode(bytes(sig)).decode(),
                                "public_keys_b64": keys})


P25519 = 2**255 - 19
NON_CANONICAL_KEYS = [(P25519 + 1).to_bytes(32, "little"), (1 | 1 << 255).to_bytes(32, "little"),
                      (P25519 - 1 | 1 << 255).to_bytes(32, "little")]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=finite, key=st.sampled_from(NON_CANONICAL_KEYS))
def test_rust_and_the_reference_refuse_lenient_forgeries(rust_driver, d, key):
    """The verify_ed25519 ``non-canonical-key`` vectors over any subset: a signature that OpenSSL's
    lenient decoding accepts (vectors.lenient_forgery checks that) is not valid in the Python
    reference, the native build or the wasm32 build."""
    from flk.impl.core import signing
    from flk.impl.lab.vectors import lenient_forgery

    subset = dict(SUBSET, D_hat=json_number(d))
    sig = lenient_forgery(key, signing.ed25519_message(decode_input(subset)))
    assume(sig is not None)  # the order-2 key has no forgery for about one message in four
    inp = {"subset": subset, "sig": base64.b64encode(sig).decode(), "public_keys_b64": [base64.b64encode(key).decode()]}
    assert signing.verify_ed25519(decode_input(subset), inp["sig"], [key]) is False
    _agrees_with_the_reference(rust_driver, "verify_ed25519", inp)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=finite | st.builds(lambda k, j: k * 2.0**j + 0.25, st.integers(1, 2**40), st.integers(-8, 12)),
       y=st.floats(-1e-3, 1e-3) | st.floats(1e14, 1e18) | st.integers(-10**20, 10**20),
       shard=st.text(st.characters(blacklist_categories=("Cs",)), max_size=6))
@example(x=562949953421312.25, y=562949953421312.75, shard="\U0001f600")
def test_rust_legacy_canonical_bytes_equal_the_reference(rust_driver, x, y, shard):
    """legacy-0.1: half-up on the shortest decimal, Python's repr, ASCII escapes -- against the Python core.
    (x + 0.25 hits repr's ties: 562949953421312.25 is "...312.2" in Python, "...312.3" from Rust's writer.)"""
    subset = dict(SUBSET, D_hat=json_number(x), r=json_number(y), shard_id=shard)
    _agrees_with_the_reference(rust_driver, "canonical_bytes", {"subset": subset}, "legacy-0.1")


@pytest.mark.parametrize("kind", ["native", "wasm"])
def test_rust_ed25519_decodes_public_keys_strictly(kind, built):
    """RFC 8032 section 5.1.3 (SPEC.md section 4.2): y >= p and x = 0 with the sign bit set do not
    decode, so nothing verifies under them; a canonical key verifies as the cofactorless equation says."""
    identity = bytes([1]) + bytes(31)
    y_above_p = bytes([0xEE]) + b"\xff" * 30 + b"\x7f"  # y = p + 1, the identity's non-canonical twin
    minus_zero = bytes([1]) + bytes(30) + b"\x80"
    sig = base64.b64encode(identity + bytes(32)).decode()  # R = identity, S = 0: [0]B == R + [k]identity
    cases = [Case("verify_ed25519", "v1", i, "", (), {"subset": SUBSET, "sig": sig,
                                                      "public_keys_b64": [base64.b64encode(key).decode()]},
                  "valid" if valid else "invalid", {"valid": valid})
             for i, (key, valid) in enumerate([(identity, True), (y_above_p, False), (minus_zero, False)])]
    report = runner.run_cases(ProcessAdapter(_command(kind, built)), cases, timeout=20, probes=False)
    assert [r.status for r in report.results] == ["pass"] * 3, [r.message for r in report.results]
