"""``flk cluster run`` on a real cluster: a short replicated scenario with a kernel partition
and a SIGKILL, judged by the simulator's checkers; Ctrl-C leaves nothing behind; a fault
the runner cannot apply is refused before anything starts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import FLK, IN_CI, SCENARIOS, leftovers, start_run

SMOKE = str(SCENARIOS / "cluster-smoke.toml")


def test_partition_and_crash_on_a_real_cluster_with_the_simulator_checkers(cluster_ready, prefix, tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", SMOKE, "--seed", "1", "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots", "--junit", str(tmp_path / "ci.xml")],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    checks = {c["id"]: c for c in res["invariants"]}
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    # the black-box checker judged every invariant it can see; the inside-only ones say so
    for inv in ("INV-FWW", "INV-IDEMPOTENT-REPLAY", "INV-NO-ACKED-LOSS", "INV-CONVERGENCE"):
        assert checks[inv]["ok"] and checks[inv]["exercised"], checks[inv]
    assert not checks["INV-WAL-FIRST"]["exercised"] and "client view" in checks["INV-WAL-FIRST"]["note"]
    # the partition dropped packets in the kernel, the SIGKILL hit traffic, the split made conflicts
    [part] = res["cluster"]["partitions"]
    assert part["dropped_packets"] > 0 and all("counter" in r["rule"] and "drop" in r["rule"] for r in part["rules"])
    assert checks["SOMETIMES-PARTITION-CUT"]["ok"] and checks["SOMETIMES-CRASH-HIT-TRAFFIC"]["ok"]
    assert res["metrics"]["conflicts"] > 0 and checks["SOMETIMES-SPLIT-BRAIN-CONFLICT"]["ok"]
    # the simulator's run layout
    run_dir = tmp_path / "cluster-smoke" / "1"
    for name in ("scenario.toml", "history.jsonl", "results.json", "metrics.csv", "partition-rules.txt"):
        assert (run_dir / name).exists(), name
    assert re.search(r"counter packets [1-9]\d* bytes \d+ drop", (run_dir / "partition-rules.txt").read_text())
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []
    # each replication sample keeps the regions' own ship-lag gauges beside the figure that also counts
    # their shipped segments' copies (which of the two made a high reading)
    samples = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()
               if '"crr.sample"' in line]
    assert samples and all(set(e["ship_gauge"]) == set(e["by_region"]) and
                           all(e["by_region"][r] >= g for r, g in e["ship_gauge"].items()) for e in samples)
    # the host's CPU was measured each second of the run (what a calibration needs to say "unknown")
    host = res["cluster"]["host"]
    assert host["measured"] and host["periods"] >= 10 and 0.0 < host["busy_share_mean"] <= 1.0, host
    assert host["saturated"] == (host["saturated_share"] >= 0.25)
    # the JUnit report CI reads: every check a testcase, the inside-only ones skipped, not passed
    import xml.etree.ElementTree as ET

    root = ET.parse(tmp_path / "ci.xml").getroot()
    cases = {tc.get("name"): tc for tc in root.iter("testcase")}
    assert set(cases) >= set(checks) and root.get("failures") == "0"
    assert cases["INV-WAL-FIRST"].find("skipped") is not None and cases["INV-FWW"].find("skipped") is None
    # flk sim report / diff read the cluster run like a simulator run
    rep = subprocess.run([*FLK, "sim", "report", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0 and (run_dir / "report.html").exists(), rep.stderr[-2000:]
    _calibration_against(run_dir, tmp_path)


def _calibration_against(run_dir, tmp_path):
    """flk sim calibrate over this real run: the table, one plot per figure, exit 1 exactly when a
    figure is outside tolerance; a simulator told the workload makes no cross-region conflicts (the
    real run made some, asserted above) is caught, naming the figure."""
    out = tmp_path / "cal"
    cal = subprocess.run([*FLK, "sim", "calibrate", SMOKE, "--seeds", "1-2", "--real-dir", str(run_dir), "--out",
                          str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert cal.returncode in (0, 1), cal.stderr[-2000:]
    report = json.loads(cal.stdout)
    assert cal.returncode == (0 if report["ok"] else 1)
    assert [r["figure"] for r in report["figures"]] == ["conflicts"] and report["real_runs"] == 1
    [row] = report["figures"]
    assert len(row["sim"]) == 2 and row["sim_ci95"][0] <= row["sim_mean"] <= row["sim_ci95"][1]
    assert (out / "calibration.html").exists() and (out / "calibration-conflicts.png").exists()
    wrong = subprocess.run([*FLK, "sim", "calibrate", SMOKE, "--seeds", "1-2", "--real-dir", str(run_dir), "--out",
                            str(tmp_path / "cal-wrong"), "--sim-set", "workload.cross_region_conflict_rate=0"],
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1, wrong.stdout
    assert re.search(r"^conflicts .* OUTSIDE tolerance", wrong.stdout, re.M), wrong.stdout


def _signal_masks(pid: int) -> str:
    """The signal masks of ``pid`` (blocked, ignored, caught: SIGINT is bit 1), for a failure's message."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError:
        return "(gone)"


def test_sigint_mid_run_leaves_no_process_namespace_or_mount(cluster_ready, prefix, tmp_path):
    proc, work = start_run([SMOKE, "--seed", "2", "--out", str(tmp_path), "--prefix", prefix, "--no-plots"])
    try:
        running = leftovers(prefix, work)
        assert any(x.startswith("namespace") for x in running) and any(x.startswith("process") for x in running)
        time.sleep(3.0)  # inside the workload phase, partition on
        masks = f"runner: {_signal_masks(proc.pid)}; this test's process: {_signal_masks(os.getpid())}"
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (masks, proc.stderr.read()[-2000:])
    assert leftovers(prefix, work) == []


def test_sigkill_of_the_runner_then_cleanup_leaves_nothing(cluster_ready, prefix, tmp_path):
    """A runner killed with SIGKILL runs no cleanup of its own: its ledger lists what it made (namespaces
    with their nftables rules, links, the WAL tmpfs, the processes outside the namespaces, the work dir) and
    ``flk cluster cleanup`` removes all of it."""
    faults = ('faults=[{kind="partition", at_s=1.0, a=["eu"], b=["us"], duration_s=8.0}, '
              '{kind="disk_full", at_s=9.5, target="us", duration_s=0.2}]')
    extra = ["--prometheus"] if shutil.which("prometheus") or IN_CI else []  # a process outside the namespaces
    proc, work = start_run([SMOKE, "--seed", "3", "--out", str(tmp_path), "--prefix", prefix, "--no-plots",
                            "--set", faults, *extra])
    try:
        time.sleep(2.0)  # the partition's drop rules are in the namespaces
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    running = leftovers(prefix, work)
    kinds = {x.split()[0] for x in running}
    assert {"namespace", "link", "process", "mount"} <= kinds, running
    if extra:
        assert any("prometheus" in x for x in running), running
    assert (Path(work) / "us").is_dir()  # the regions' data and logs
    done = subprocess.run([*FLK, "cluster", "cleanup", "--prefix", prefix], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "nothing left behind", done.stdout
    assert leftovers(prefix, work) == []
    assert not os.path.lexists(work)
    assert not (Path(tempfile.gettempdir()) / f"flk-cluster-{prefix}.json").exists()


def test_a_fault_without_a_real_mechanism_is_refused_before_the_run(prefix, tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", "cold-tier-outage", "--out", str(tmp_path),
                           "--prefix", prefix], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cold_down" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cold-tier-outage").exists() and leftovers(prefix) == []


def test_clock_faults_need_a_compiler_for_the_faketime_shim(monkeypatch):
    """Clock faults run with and without replication, forward and back (the shim mends
    libfaketime's timed waits); without a C compiler to build it, they are refused, saying so."""
    from flk.impl.lab.cluster import faketime, runner
    from flk.sim.scenario import load

    data = load("clock-skew-replicated", ["faults.0.skew_s=-30"]).data
    if faketime.library() is not None and faketime.compiler() is not None:
        assert runner.preflight(data, "sqlite") == []
    monkeypatch.setattr(faketime, "library", lambda: "/usr/lib/faketime/libfaketime.so.1")
    monkeypatch.setattr(faketime, "compiler", lambda: None)
    why = runner.preflight(data, "sqlite")
    assert len(why) == 1 and "C compiler" in why[0] and "shim" in why[0], why


@pytest.mark.parametrize("args,needle", [(["--backend", "mysql"], "--backend"), (["--seed", "-1"], "--seed"),
                                         (["--set", "workload.nope=1"], "nope"),
                                         (["--junit", "{tmp}"], "--junit")])
def test_bad_input_is_exit_2_with_a_message(args, needle, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([*FLK, "cluster", "run", SMOKE, "--out", str(tmp_path), *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_cleanup_removes_what_a_killed_run_left_and_never_a_live_run(cluster_ready, prefix):
    ledger = Path(tempfile.gettempdir()) / f"flk-cluster-{prefix}.json"
    ns = f"{prefix}-left"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ledger.write_text(json.dumps({"namespaces": [ns], "links": [], "pid": os.getpid()}))  # this test: alive
        kept = subprocess.run([*FLK, "cluster", "cleanup"], capture_output=True, text=True, timeout=60)
        assert kept.returncode == 1 and f"process {os.getpid()}" in kept.stdout and leftovers(prefix)
        dead = subprocess.Popen(["true"])
        dead.wait()
        ledger.write_text(json.dumps({"namespaces": [ns], "links": [], "pid": dead.pid}))
        gone = subprocess.run([*FLK, "cluster", "cleanup"], capture_output=True, text=True, timeout=60)
        assert leftovers(prefix) == [] and not ledger.exists(), gone.stdout
        # another test file's cluster may be running beside this one (pytest -n 2): only live runs may stay
        others = gone.stdout.strip().removeprefix("could not remove: ").split(", ") if gone.returncode else []
        assert all(re.fullmatch(r"the run of process \d+ \(still running\)", o) for o in others), gone.stdout
        assert f"process {dead.pid} " not in gone.stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ledger.unlink(missing_ok=True)
