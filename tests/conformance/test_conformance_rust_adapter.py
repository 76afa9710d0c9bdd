"""The Rust reference adapter (conformance/adapters/rust/) passes every vector, natively and as WASM.

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
from hypothesis import HealthCheck, given, settings
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
SIGNER_OPS = {"canonical_bytes", "fmt9", "sign_hmac", "verify_hmac", "pcs_id", "merkle_root"}


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
def test_rust_adapter_passes_every_vector_of_its_ops(kind, built, all_cases):
    report = runner.run_cases(ProcessAdapter(_command(kind, built)), all_cases, timeout=20)
    failures = [f"{r.case.case_id}: {r.message}" for r in report.results if r.status == "fail"]
    assert not failures, "\n".join(failures[:20])
    assert report.exit_code == 0 and report.problems == [] and not report.broken
    assert set(report.hello["ops"]) == SIGNER_OPS and report.hello["profiles"] == ["v1"]
    ran = [r for r in report.results if r.status == "pass"]
    v1_signer = [c for c in all_cases if c.profile == "v1" and c.operation in SIGNER_OPS]
    assert {r.case.case_id for r in ran} >= {c.case_id for c in v1_signer}  # every vector of its ops, none skipped
    assert any(r.case.source == "runner" for r in ran)  # and the self-consistent base64 probes
    skipped = {r.case.operation for r in report.results if r.status == "skip" and r.case.profile == "v1"}
    assert not skipped & SIGNER_OPS  # (legacy-0.1 is not declared: skipped)


def test_native_and_wasm_answer_byte_for_byte_alike(built, all_cases):
    """One signer, two targets: the canonical bytes and signatures are the same bytes."""
    cases = [c for c in all_cases if c.profile == "v1" and c.operation in ("canonical_bytes", "sign_hmac")]
    outputs = []
    for kind in ("native", "wasm"):
        report = runner.run_cases(ProcessAdapter(_command(kind, built)), cases, timeout=20, probes=False)
        outputs.append([r.output for r in report.results])
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(cases)


finite = st.floats(allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def rust_driver(built):
    driver = runner.CaseDriver(ProcessAdapter([str(built["native"])]), timeout=20)
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
