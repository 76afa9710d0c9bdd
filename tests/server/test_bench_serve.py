"""``flk bench serve --json --quick``: one JSON object with the named figures."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .proc import FLK, clean_env

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk missing: run scripts/install_wrk.sh")
def test_bench_serve_quick_prints_figures() -> None:
    out = subprocess.run([FLK, "bench", "serve", "--json", "--quick", "--repeat", "1"],
                         capture_output=True, text=True, timeout=300, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    fig = json.loads(out.stdout)
    for key in ("sqlite_rps", "sqlite_p99_ms", "bare_rps", "ratio_sqlite_vs_bare", "cores"):
        assert key in fig
    assert fig["sqlite_rps"] > 0 and fig["bare_rps"] > 0
    assert fig["ratio_sqlite_vs_bare"] == round(fig["sqlite_rps"] / fig["bare_rps"], 3)
    assert fig["sqlite_socket_errors"] == 0
    assert fig["sqlite_non2xx"] < 0.05 * fig["sqlite_rps"] * fig["seconds_per_run"]
