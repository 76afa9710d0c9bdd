"""A region's clock faults (flk.impl.lab.cluster.faketime): under libfaketime and the shim the
server's wall clock moves by the offset in its timestamp file, forward or back, while its
monotonic clock and every timed wait keep the machine's time. Under libfaketime 0.9.10 alone,
with the monotonic clock left real, ``time.sleep`` failed with EINVAL; with both clocks faked
``Event.wait(0.3)`` never returned (the replication thread's waits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from flk.impl.lab.cluster import faketime

from .conftest import unavailable

PROBE = r"""
import json, queue, sys, threading, time
def took(fn):
    t0 = time.monotonic(); fn(); return round(time.monotonic() - t0, 3)
def get():
    try: queue.Queue().get(timeout=0.2)
    except queue.Empty: pass
def cond():
    c = threading.Condition()
    with c: c.wait(0.2)
out = {"wall": time.time(), "mono": time.monotonic(), "sleep": took(lambda: time.sleep(0.2)),
       "event": took(lambda: threading.Event().wait(0.2)), "queue": took(get), "cond": took(cond)}
print(json.dumps(out), flush=True)
if len(sys.argv) > 1:  # follow the file: the wall clock's offset every 0.25 s for this many seconds
    seen = []
    t_end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < t_end:
        seen.append((round(time.monotonic(), 3), time.time()))
        threading.Event().wait(0.25)
    print(json.dumps(seen), flush=True)
"""


@pytest.fixture
def shim(tmp_path):
    missing = [what for what, ok in (("libfaketime (Debian package faketime)", faketime.library()),
                                     ("a C compiler", faketime.compiler())) if not ok]
    if missing:
        unavailable(f"needs {', '.join(missing)} (`make setup` installs them)")
    return faketime.build_shim(tmp_path)


def _probe(shim, tmp_path, offset: float, follow_s: float | None = None, step=None):
    rc = tmp_path / "faketime.rc"
    rc.write_text(faketime.offset_text(offset))
    env = {**os.environ, **faketime.preload_env(shim, rc)}
    args = [sys.executable, "-c", PROBE] + ([str(follow_s)] if follow_s else [])
    t_wall, t_mono = time.time(), time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    if step is not None:
        time.sleep(step[0])
        rc.write_text(faketime.offset_text(step[1]))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return first, t_wall, t_mono, (json.loads(out) if follow_s else None)


@pytest.mark.parametrize("offset", [30.0, -30.0, 0.0])
def test_the_wall_clock_moves_and_timed_waits_keep_real_time(shim, tmp_path, offset):
    first, t_wall, t_mono, _ = _probe(shim, tmp_path, offset)
    assert abs(first["wall"] - t_wall - offset) < 2.0, (first["wall"] - t_wall, offset)
    assert 0.0 <= first["mono"] - t_mono < 2.0  # the monotonic clock is the machine's
    for wait in ("sleep", "event", "queue", "cond"):
        assert 0.19 <= first[wait] < 1.5, (wait, first)


def test_a_step_of_the_file_moves_the_running_process_clock_back(shim, tmp_path):
    """The heal: +30 s, then +0 written while the process runs; its clock steps back within a
    couple of seconds (libfaketime re-reads the file once a second) and its waits go on."""
    first, t_wall, t_mono, seen = _probe(shim, tmp_path, 30.0, follow_s=4.0, step=(0.5, 0.0))
    offsets = [wall - (t_wall + (mono - t_mono)) for mono, wall in seen]
    assert abs(offsets[0] - 30.0) < 2.0, offsets
    assert abs(offsets[-1]) < 2.0, offsets
    assert len(seen) >= 10  # the 0.25 s waits ran at their pace across the step
