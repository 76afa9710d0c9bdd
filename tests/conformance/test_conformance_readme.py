"""conformance/README.md cannot drift: its adapter is the tested example file,
that adapter passes every vector of its ops, and the CI job is valid YAML
running the real command."""

from __future__ import annotations

import pathlib
import re
import sys

import yaml

from flk.conformance import runner
from flk.conformance.adapter_io import ProcessAdapter
from flk.conformance.vectors import load_cases
from flk.impl.lab.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "conformance" / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "conformance" / "examples" / "minimal_adapter.py"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_adapter_is_the_example_file():
    assert EXAMPLE.read_text(encoding="utf-8") in [b for b in _blocks("python")]


def test_minimal_adapter_passes_every_vector_of_its_ops():
    ops = ["fmt9", "canonical_bytes", "sign_hmac", "verify_hmac"]
    cases = load_cases(profile="v1", operations=ops)
    report = runner.run_cases(ProcessAdapter([sys.executable, str(EXAMPLE)]), cases, timeout=20)
    probes = sum(r.case.source == "runner" for r in report.results)  # self-consistent base64 probes
    assert probes > 5 and report.counts() == (len(cases) + probes, 0, 0), runner.format_text(report)[-5:]
    # and the other ops are skipped, not failed
    others = load_cases(profile="v1")
    report = runner.run_cases(ProcessAdapter([sys.executable, str(EXAMPLE)]), others, timeout=20, probes=False)
    assert report.counts() == (len(cases), 0, len(others) - len(cases))


def test_ci_job_is_valid_yaml_with_a_real_command():
    (job,) = [b for b in _blocks("yaml") if "flk conformance vectors" in b]  # the server job: test_server_suite.py
    doc = yaml.safe_load(job)
    steps = doc["jobs"]["vectors"]["steps"]
    run = [s["run"] for s in steps if "flk conformance" in s.get("run", "")][0]
    argv = run.split()
    assert argv[:3] == ["flk", "conformance", "vectors"]
    # every option the job uses exists in the CLI
    sub = build_parser(only="conformance")
    args = sub.parse_args(["conformance", "vectors", "--adapter", "x", "--profile", "v1", "--timeout", "10",
                           "--junit", "a.xml", "--json", "a.json"])
    assert args.junit == "a.xml" and args.json == "a.json"
    for opt in [a for a in argv if a.startswith("--")]:
        assert opt in {"--adapter", "--profile", "--timeout", "--junit", "--json"}
