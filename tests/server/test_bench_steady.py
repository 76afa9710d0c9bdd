"""``flk bench serve``'s steady window (:func:`flk.impl.lab.bench.serve._steady`): the cores a
server and its load generator use in the middle of a run, from exact on-CPU time, starting
only once the server's CPU shows the requests began."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flk.impl.lab.bench import serve

needs_schedstat = pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"),
                                     reason="no scheduler statistics (/proc/<pid>/schedstat)")

SPIN_AFTER = "import sys, time; time.sleep(float(sys.argv[1])); end = time.time() + float(sys.argv[2])\n" \
             "while time.time() < end: pass\n"


def _spinner(wait_s: float, spin_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SPIN_AFTER, str(wait_s), str(spin_s)])


@needs_schedstat
def test_the_window_waits_for_the_server_and_reads_its_cores_and_the_load_generators(monkeypatch) -> None:
    # the suite may load both cores: a spinner then gets a fraction of one, so the start is
    # a lower rate here (the rule under test is the wait, not the threshold's value)
    monkeypatch.setattr(serve, "STEADY_START_CORES", 0.05)
    server, loadgen = _spinner(1.0, 3.0), _spinner(0.0, 3.5)  # the "requests" begin after 1 s
    try:
        time.sleep(0.4)  # the interpreters started (a running server is idle until the requests come)
        t0 = time.monotonic()
        got = serve._steady([server.pid], [loadgen.pid], 1.0)
        took = time.monotonic() - t0
    finally:
        for p in (server, loadgen):
            p.kill()
            p.wait()
    assert got is not None
    # it waited for the server's CPU (0.6 s more), then the lead and half the run: the busy window
    assert took >= 0.5 + serve.STEADY_LEAD_S + 0.5
    # one spinning process each: busy in the window (a window before the server began would read
    # it near 0: it slept), never more than a core -- how much of one depends on the machine's load
    assert 0.05 <= got["server_cores"] <= 1.05 and 0.05 <= got["loadgen_cores"] <= 1.05, got
    assert 0.0 <= got["idle_fraction"] < 1.0


@needs_schedstat
def test_no_window_when_the_server_never_works(monkeypatch) -> None:
    monkeypatch.setattr(serve, "STEADY_GIVE_UP_S", 0.4)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert serve._steady([idle.pid], [], 1.0) is None
    finally:
        idle.kill()
        idle.wait()
