"""Every planted-bug adapter (tests/quality/conformance_adapters/) is caught
by the real vectors, with the flag naming its pitfall in the per-flag summary.

This is the quality check of the kit itself (Hypothesis' ``quality/`` idea):
a vector set that lets one of these classic mistakes through is a defect.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from flk.conformance import runner
from flk.conformance.adapter_io import ProcessAdapter
from flk.conformance.vectors import load_cases

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLANTED = ROOT / "tests" / "quality" / "conformance_adapters"
VECTORS = ROOT / "spec" / "vectors"

# adapter file -> the flag that must appear in the per-flag summary
EXPECTED = {
    "bug_struct_key_order.py": "key-order",
    "bug_shortest_float.py": "shortest-repr",
    "bug_half_up.py": "half-up",
    "bug_x1e9_rounding.py": "x1e9-rounding",
    "bug_hmac_prehash.py": "prehash",
    "bug_lenient_base64.py": "base64-strict",
    "bug_ascii_escape.py": "unicode-escape",
    "bug_negative_zero.py": "negative-zero",
    "bug_integer_valued.py": "integer-valued",
    "bug_exponent_form.py": "large-value",
    "bug_truncation.py": "truncation",
    "bug_line_separator_escape.py": "unicode-escape",
    "bug_del_escape.py": "control-char",
    "bug_html_escape.py": "html-escape",
    "bug_nan_as_null.py": "nan-inf",
}


def _flag_declared(path: pathlib.Path) -> str:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    sys.path.insert(0, str(PLANTED))
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(PLANTED))
    return mod.FLAG


def test_every_planted_adapter_is_listed():
    assert sorted(p.name for p in PLANTED.glob("bug_*.py")) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def v1_cases():
    cases = load_cases(VECTORS, profile="v1")
    assert len(cases) > 100, "spec/vectors must hold the v1 vectors"
    return cases


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_planted_bug_is_caught_with_its_flag(name, v1_cases):
    path = PLANTED / name
    flag = EXPECTED[name]
    assert _flag_declared(path) == flag
    report = runner.run_cases(ProcessAdapter([sys.executable, str(path)]), v1_cases, timeout=20)
    assert not report.broken
    assert report.exit_code == 1
    failed = report.failed_flags()
    assert flag in failed, f"{name}: {flag} not among failed flags {failed}"
    text = runner.format_text(report)
    st = report.flag_stats()[flag]
    assert f"  {flag}: {st['fail']} failed of {st['run']} -- " in "\n".join(text)
    assert text[-1] == report.summary_line()
    # the planted bug breaks only some cases: the adapter is otherwise the reference
    assert report.counts()[0] > 0
