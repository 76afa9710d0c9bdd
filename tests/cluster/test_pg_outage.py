"""A dedup outage on a real cluster with ``--backend postgres``: each region runs its own
PostgreSQL (initdb in the run's work dir, in the region's namespace); the fault SIGSTOPs the
postmaster and every one of its children (they each run in a session of their own), the heal
SIGCONTs them. The server must fail closed (503) while its store hangs and lose nothing it
acknowledged; every postgres process is gone after the run, also after Ctrl-C mid-outage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from flk.impl.lab.cluster.regions import pg_bindir

from .conftest import FLK, SCENARIOS, in_full_tier, leftovers, start_run, unavailable

PG = str(SCENARIOS / "cluster-pg-outage.toml")
pytestmark = [pytest.mark.postgres]


@pytest.fixture
def postgres_ready(cluster_ready):
    if pg_bindir() is None or shutil.which("runuser") is None:
        unavailable("needs the PostgreSQL server binaries (make services)")


def _postgres_of(work: str) -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if work in cmd:
            out.append(f"{pid}: {cmd[:100]}")
    return out


def test_postgres_dedup_outage_fails_closed_on_a_real_cluster(postgres_ready, prefix, tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", PG, "--backend", "postgres", "--seed", "1", "--out", str(tmp_path),
                           "--json", "--prefix", prefix, "--no-plots"], capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    checks = {c["id"]: c for c in res["invariants"]}
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    assert checks["SOMETIMES-STORE-DOWN-503"]["ok"] and checks["INV-NO-ACKED-LOSS"]["exercised"]
    assert res["parameters"]["backend"] == "postgres" and "PostgreSQL" in res["cluster"]["mechanisms"]["store_down"]
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []


@in_full_tier  # SIGINT cleanup is in the default tier's smoke test; the outage itself is above
def test_sigint_mid_outage_leaves_no_postgres_behind(postgres_ready, prefix, tmp_path):
    proc, work = start_run([PG, "--backend", "postgres", "--seed", "2", "--out", str(tmp_path), "--prefix", prefix,
                            "--no-plots"])
    try:
        time.sleep(3.0)  # inside the outage (1.5 s .. 4.5 s): the backends are stopped
        assert _postgres_of(work)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, proc.stderr.read()[-2000:]
    time.sleep(1.0)
    assert _postgres_of(work) == [] and leftovers(prefix, work) == []
