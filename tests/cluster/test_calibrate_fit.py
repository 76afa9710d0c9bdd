"""``flk sim calibrate --fit``: this machine's fsync, store and CPU-per-request figures as a
simulator profile a scenario names (``[study] profile``); and calibration against a stored
real cluster run (``--real-dir``, so no cluster is started): the fitted profile agrees on the
end-to-end latency, the same profile with a 10x fsync latency makes calibrate exit 1 naming
the figure. The simulator is deterministic, so both verdicts are the same every run."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import tomllib

from flk.sim.scenario import load

from .conftest import FLK, SCENARIOS

DATA = pathlib.Path(__file__).parent / "data"
LATENCY = str(SCENARIOS / "cluster-latency.toml")
REAL = str(DATA / "cluster-latency-run")  # a real `flk cluster run cluster-latency --seed 1` (results.json)


def test_fit_measures_this_machine_and_writes_a_profile_a_scenario_names(tmp_path):
    out = tmp_path / "profiles" / "here.toml"
    proc = subprocess.run([*FLK, "sim", "calibrate", "--fit", "--fit-samples", "20", "--fit-dir", str(tmp_path),
                           "--profile-out", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    prof = tomllib.loads(out.read_text())
    assert prof["region_defaults"] == report["region_defaults"]
    rd = prof["region_defaults"]
    for key in ("fsync_ms", "store_ms"):
        assert rd[key]["dist"] == "lognormal" and rd[key]["median"] > 0 and rd[key]["sigma"] >= 0
    assert 0 < rd["verify_ms"] < 100 and prof["profile"]["samples"] == 20
    sc = load(LATENCY, [f"study.profile={json.dumps(str(out))}"])
    assert {k: sc.data["region_defaults"][k] for k in rd} == rd
    # a key the scenario (or an override) sets itself wins over the profile
    own = load(LATENCY, [f"study.profile={json.dumps(str(out))}", "region_defaults.verify_ms=0.5"])
    assert own.data["region_defaults"]["verify_ms"] == 0.5 and own.data["region_defaults"]["fsync_ms"] == rd["fsync_ms"]
    bad = subprocess.run([*FLK, "sim", "calibrate", "--fit", "--fit-samples", "3"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--fit-samples" in bad.stderr and "Traceback" not in bad.stderr


def _calibrate(tmp_path, name, *extra):
    proc = subprocess.run([*FLK, "sim", "calibrate", LATENCY, "--seeds", "1-2", "--real-dir", REAL, "--out",
                           str(tmp_path / name), *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc


def test_a_ten_times_fsync_profile_makes_calibrate_exit_1_naming_the_figure(tmp_path):
    fitted = _calibrate(tmp_path, "fitted")
    assert fitted.returncode == 0 and re.search(r"^latency_p50_ms .* agrees$", fitted.stdout, re.M), fitted.stdout
    text = (DATA / "profile-fit.toml").read_text()
    median = re.search(r"fsync_ms = \{ dist = \"lognormal\", median = ([0-9.]+)", text).group(1)
    wrong = tmp_path / "tenx.toml"
    wrong.write_text(text.replace(f"median = {median}", f"median = {float(median) * 10:.4f}", 1))
    assert tomllib.loads(wrong.read_text())["region_defaults"]["fsync_ms"]["median"] > float(median) * 9
    tenx = _calibrate(tmp_path, "tenx", "--sim-set", f"study.profile={json.dumps(str(wrong))}")
    assert tenx.returncode == 1, tenx.stdout
    assert re.search(r"^latency_p50_ms .* OUTSIDE tolerance", tenx.stdout, re.M), tenx.stdout
