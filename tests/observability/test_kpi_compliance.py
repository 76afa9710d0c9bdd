"""KPIs against ground truth (flk.sim.kpi), the KPI dashboard and the compliance evidence report
(flk.impl.lab.kpidash, flk.impl.lab.compliance), rendered in headless Chromium.

Chromium comes from scripts/install_chromium.sh: without it the rendering tests skip on a user's
machine and fail under CI=true.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from governance.pcsgen import (  # tests/ is on sys.path (rootdir of the packages)
    body,
    make_pcs,
    registry,
    sign,
)

from flk.impl.governance import audit
from flk.impl.lab import compliance, kpidash
from flk.sim import api, kpi
from flk.sim.scenario import load

ROOT = pathlib.Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
SHORT = ["scenario.duration_s=10", "scenario.quiescence_s=3"]
T0 = 1_800_000_000.0


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        msg = "chromium not installed: run `bash scripts/install_chromium.sh`"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def headless(page: pathlib.Path, profile: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def screenshot_colours(page: pathlib.Path, tmp: pathlib.Path) -> int:
    from PIL import Image

    shot = tmp / (page.stem + ".png")
    done = headless(page, tmp / "profile-shot", "--window-size=1200,1600", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 20) or range(1 << 20))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    out = tmp_path_factory.mktemp("runs")
    dirs = {}
    for name, plant in (("tamper-heavy", None), ("tamper-heavy", "accepts-bad-signatures"), ("dedup-outage", None)):
        target = out / (plant or "clean")
        sc = load(name, SHORT)
        if name == "tamper-heavy":  # the escalation alert needs 30 s above 2% over 5 m: longer than SHORT
            sc.data["alerts"]["fire"] = [{"alert": "FlkSignatureFailureSpike", "within_s": 15.0}]
            sc.data["alerts"]["unchecked"] = ["FlkEscalationRateHigh"]
        res = api.run(sc, seed=1, out=target, plots=False, plant=plant)
        assert res.valid or plant, [c for c in res.results["invariants"] if not c["ok"]]
        dirs[f"{name}{'+' + plant if plant else ''}"] = pathlib.Path(res.results["out_dir"])
    return dirs


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory) -> pathlib.Path:
    """A WORM audit log written by the real verify pipeline's audit sink, sealed and anchored."""
    from flk.impl.dedup.memory import MemoryStore
    from flk.impl.testing.memwal import MemoryWal
    from flk.impl.verifier.pipeline import Request, Verifier, run_sync

    d = tmp_path_factory.mktemp("audit") / "log"
    log = audit.AuditLog(str(d), segment_entries=4)
    sink = audit.pipeline_sink(log, clock=lambda: T0, region="eu-1")
    verifier, wal, store = Verifier(registry()), MemoryWal(), MemoryStore()
    for i in range(10):
        run_sync(verifier.handle(Request(body(sign(make_pcs(seed=i))), "ta"), T0 + i), wal, store, sink)
    log.close(now=T0 + 20)
    assert log.anchor(audit.AttestationStore(str(d / "anchors")), T0 + 21) is not None
    return d


def _kpi(run_dir: pathlib.Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["kpi"]


def test_containment_is_measured_against_ground_truth_and_drops_with_a_planted_bug(runs) -> None:
    good, bad = _kpi(runs["tamper-heavy"])["total"], _kpi(runs["tamper-heavy+accepts-bad-signatures"])["total"]
    assert good["untrustworthy"] > 100 and good["untrusted_accepted"] == 0 and good["containment_rate"] == 1.0
    assert good["slos"]["containment_rate"]["ok"] is True
    assert bad["untrusted_accepted"] > 0 and bad["containment_rate"] < 0.5
    assert bad["slos"]["containment_rate"]["ok"] is False
    leaked = sum(bad["by_kind"][k].get("200", 0) for k in ("bad_sig", "tampered", "forged"))
    assert leaked == bad["untrusted_accepted"]  # exactly the bad signatures got through
    assert good["false_escalation_rate"] == 0.0 and good["escalation_rate"] > 0.02  # out-of-policy claims escalate
    # the server's estimate is not containment: it only sees the share of refusals
    assert good["server_refused_share"] < good["containment_rate"]
    parts = sum(good[k] for k in ("compute_usd", "storage_usd", "network_usd", "anchoring_usd"))
    assert abs(parts - good["total_usd"]) < 1e-12 and good["cost_per_trusted_task_usd"] > 0
    assert set(_kpi(runs["tamper-heavy"])["tenants"]) == {"t0", "t1", "t2"}


def test_no_untrustworthy_traffic_means_containment_not_exercised() -> None:
    events = [{"type": "client.send", "req": i, "kind": "valid", "tenant": "t0", "t_us": i} for i in range(3)]
    events += [{"type": "srv.respond", "req": i, "status": 200, "region": "r1", "d": i, "t_us": 9} for i in range(3)]
    events += [{"type": "client.recv", "req": i, "status": 200, "t_us": 10} for i in range(3)]
    t = kpi.measure(events, {"regions": [{"id": "r1"}]})["total"]
    assert t["untrustworthy"] == 0 and t["containment_rate"] is None and t["trusted_tasks"] == 3
    assert t["slos"]["containment_rate"]["ok"] is None


def test_flk_kpi_prints_figures_and_says_why_one_is_missing(runs, tmp_path) -> None:
    """The headline lines read as the dashboard does (99.50%, $0.000021); a figure with nothing to
    measure says why, and a run without KPIs (a cluster run's results hold none) says so -- the
    command printed Python's None for all of these."""
    def copy(name: str, kpis: dict | None) -> pathlib.Path:  # a finished run with other KPIs, or none
        shutil.copytree(runs["dedup-outage"], tmp_path / name)
        results = json.loads((tmp_path / name / "results.json").read_text())
        results["kpi"] = kpis
        (tmp_path / name / "results.json").write_text(json.dumps(results))
        return tmp_path / name

    valid_only = [{"type": "client.send", "req": 1, "kind": "valid", "tenant": "t0", "t_us": 1},
                  {"type": "client.recv", "req": 1, "status": 200, "t_us": 2}]
    dirs = [runs["tamper-heavy"], copy("trusted-only", kpi.measure(valid_only, {"regions": [{"id": "r1"}]})),
            copy("cluster-like", None)]
    p = subprocess.run([sys.executable, "-m", "flk.impl", "kpi", *map(str, dirs), "--out", str(tmp_path / "k.html")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "None" not in p.stdout, p.stdout + p.stderr
    tamper, outage, cluster = p.stdout.splitlines()[:3]
    t = _kpi(runs["tamper-heavy"])["total"]
    assert t["untrustworthy"] > 0 and f"containment {kpidash.pct(t['containment_rate'])}," in tamper
    assert f"cost per trusted task {kpidash.usd(t['cost_per_trusted_task_usd'])}" in tamper
    assert "containment n/a (no untrustworthy submission), false escalation 0.00%," in outage
    assert cluster.endswith(kpidash.NO_KPI) and "containment" not in cluster.split(":")[0]
    assert (tmp_path / "k.html").read_text().count(kpidash.NO_KPI.replace("'", "&#x27;")) == 1


def test_the_cost_model_defaults_are_the_ones_spec_kpi_md_lists() -> None:
    text = (ROOT / "spec" / "KPI.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| ([0-9.]+) \|", text, re.M))
    assert {k: float(v) for k, v in rows.items()} == kpi.COST_DEFAULTS


def test_kpi_dashboard_renders_in_chromium_per_tenant_with_slos(runs, tmp_path) -> None:
    page = kpidash.write_dashboard(list(runs.values()), tmp_path / "kpi.html")
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    done = headless(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "flk-lab KPI dashboard" in dom and "tamper-heavy seed 1 (planted: accepts-bad-signatures)" in dom
    assert ">100.00%<" in dom and "missed" in dom and ": met" in dom
    for tenant in ("t0", "t1", "t2"):
        assert f"<td>{tenant}</td>" in dom
    assert "ALERT-FlkSignatureFailureSpike" in dom
    assert screenshot_colours(page, tmp_path) > 50


def test_compliance_report_names_evidence_and_never_passes_without_it(runs, audit_dir, tmp_path) -> None:
    doc = compliance.report("soc2", [str(p) for p in runs.values()], str(audit_dir))
    by_id = {c["id"]: c for c in doc["controls"]}
    assert by_id["CC7.2"]["status"] == compliance.FAILING  # a planted-bug run is among the runs: its alert check failed
    chain = by_id["CC7.2"]["evidence"][0]
    assert chain["kind"] == "audit_chain" and chain["status"] == compliance.EVIDENCED
    assert "10 entries" in chain["detail"] and "1 anchors" in chain["detail"] and "last seal" in chain["detail"]
    assert by_id["CC8.1"]["status"] == compliance.NONE  # no proofs, no conformance given
    assert by_id["A1.2"]["status"] == compliance.NONE  # no region-loss run given
    assert "pass" not in {c["status"] for c in doc["controls"]}
    clean = compliance.report("soc2", [str(runs["tamper-heavy"]), str(runs["dedup-outage"])], str(audit_dir))
    assert {c["id"]: c["status"] for c in clean["controls"]}["CC7.2"] == compliance.EVIDENCED
    none = compliance.report("iso27001", [], None)
    assert {c["status"] for c in none["controls"]} <= {compliance.NONE, compliance.PARTIAL, compliance.EVIDENCED}
    assert {c["id"]: c["status"] for c in none["controls"]}["A.5.28"] == compliance.NONE


def test_availability_evidence_needs_a_region_loss(tmp_path) -> None:
    """A replicated run without a crash reports RPO and RTO 0 s (nothing was lost): that is no
    evidence for A1.2, which counted it as "measured". A run that lost a region is."""
    calm = api.run("crr-normal", seed=1, overrides=["scenario.duration_s=4", "scenario.quiescence_s=3"],
                   out=tmp_path / "calm", plots=False)
    lost = api.run("crr-rpo", seed=1, out=tmp_path / "lost", plots=False)
    assert calm.results["metrics"]["rpo_s"] == 0.0 and not calm.results["fault_schedule"]
    a12 = {c["id"]: c for c in compliance.report("soc2", [str(calm.out_dir)], None)["controls"]}["A1.2"]
    assert a12["status"] == compliance.NONE and "region loss" in a12["evidence"][0]["detail"], a12
    rpo = lost.results["metrics"]["rpo_s"]
    assert rpo > 0
    doc = compliance.report("soc2", [str(calm.out_dir), str(lost.out_dir)], None)
    (a12,) = [c for c in doc["controls"] if c["id"] == "A1.2"]
    assert a12["status"] == compliance.EVIDENCED, a12
    assert f"1 replicated runs with a region loss measured RPO/RTO, worst RPO {rpo:.2f} s" in a12["evidence"][0]["detail"]


def test_a_tampered_audit_log_makes_its_controls_failing(audit_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(audit_dir, broken)
    seg = sorted(broken.glob("seg-*.log"))[0]
    os.chmod(seg, 0o644)
    seg.write_bytes(seg.read_bytes().replace(b'"accepted"', b'"rejected"', 1))
    doc = compliance.report("iso27001", [], str(broken))
    assert {c["id"]: c["status"] for c in doc["controls"]}["A.5.28"] == compliance.FAILING


def test_flk_compliance_report_cli_writes_html_and_json_rendered_in_chromium(runs, audit_dir, tmp_path) -> None:
    out = tmp_path / "compliance"
    args = [sys.executable, "-m", "flk.impl", "compliance", "report", "--framework", "soc2",
            "--runs", str(runs["tamper-heavy"]), str(runs["dedup-outage"]), "--audit", str(audit_dir), "--out", str(out)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CC7.2    evidenced" in p.stdout and "no evidence" in p.stdout
    doc = json.loads((out / "compliance-soc2.json").read_text())
    assert doc["framework"] == "soc2" and doc["counts"]["failing"] == 0
    done = headless(out / "compliance-soc2.html", tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0 and "CC6.1" in done.stdout and "no evidence" in done.stdout
    assert screenshot_colours(out / "compliance-soc2.html", tmp_path) > 50
    bad = subprocess.run([*args[:7], "--runs", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "not a directory" in bad.stderr


def test_the_report_names_packaged_files_relative_never_by_this_machines_path(tmp_path) -> None:
    """The runbooks evidence names the rules and runbooks relative to the package (a report is
    shared; it must not carry the machine's paths)."""
    doc = compliance.report("soc2", [], None)
    books = [e for c in doc["controls"] for e in c["evidence"] if e["kind"] == "runbooks"][0]
    assert books["status"] == compliance.EVIDENCED
    assert books["sources"] == ["deploy/prometheus/rules/flk-alerts.yml", "spec/runbooks"]
