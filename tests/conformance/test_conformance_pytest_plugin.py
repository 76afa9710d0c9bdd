"""The pytest plugin (entry point ``pytest11: flk_conformance``) as an SDK would use it:
a separate pytest run in an empty directory, with only the installed package."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from flk.conformance.vectors import load_cases

TEST_FILE = '''
def test_flk_vector(flk_vector, flk_adapter):
    flk_adapter.check(flk_vector)
'''


def _pytest(tmp_path, *args: str, autoload: bool = False) -> subprocess.CompletedProcess:
    """pytest in ``tmp_path``; without autoload only this plugin is loaded (fast startup)."""
    (tmp_path / "test_sdk_vectors.py").write_text(TEST_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("FLK_ADAPTER", "PYTEST_ADDOPTS")}
    plugin = []
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        plugin = ["-p", "flk.conformance.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, "-rs", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )


def _count(out: str, word: str) -> int:
    m = re.search(rf"(\d+) {word}", out)
    return int(m.group(1)) if m else 0


def test_plugin_runs_vectors_through_an_adapter(tmp_path):
    proc = _pytest(tmp_path, "--flk-adapter", f"{sys.executable} -m flk.conformance.adapters.python",
                   "test_sdk_vectors.py", "--flk-ops", "fmt9,canonical_bytes")
    n = len(load_cases(profile="v1", operations=["fmt9", "canonical_bytes"]))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert _count(proc.stdout, "passed") == n


def test_plugin_failure_names_case_flags_and_diff(tmp_path):
    planted = os.path.join(os.path.dirname(__file__), "..", "quality", "conformance_adapters", "bug_negative_zero.py")
    proc = _pytest(tmp_path, "--flk-adapter", f"{sys.executable} {os.path.abspath(planted)}",
                   "test_sdk_vectors.py", "--flk-ops", "fmt9", "--flk-flags", "negative-zero")
    assert proc.returncode == 1
    assert _count(proc.stdout, "failed") >= 1
    assert "negative-zero" in proc.stdout and "first difference at byte 0" in proc.stdout
    assert "fmt9.v1#" in proc.stdout


def test_plugin_skips_unsupported_ops(tmp_path):
    misbehaving = os.path.join(os.path.dirname(__file__), "misbehaving_adapter.py")
    proc = _pytest(tmp_path, "--flk-adapter", f"{sys.executable} {os.path.abspath(misbehaving)} unsupported fmt9",
                   "test_sdk_vectors.py", "--flk-ops", "fmt9,regime")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert _count(proc.stdout, "skipped") == len(load_cases(profile="v1", operations=["fmt9"]))
    assert _count(proc.stdout, "passed") == len(load_cases(profile="v1", operations=["regime"]))
    assert "unsupported: " in proc.stdout


def test_plugin_without_adapter_fails_clearly(tmp_path):
    proc = _pytest(tmp_path, "test_sdk_vectors.py", "--flk-ops", "fmt9")
    assert proc.returncode == 1
    assert "need an adapter: pass --flk-adapter" in proc.stdout


def test_entry_point_autoloads_and_leaves_other_tests_alone(tmp_path):
    """The installed pytest11 entry point, no -p: the plugin is found and plain tests are unaffected."""
    (tmp_path / "test_other.py").write_text("def test_x():\n    assert True\n")
    proc = _pytest(tmp_path, "test_other.py", "test_sdk_vectors.py", "--flk-adapter", "builtin",
                   "--flk-ops", "regime", autoload=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert _count(proc.stdout, "passed") == 1 + len(load_cases(profile="v1", operations=["regime"]))
