"""The vectors and the kit ship inside the wheel, and load from the installed package."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from flk.conformance import vectors
from flk.conformance.vectors import load_cases, vector_files, vectors_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_vectors_dir_prefers_the_package_data():
    d = vectors_dir()
    assert d.is_dir() and len(vector_files(d)) >= 10
    assert {c.operation for c in load_cases(d)} >= {"canonical_bytes", "fmt9", "verify_hmac", "merkle_root"}


def test_vectors_dir_falls_back_to_the_checkout(monkeypatch):
    def no_package(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(vectors.resources, "files", no_package)
    assert vectors_dir() == ROOT / "spec" / "vectors"


@pytest.mark.slow
def test_wheel_ships_vectors_node_adapter_and_plugin(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, src / name)
    for root in ("model", "sim", "impl", "conformance", "formal", "spec"):
        shutil.copytree(ROOT / root, src / root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "README.md").write_text("flk-lab\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl"),
         str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("flk/spec/vectors/"))
    assert shipped == sorted(p.name for p in vector_files(ROOT / "spec" / "vectors"))
    assert "flk/conformance/adapters/node/adapter.mjs" in names
    assert {"flk/conformance/PROTOCOL.md", "flk/conformance/protocol.schema.json",
            "flk/conformance/examples/minimal_adapter.py"} <= names
    assert "flk_conformance = flk.conformance.pytest_plugin" in entry_points
    unpacked = load_cases(tmp_path / "site" / "flk" / "spec" / "vectors")
    assert len(unpacked) == len(load_cases(ROOT / "spec" / "vectors"))
