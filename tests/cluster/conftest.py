"""The real-cluster tier: ``flk cluster run`` needs root (network namespaces), iproute2,
nftables and the moto S3 server. Without them these tests skip -- except under CI=true,
where that is a failure (CI runs as root; ``make setup`` installs the tools)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import NoReturn

import pytest

from flk.impl.lab.cluster.network import missing_tools

IN_CI = os.environ.get("CI", "").lower() == "true"
# The full real-cluster tier (``FLK_CLUSTER_FULL=1``, marked slow): second tests of a mechanism the
# default tier already covers, kept out of ``make test``'s budget.
full_tier = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("FLK_CLUSTER_FULL") != "1",
                                                  reason="the full real-cluster tier runs with FLK_CLUSTER_FULL=1")]


def unavailable(msg: str) -> NoReturn:
    """A tool a test needs is missing: skipped on a user's machine, a failure under CI=true
    (where ``make setup`` installs every one)."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def in_full_tier(fn):
    """Put one test in the full real-cluster tier."""
    for mark in full_tier:
        fn = mark(fn)
    return fn
FLK = [sys.executable, "-m", "flk.impl"]
SCENARIOS = pathlib.Path(__file__).parent / "scenarios"


@pytest.fixture
def cluster_ready():
    missing = list(missing_tools())
    try:
        import moto.server  # noqa: F401
    except ImportError:
        missing.append("moto[server] (pip install 'flk-lab[dev]')")
    if missing:
        unavailable(f"a real cluster needs {', '.join(missing)}")


@pytest.fixture
def prometheus_ready(cluster_ready):
    """A real Prometheus for the alert checks (``--prometheus``)."""
    if shutil.which("prometheus") is None:
        unavailable("the alert check needs prometheus (Debian package prometheus; scripts/install_deb.sh)")


@pytest.fixture
def redis_and_prometheus(cluster_ready):
    """A real cluster with each region's own redis-server and a real Prometheus."""
    for tool, package in (("prometheus", "prometheus"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            unavailable(f"needs {tool} (Debian package {package}; scripts/install_deb.sh)")


@pytest.fixture
def prefix():
    """A namespace prefix of this test process (never one of another run)."""
    return f"flkt{os.getpid() % 100000:x}"


def cluster_run(tmp_path, prefix: str, scenario: str, *extra: str, timeout: float = 400,
                seed: int = 1) -> tuple[dict, list[dict]]:
    """``flk cluster run SCENARIO --seed SEED --prometheus`` into ``tmp_path``: its results and history
    (exit 0 or 1: a run that is invalid still reports)."""
    proc = subprocess.run([*FLK, "cluster", "run", scenario, "--seed", str(seed), "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots", "--prometheus", *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    events = [json.loads(line) for line in (tmp_path / res["scenario"] / str(seed) / "history.jsonl").open()]
    return res, events


def leftovers(prefix: str, work: str | None = None) -> list[str]:
    """Namespaces, links, nftables tables, processes and mounts a run with ``prefix`` left behind."""
    out = [f"namespace {n}" for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
           .stdout.split() if n.startswith(prefix + "-")]
    # the runner's rules live in the regions' namespaces only: a table of its name here would cut the host
    out += [f"nft {t}" for t in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
            .stdout.splitlines() if t.strip() == "table inet flk"]
    out += [f"link {line.split(':')[1].strip()}" for line in subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
        if line.split(":")[1].strip().split("@")[0].startswith(prefix)]
    if work:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cwd.startswith(work) or work in cmd:
                out.append(f"process {pid}: {cmd[:120]}")
        with open("/proc/mounts", encoding="utf-8") as f:
            out += [f"mount {line.split()[1]}" for line in f if work in line or prefix in line]
    return out


def _as_in_the_foreground() -> None:
    """(The child, before exec.) SIGINT and SIGQUIT back to their defaults, as a terminal's
    foreground job has them: a shell starts a background job (``make test &``, ``nohup``)
    with both ignored, the ignoring is inherited through exec, and a runner that inherited it
    rightly ignores Ctrl-C -- the SIGINT tests would then see a run that ends normally (seen:
    exit 0, ``SigIgn`` ...1007 in the runner and in the pytest worker)."""
    import signal

    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def start_run(args: list[str]) -> tuple:
    """Start ``flk cluster run ARGS`` as a foreground job would run it (Ctrl-C not ignored, however
    pytest was started) and wait (up to 120 s) until it says the cluster is up: (the process,
    its work dir). The caller signals or kills it and waits."""
    import re
    import time

    proc = subprocess.Popen([*FLK, "cluster", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_in_the_foreground)
    work, line = None, ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"work dir (\S+)", line)
            if m:
                work = m.group(1)
            if line.startswith("cluster: up") or not line:
                break
        assert work is not None and line.startswith("cluster: up"), line
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc, work
