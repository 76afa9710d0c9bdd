"""The host's CPU during a cluster run (``cluster.host``, :mod:`flk.impl.lab.cluster.hostload`):
``/proc/stat`` read as the kernel writes it, any other text answered "not measured", the busy
share of each sampled second, a run saturated when a quarter of its seconds left no CPU to
spare; and a calibration that disagrees with a saturated real run says ``unknown`` instead of
blaming the simulator (the same disagreement on a host with CPU to spare stays ``disagree``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from flk.impl.lab.cluster import calibrate
from flk.impl.lab.cluster.hostload import (
    SATURATED_BUSY,
    HostCpu,
    parse_proc_stat,
    read_proc_stat,
    saturation_note,
)
from flk.sim.scenario import load

from .conftest import FLK
from .test_calibrate_fit import LATENCY, REAL

KERNEL = """cpu  4705 356 584 3699 23 0 9 7 0 0
cpu0 1393 280 260 1840 11 0 5 3 0 0
intr 114930548 113199788 3 0 5 263 0 4 [...]
ctxt 1990473
"""


def test_the_kernels_line_gives_busy_and_total_jiffies():
    assert parse_proc_stat(KERNEL) == (4705 + 356 + 584 + 9 + 7, 4705 + 356 + 584 + 3699 + 23 + 0 + 9 + 7)


@given(st.lists(st.integers(0, 2**40), min_size=4, max_size=10))
def test_busy_is_the_total_less_idle_and_iowait(values):
    busy, total = parse_proc_stat("cpu  " + " ".join(map(str, values)) + "\n")
    padded = (values + [0] * 8)[:8]
    assert total == sum(padded) and busy == total - padded[3] - padded[4]


@given(st.text(max_size=200))
def test_any_other_text_is_not_measured_or_a_reading(text):
    got = parse_proc_stat(text)
    assert got is None or (0 <= got[0] <= got[1])


def test_malformed_lines_are_not_measured():
    for text in ("", "cpu0 1 2 3 4\n", "cpu  1 2 3\n", "cpu  1 2 x 4\n", "cpu  1 -2 3 4\n"):
        assert parse_proc_stat(text) is None, text


def _fake(readings):
    it = iter(readings)
    return lambda: next(it)


def test_each_period_is_its_busy_share_and_a_quarter_saturated_makes_the_run_saturated():
    # jiffies (busy, total): 50 %, 100 %, 96 %, 20 % busy, then a reading that failed
    host = HostCpu(_fake([(0, 0), (50, 100), (150, 200), (246, 300), (266, 400), None]))
    assert [host.sample() for _ in range(5)] == [0.5, 1.0, 0.96, 0.2, None]
    s = host.summary()
    assert s["measured"] and s["periods"] == 4 and s["saturated_periods"] == 2
    assert s["saturated_share"] == 0.5 and s["saturated"] and s["busy_share_mean"] == round((0.5 + 1 + .96 + .2) / 4, 4)
    assert "2 of 4 sampled seconds" in saturation_note(s)
    calm = HostCpu(_fake([(0, 0), (10, 100), (20, 200), (30, 300), (40, 400), (140, 500)]))
    for _ in range(5):
        calm.sample()
    assert not calm.summary()["saturated"] and saturation_note(calm.summary()) is None  # 1 of 5 < a quarter


def test_without_proc_stat_nothing_is_claimed():
    host = HostCpu(lambda: None)
    assert host.sample() is None
    assert host.summary()["measured"] is False and "saturated" not in host.summary()


def test_this_machine_reads_busy_while_a_thread_spins():
    assert read_proc_stat() is not None  # the cluster runner's hosts are Linux
    host = HostCpu()
    stop = time.monotonic() + 0.3
    spin = threading.Thread(target=lambda: [None for _ in iter(lambda: time.monotonic() < stop, False)])
    spin.start()
    spin.join()
    share = host.sample()
    assert share is not None and share >= 0.5 / os.cpu_count()  # at least half of one core of the machine's


def _result(value: float, saturated: bool | None) -> dict:
    out = {"seed": 1, "valid": True, "invariants": [], "slos": [], "metrics": {"latency_p50_ms": value}}
    if saturated is not None:
        out["cluster"] = {"host": {"measured": True, "cpus": 2, "periods": 40, "saturated_periods": 30 if saturated
                                   else 0, "saturated_share": 0.75 if saturated else 0.0, "saturated": saturated,
                                   "busy_share_mean": 0.97 if saturated else 0.4, "saturated_busy": SATURATED_BUSY}}
    return out


def test_a_disagreement_with_a_saturated_real_run_is_unknown():
    sc = load(LATENCY, ["study.calibrate=[\"latency_p50_ms\"]"])
    sims = [_result(10.0, None), _result(10.2, None)]
    assert calibrate.compare(sc, sims, [_result(10.1, True)])["verdict"] == "agree"  # agreeing is agreeing
    unknown = calibrate.compare(sc, sims, [_result(40.0, True)])
    assert unknown["verdict"] == "unknown" and not unknown["ok"] and unknown["host_saturated_runs"] == [1]
    assert "30 of 40 sampled seconds" in unknown["unknown_reason"]
    assert calibrate.compare(sc, sims, [_result(40.0, False)])["verdict"] == "disagree"
    assert calibrate.compare(sc, sims, [_result(40.0, None)])["verdict"] == "disagree"  # an older run: not known


def test_calibrate_prints_why_it_does_not_know(tmp_path):
    real = tmp_path / "real"
    shutil.copytree(REAL, real)
    res = json.loads((real / "results.json").read_text())
    res.setdefault("cluster", {})["host"] = _result(0, True)["cluster"]["host"]
    (real / "results.json").write_text(json.dumps(res))
    wrong = ["--sim-set", "region_defaults.fsync_ms=40"]  # the simulator made 10x slower: it disagrees
    proc = subprocess.run([*FLK, "sim", "calibrate", LATENCY, "--seeds", "1-2", "--real-dir", str(real), "--out",
                           str(tmp_path / "out"), *wrong], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "verdict: unknown (real run 1: host CPU saturated in 30 of 40 sampled seconds" in proc.stdout, proc.stdout
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert report["verdict"] == "unknown" and "verdict: <b>unknown</b>" in (tmp_path / "out" / "calibration.html").read_text()
