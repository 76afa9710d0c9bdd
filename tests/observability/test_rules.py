"""The shipped Prometheus rules (deploy/prometheus): promtool checks them and runs their unit
tests; every alert has a severity, a summary and a runbook in the repository; every metric a
rule reads is one `flk serve` really exports; every alert is proved by a chaos scenario or
(named here, with the reason) only by the promtool unit tests.

promtool comes from Debian's prometheus package (scripts/install_observability.sh): without it
these tests skip on a user's machine and fail under CI=true.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import tomllib

import yaml

from flk.sim.scenario import list_scenarios, scenario_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
IN_CI = os.environ.get("CI", "").lower() == "true"
# alerts no simulator fault can cause yet, proved by deploy/prometheus/tests only
UNIT_TEST_ONLY = {
    "FlkWalDiskPressure": "the simulator has no disk-full fault",
    "FlkWalWriteErrors": "the simulator has no failing-append fault",
    "FlkWalQuarantine": "a poisoned inbox record is not a simulator fault",
    "FlkCrrRpoAtRisk": "catalog runs are shorter than a 60 s lag",
    "FlkErrorBudgetBurnSlow": "needs 30 s above 2% over 5 m: longer than the catalog's outages",
}




def rules() -> list[dict]:
    out = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += group["rules"]
    return out


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def test_promtool_checks_the_rules_and_the_config(promtool) -> None:
    p = subprocess.run([promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 33 rules found" in p.stdout  # flk-alerts.yml: 11 recording rules its alerts read
    assert len(alerts()) == 22  # the seed's 19 alert rules, FlkCrrReaderStalled, FlkCrrPeerUnseen, FlkDedupStoreErrors
    p = subprocess.run([promtool, "check", "config", "--syntax-only", str(PROM / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_unit_tests_of_the_rules_pass(promtool) -> None:
    tests = sorted((PROM / "tests").glob("*.test.yml"))
    p = subprocess.run([promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=120,
                       cwd=PROM / "tests")
    assert p.returncode == 0, p.stdout + p.stderr
    tested = set(re.findall(r"alertname: (\w+)", "".join(t.read_text() for t in tests)))
    assert tested == {a["alert"] for a in alerts()}  # every alert has a unit test


def test_every_alert_has_severity_summary_and_a_runbook_in_the_repository() -> None:
    pages = set()
    for a in alerts():
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert "{{ $labels.instance }}" in a["annotations"]["summary"], a["alert"]
        page = ROOT / a["annotations"]["runbook_url"]
        assert page.is_file(), a["alert"]
        text = page.read_text()
        assert a["alert"] in text and "**Meaning.**" in text and "**Confirm.**" in text and "**Do.**" in text
        assert "flk " in text or "/metrics" in text  # how to confirm it with flk commands
        pages.add(page.name)
    assert pages == {p.name for p in (ROOT / "spec" / "runbooks").glob("*.md")} - {"README.md"}


def _exported_names(tmp_path) -> set[str]:
    from starlette.testclient import TestClient

    from flk.impl.server.app import create_app
    from flk.impl.server.config import load_config
    from flk.impl.testing.workload import bodies

    key = "0123456789abcdef0123456789abcdef"
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": key, "WAL_GROUP_DELAY_MS": "0"})
    with TestClient(create_app(cfg, 0), client=("127.0.0.1", 50000)) as client:
        for b in bodies(key.encode(), 3):
            client.post("/v1/pcs/submit", content=b)
        text = client.get("/metrics").text
    names = set(re.findall(r"^# TYPE (\w+) (\w+)", text, re.M))
    out = set()
    for name, kind in names:
        out |= {name} | ({name + "_total"} if kind == "counter" else set()) | \
            ({name + s for s in ("_bucket", "_count", "_sum")} if kind == "histogram" else set())
    return out


def test_every_metric_a_rule_reads_is_exported_by_flk_serve(tmp_path) -> None:
    exported = _exported_names(tmp_path) | {"up"}  # up: Prometheus' own
    crr = (ROOT / "impl" / "replication" / "service.py").read_text()  # the CRR collector (needs replication)
    used = set()
    for r in rules():
        used |= set(re.findall(r"\b(flk_[a-z0-9_]+|up)\b", r["expr"]))
    assert used, "no metric read"
    missing = [m for m in sorted(used) if m not in exported and f'"{re.sub(r"_total$", "", m)}"' not in crr]
    assert not missing, f"rules read metrics flk serve does not export: {missing}"
    # and the new series of this change are really there
    assert {"flk_wal_disk_used_ratio", "flk_store_call_seconds_bucket", "flk_kpi_escalation_ratio"} <= exported


def test_every_alert_is_proved_by_a_scenario_or_named_as_unit_test_only() -> None:
    fired = set()
    for name in list_scenarios():
        data = tomllib.loads((scenario_dir() / f"{name}.toml").read_text())
        assert "alerts" in data, f"{name} declares no [alerts]"
        fired |= {f["alert"] for f in data["alerts"].get("fire", [])}
    names = {a["alert"] for a in alerts()}
    assert fired | set(UNIT_TEST_ONLY) == names
    assert not fired & set(UNIT_TEST_ONLY)  # an entry whose alert a scenario now proves must go
