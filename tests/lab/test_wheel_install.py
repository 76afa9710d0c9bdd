"""A user's install: the wheel, without extras, in a fresh venv, run from
outside the checkout. ``pip install flk-lab`` must run the CLI's main commands; an optional
backend that is not installed (Redis, PostgreSQL, S3, Dask) answers one line naming the pip
extra, exit 2, never a traceback.

Slow (building the wheel, installing its dependencies into a new venv from the pip cache or
index, then ``flk demo``): a few minutes; it runs in ``make test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FLK_PURE")}
    env["HOME"] = os.environ.get("HOME", str(tmp))
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist, home = tmp / "dist", tmp / "venv"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=900, env=_env(tmp))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next(dist.glob("flk_lab-*.whl"))
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    got = subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=1800, env=_env(tmp))
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    work = tmp / "outside"  # not the checkout: nothing can be imported from the source tree
    work.mkdir()
    return home, work


def _flk(installed, *args, env_extra=None, timeout=900):
    home, work = installed
    env = {**_env(work), **(env_extra or {})}
    return subprocess.run([str(home / "bin" / "flk"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=work, env=env)


def test_the_wheel_declares_what_the_code_imports(installed):
    home, work = installed
    p = subprocess.run([str(home / "bin" / "python"), "-c",
                        "import flk.sim, flk.sim.topology, flk.sim.sweep, scipy, networkx, hypothesis, simpy, z3; "
                        "print(flk.sim.__file__)"], capture_output=True, text=True, cwd=work, env=_env(work))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith(str(home)), p.stdout  # the installed copy, not the checkout
    extras = subprocess.run([str(home / "bin" / "python"), "-c", "import redis"], capture_output=True, text=True)
    assert extras.returncode != 0  # installed without extras


@pytest.mark.parametrize("args", [
    ("demo",),
    ("sim", "run", "crr-normal", "--seed", "1", "--quiet"),
    ("sim", "sweep", "crr-normal", "--seeds", "1-2", "--workers", "1", "--quiet"),
    ("prove", "--tier", "quick"),
    ("conformance", "vectors", "--adapter", "builtin"),
], ids=lambda a: " ".join(a[:2]))
def test_main_commands_run_without_extras(installed, args, tmp_path):
    """Each command leaves nothing in the temp folder (its own, empty at the start): what
    ``flk demo``'s stages write stays beside its report, in ``runs/demo/work``."""
    p = _flk(installed, *args, env_extra={"TMPDIR": str(tmp_path)}, timeout=1200)
    assert p.returncode == 0, (p.stdout[-4000:], p.stderr[-4000:])
    assert "Traceback" not in p.stdout + p.stderr and "ModuleNotFoundError" not in p.stdout + p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == []
    if args == ("demo",):
        assert (installed[1] / "runs" / "demo" / "work" / "serve.log").is_file()


@pytest.mark.parametrize("env_extra, args, extra", [
    ({"DEDUP_BACKEND": "redis", "REDIS_ADDR": "127.0.0.1:1"}, ("serve", "--check", "--data-dir", "d1"), "redis"),
    ({"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": "postgresql://u@127.0.0.1:1/db"},
     ("serve", "--check", "--data-dir", "d2"), "postgres"),
    ({"CRR_STORE_URL": "s3://bucket/prefix"}, ("serve", "--check", "--data-dir", "d3"), "s3"),
    ({}, ("sim", "sweep", "crr-normal", "--seeds", "1", "--scheduler", "tcp://127.0.0.1:1", "--quiet"), "dask"),
], ids=["redis", "postgres", "s3", "dask"])
def test_a_missing_optional_backend_is_one_line_with_the_install_hint(installed, env_extra, args, extra):
    p = _flk(installed, *args, env_extra=env_extra, timeout=300)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"pip install 'flk-lab[{extra}]'" in errors[0], p.stderr
