"""``make test``'s leak check (scripts/check_temp_left.py): a planted leftover in the run's
temp folder fails it by name; pytest's and dask's own folders do not."""

from __future__ import annotations

import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "check_temp_left.py"


def _check(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, timeout=60)


def test_only_pytest_and_dask_folders_pass(tmp_path):
    (tmp_path / "pytest-of-root" / "pytest-0").mkdir(parents=True)
    (tmp_path / "dask-scratch-space").mkdir()
    (tmp_path / "dask-scratch-space" / "global.lock").write_text("")
    assert _check(tmp_path).returncode == 0


def test_a_planted_leftover_fails_by_name(tmp_path):
    (tmp_path / "pytest-of-root").mkdir()
    (tmp_path / "flk-demo-abc123").mkdir()
    (tmp_path / "stray.json").write_text("{}")
    done = _check(tmp_path)
    assert done.returncode == 1 and "flk-demo-abc123" in done.stderr and "stray.json" in done.stderr
    assert "pytest-of-root" not in done.stderr


def test_bad_usage_is_exit_2(tmp_path):
    assert _check(tmp_path / "missing").returncode == 2
