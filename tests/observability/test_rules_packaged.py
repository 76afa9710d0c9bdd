"""The Prometheus rules and their runbooks ship with the package: an installed ``flk`` finds them.

Builds an sdist from a copy of the source, a wheel from that unpacked sdist (the chain a user's
``pip install`` takes; the C fast paths are left out with CC=false, the build then warns and
ships the pure Python code), installs the wheel into a fresh venv without the checkout, and
checks from there that flk.sim.alerts reads the installed rules (20 alerts, promtool evaluates
them in a simulator run) and that ``flk compliance`` finds a runbook for every rule.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COPY = ("impl", "model", "sim", "conformance", "formal", "spec", "deploy")
RULES = ("flk-alerts.yml", "flk-recording.yml")


def _source_copy(dst: pathlib.Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", "build", "dist", "node_modules",
                                    "runs")
    for name in COPY:
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, dst / name)


@pytest.mark.slow
def test_an_installed_flk_finds_the_rules_and_runbooks(tmp_path) -> None:
    src = tmp_path / "src"
    _source_copy(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sdist")], cwd=src, check=True,
                   capture_output=True, timeout=300, env=env)
    (sdist,) = (tmp_path / "sdist").glob("flk_lab-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    top = names[0].split("/")[0]
    for rule in RULES:
        assert f"{top}/deploy/prometheus/rules/{rule}" in names
    books = sorted(p.name for p in (ROOT / "spec" / "runbooks").glob("*.md"))
    assert len(books) >= 10 and all(f"{top}/spec/runbooks/{b}" in names for b in books)

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(tmp_path / "unpacked" / top)],
                   check=True, capture_output=True, timeout=300, env={**env, "CC": "false"})
    (wheel,) = wheels.glob("flk_lab-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"flk/deploy/prometheus/rules/{r}" for r in RULES} <= shipped
    assert "flk/deploy/prometheus/tests/flk-alerts.test.yml" in shipped
    assert {f"flk/spec/runbooks/{b}" for b in books} <= shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    vpy = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "--no-compile", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dev venv's dependencies, without running its .pth files (its editable finder stays out)
    (pathlib.Path(site) / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        "import pathlib, shutil\n"
        "from flk.sim import alerts, api\n"
        "from flk.impl.lab import compliance\n"
        f"site = pathlib.Path({site!r})\n"
        "assert alerts.RULES_DIR.is_relative_to(site), alerts.RULES_DIR\n"
        "assert len(alerts.alert_names()) == 22\n"
        "item = compliance._repo_runbooks()\n"
        "assert item['status'] == compliance.EVIDENCED, item\n"
        "print('runbooks', item['detail'])\n"
        "if shutil.which('promtool'):\n"
        "    res = api.run('dedup-outage', seed=1, overrides=['scenario.duration_s=8', 'scenario.quiescence_s=6'])\n"
        "    assert 'FlkDedupStoreDown' in res.results['alerts']['firing'], res.results.get('alerts')\n"
        "    print('fired', sorted(res.results['alerts']['firing']))\n"
    )
    out = subprocess.run([str(vpy), "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "22 alert rules link" in out.stdout
    if shutil.which("promtool"):
        assert "FlkDedupStoreDown" in out.stdout
