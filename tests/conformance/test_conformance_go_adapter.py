"""The Go reference adapter (conformance/adapters/go/, standard library only) passes every vector.

Go is installed from Debian packages by scripts/install_go.sh (make setup);
without it these tests skip, except under CI=true, where a missing toolchain fails.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from flk.conformance import runner
from flk.conformance.adapter_io import ProcessAdapter
from flk.conformance.ops import OPTIONAL_OPS, REQUIRED_OPS
from flk.conformance.vectors import load_cases

ROOT = pathlib.Path(__file__).resolve().parents[2]
GO_SOURCE = ROOT / "conformance" / "adapters" / "go" / "adapter.go"
IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def go_adapter(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        if IN_CI:
            pytest.fail("go not installed: make setup runs scripts/install_go.sh")
        pytest.skip("go not installed (make setup runs scripts/install_go.sh)")
    out = tmp_path_factory.mktemp("go") / "flk-go-adapter"
    env = {**os.environ, "GOCACHE": str(tmp_path_factory.getbasetemp() / "gocache")}
    build = subprocess.run([go, "build", "-o", str(out), str(GO_SOURCE)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert build.returncode == 0, build.stderr
    return out


def test_go_adapter_uses_only_the_standard_library():
    source = GO_SOURCE.read_text()
    block = re.search(r"^import \((.*?)^\)", source, re.S | re.M).group(1)
    imports = re.findall(r'"([^"]+)"', block)
    assert imports and all("." not in path.split("/")[0] for path in imports), imports


def test_go_adapter_passes_every_vector(go_adapter):
    cases = load_cases(ROOT / "spec" / "vectors")
    report = runner.run_cases(ProcessAdapter([str(go_adapter)]), cases, timeout=20)
    passed, failed, _skipped = report.counts()
    failures = [f"{r.case.case_id}: {r.message}" for r in report.results if r.status == "fail"]
    assert failed == 0, "\n".join(failures[:20])
    assert report.exit_code == 0 and report.problems == []
    assert set(report.hello["ops"]) >= set(REQUIRED_OPS)
    skipped_ops = {r.case.operation for r in report.results if r.status == "skip"}
    assert skipped_ops <= set(OPTIONAL_OPS), skipped_ops
    probes = sum(r.case.source == "runner" for r in report.results)  # self-consistent base64 probes
    acceptable = len(report.acceptable())  # legacy-extension: either answer conforms
    assert "coherence" in report.hello["ops"] and passed + acceptable == len(cases) + probes  # 100 %: none skipped
