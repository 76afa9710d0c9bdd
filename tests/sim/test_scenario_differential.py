"""Every catalog scenario gives the same history on the compiled and the pure path.

The differential tests of the fast paths (tests/foundation/test_fastcore.py,
tests/verifier/test_fastpath_differential.py) compare one function at a time on
generated inputs. This tier compares whole runs: each catalog scenario at seed 1
runs in two processes, one with the compiled extensions active and one with
``FLK_PURE=1`` (the registry then binds the pure references everywhere), and
the history digests (SHA-256 over the canonical event stream) must be
byte-identical, with the same invariant and SLO verdicts. A fast path that
answers any request differently -- a status, a body byte, a reason, a
recomputed figure, an event -- changes the digest.

The two processes of a scenario run side by side (``make test`` deals whole
files to its workers, so parametrising alone would not spread them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from flk.impl.core import accel
from flk.sim.scenario import list_scenarios

IN_CI = os.environ.get("CI", "").lower() == "true"
# The compiled run needs the extensions (built, whatever FLK_PURE says in this process);
# a pure-only install has nothing to compare.
BUILT = all(importlib.util.find_spec(name) is not None
            for name in (accel.CORE_EXTENSION, "flk.impl.verifier._fastverify"))


def _start(name: str, pure: bool, out: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "FLK_PURE"}
    if pure:
        env["FLK_PURE"] = "1"
    cmd = [sys.executable, "-m", "flk.impl", "sim", "run", name, "--seed", "1", "--out", out, "--quiet",
           "--no-plots", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen, label: str) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), f"{label}: exit {proc.returncode}\n{err[-2000:]}"
    return json.loads(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_scenarios())
def test_scenario_history_is_the_same_on_the_compiled_and_the_pure_path(name, tmp_path):
    if not BUILT:
        if IN_CI:
            pytest.fail("the compiled extensions were not built; see the pip install warning")
        pytest.skip("compiled extensions not built here: nothing to compare")
    compiled = _start(name, False, str(tmp_path / "compiled"))
    pure = _start(name, True, str(tmp_path / "pure"))
    fast, slow = _finish(compiled, "compiled"), _finish(pure, "FLK_PURE=1")
    assert fast["events"] > 0
    assert fast["digest"] == slow["digest"], (
        f"{name} seed 1: compiled history {fast['digest']} != pure {slow['digest']}; "
        f"`flk sim diff` the two run directories under {tmp_path}")
    verdicts = [[(c["id"], c["ok"], c["checked"]) for c in r["invariants"]] + [(s["metric"], s["ok"]) for s in r["slos"]]
                for r in (fast, slow)]
    assert verdicts[0] == verdicts[1]
