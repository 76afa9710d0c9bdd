"""A normal (non-editable) install works: build a wheel, install it, import and run it.

The development venv uses the editable install (`pip install -e .`), so every
other test exercises that path; this one builds a wheel from a copy of the
source tree, installs it without dependencies into a fresh venv that borrows
the dev venv's site-packages for numpy & co (but not its editable finder), and
checks the flk.* packages import from the wheel, `flk --help` runs, and the
vectors ship as flk/spec/vectors/*.json.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("impl", "model", "sim", "conformance", "formal", "spec")
EXTRAS = ("redis", "psycopg", "psycopg_pool", "boto3", "botocore", "dask", "distributed", "jupyterlab")  # pyproject extras


def _copy_source(dst: pathlib.Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "node_modules", "runs")
    for name in PACKAGES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dst / name)


@pytest.mark.slow
def test_wheel_builds_installs_and_runs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_source(src)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        check=True, timeout=120, capture_output=True,
    )
    (wheel,) = wheels.glob("flk_lab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in PACKAGES:
        assert f"flk/{pkg}/__init__.py" in names, pkg
    shipped = {n for n in names if n.startswith("flk/spec/vectors/") and n.endswith(".json")}
    assert len(shipped) == len(list((ROOT / "spec" / "vectors").glob("*.json"))) >= 17
    assert "flk/spec/vectors.schema.json" in names
    assert not any(n.startswith("flk/tests") or n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    vpy = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "--no-compile", "-q", str(wheel)],
        check=True, timeout=120, capture_output=True,
    )
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # dependencies from the dev venv; a .pth line adds the directory but does not run its .pth files,
    # so the editable finder of the dev install stays out
    (pathlib.Path(site) / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    code = (
        "import pathlib, flk.impl, flk.model, flk.sim, flk.conformance, flk.formal, flk.spec\n"
        "from importlib import resources\n"
        "from flk.impl.core import canonical\n"
        "from flk.impl.lab import vectors\n"
        "for m in (flk.impl, flk.model, flk.sim, flk.conformance, flk.formal, flk.spec):\n"
        f"    assert pathlib.Path(m.__file__).is_relative_to({site!r}), m.__file__\n"
        "vdir = resources.files('flk.spec') / 'vectors'\n"
        "assert len([p for p in vdir.iterdir() if p.name.endswith('.json')]) >= 17\n"
        "assert vectors.check(vectors.default_dir()) == []\n"
        "print(canonical.fmt9(1/1024))\n"
    )
    out = subprocess.run([str(vpy), "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.000976562"
    out = subprocess.run([str(venv / "bin" / "flk"), "--help"], capture_output=True, text=True, timeout=60, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "vectors" in out.stdout and "conformance" in out.stdout
    out = subprocess.run([str(venv / "bin" / "flk"), "vectors", "check"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr

    # Installed as a user installs: without the extras. A finder refuses the extras' packages
    # (the dev venv behind the .pth has them): the main commands still run, and an optional
    # backend fails with one line naming its pip extra, exit 2.
    (pathlib.Path(site) / "_flk_no_extras.py").write_text(
        "import sys\n"
        "class _NoExtras:\n"
        f"    names = {EXTRAS!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoExtras())\n")
    (pathlib.Path(site) / "aa_no_extras.pth").write_text("import _flk_no_extras\n")
    flk = str(venv / "bin" / "flk")

    def run(*argv, **extra_env):
        return subprocess.run([flk, *argv], capture_output=True, text=True, timeout=300, env={**env, **extra_env},
                              cwd=tmp_path)

    probe = subprocess.run([str(vpy), "-c", "import redis"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "No module named 'redis'" in probe.stderr  # the extras are really gone
    out = run("sim", "run", "dedup-outage", "--seed", "1", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-2000:]
    out = run("conformance", "vectors", "--adapter", "builtin")
    assert out.returncode == 0 and " 0 failed" in out.stdout, (out.stdout[-500:], out.stderr[-500:])
    out = run("bench", "verify", "--quick", "--json")
    assert out.returncode == 0 and '"benchmark": "verify"' in out.stdout, out.stderr[-2000:]
    for backend, extra_env, extra in (("redis", {"REDIS_ADDR": "127.0.0.1:1"}, "redis"),
                                      ("postgres", {"POSTGRES_CONN": "postgresql://u@127.0.0.1:1/x"}, "postgres")):
        out = run("serve", "--check", "--data-dir", str(tmp_path / f"d-{backend}"), DEDUP_BACKEND=backend,
                  **extra_env)
        assert out.returncode == 2, (backend, out.stdout[-500:], out.stderr[-500:])
        assert f"pip install 'flk-lab[{extra}]'" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_dev_venv_uses_the_editable_install():
    import flk.impl

    assert pathlib.Path(flk.impl.__file__).resolve().parent == ROOT / "impl"
