"""Every planted-bug adapter (tests/quality/conformance_adapters/) declares the
flag naming its pitfall; tests/quality/test_conformance_diagnosis.py runs each
one and checks that flag fails and is explained in the per-flag summary.

This is the quality check of the kit itself (Hypothesis' ``quality/`` idea):
a vector set that lets one of these classic mistakes through is a defect.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

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
    "bug_any_key_order.py": "key-order",
    "bug_epoch_int64.py": "epoch-range",
    "bug_base64_whitespace.py": "base64-strict",
    "bug_x1e9_python_round.py": "x1e9-rounding",
    "bug_round_then_shortest.py": "float-format",
    "bug_tie_away.py": "round-tie",
    "bug_pretty_hmac.py": "v1-example",
    "bug_verdict_not_error.py": "nan-inf",
    "bug_surrogate_replaced.py": "surrogate",
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


def test_every_planted_adapter_declares_its_flag():
    """The run itself (flag among the failed flags, per-flag line) is checked once per
    adapter, with its diagnosis, in tests/quality/test_conformance_diagnosis.py."""
    for name, flag in EXPECTED.items():
        assert _flag_declared(PLANTED / name) == flag, name
