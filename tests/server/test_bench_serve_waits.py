"""``flk bench serve``'s two ways a closed loop waits, read from /proc: a process tree's
threads waiting for a core (``schedstat``) and the machine's idle CPU share (``/proc/stat``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flk.impl.lab.bench.serve import _cpu_idle_ticks, _tree_cpu_s, _tree_runqueue_wait_s

pytestmark = pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat"),
                                reason="no scheduler statistics in /proc here")

SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def _tree(code: str, children: int) -> subprocess.Popen:
    """A parent process that runs ``children`` copies of ``code`` and waits for them."""
    script = ("import subprocess, sys\n"
              f"ps = [subprocess.Popen([sys.executable, '-c', {code!r}]) for _ in range({children})]\n"
              "[p.wait() for p in ps]\n")
    return subprocess.Popen([sys.executable, "-c", script])


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _machine_cores() -> int:
    """CPUs ``/proc/stat`` counts (the whole machine's, whatever this process may use)."""
    try:
        with open("/proc/stat") as fh:
            return sum(1 for line in fh if line.startswith("cpu") and line[3:4].isdigit())
    except OSError:  # not Linux: the module is skipped anyway
        return 0


def _until_asleep(pid: int, children: int, timeout_s: float = 2.5) -> None:
    """Until ``pid`` has its ``children`` and every one of them and ``pid`` sleeps (state S), with
    the tree's CPU time unchanged over 0.1 s: on a busy machine an interpreter's start-up can take
    longer than any fixed wait, and a start-up waiting for a core uses no CPU either (so a still
    CPU time alone would not tell)."""
    end = time.monotonic() + timeout_s
    last = _tree_cpu_s(pid)
    while time.monotonic() < end:
        time.sleep(0.1)
        now = _tree_cpu_s(pid)
        procs = [str(pid), *_children(pid)]
        if now == last and len(procs) == 1 + children and all(_state(p) == "S" for p in procs):
            return
        last = now


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return fh.read().split()
    except OSError:
        return []


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def test_more_spinning_threads_than_cores_wait_for_a_core_and_a_sleeper_does_not() -> None:
    cores = _usable_cores()
    spinners = _tree(SPIN.format(s=3.0), 3 * cores)  # three runnable per core
    sleeper = _tree("import time; time.sleep(3.0)", 2)
    _until_asleep(sleeper.pid, 2)  # its interpreters' start-up waited for a core too: measure after it
    spun0, slept0, cpu0 = (_tree_runqueue_wait_s(spinners.pid), _tree_runqueue_wait_s(sleeper.pid),
                           _tree_cpu_s(spinners.pid))
    time.sleep(0.5)
    spun, slept = _tree_runqueue_wait_s(spinners.pid) - spun0, _tree_runqueue_wait_s(sleeper.pid) - slept0
    cpu = _tree_cpu_s(spinners.pid) - cpu0
    spinners.wait()
    sleeper.wait()
    # 3 x cores spinners on cores CPUs: each runs at most a third of the time and waits the
    # rest, so together they waited about twice as long as they ran (more on a busy machine)
    assert cpu > 0 and spun > 1.5 * cpu, (spun, cpu)
    assert slept < 0.05, slept  # sleeping is not waiting for a core
    assert _tree_runqueue_wait_s(spinners.pid) == 0.0  # gone: nothing to read, no error


@pytest.mark.skipif(_machine_cores() != _usable_cores(),
                    reason="/proc/stat counts CPUs this process may not use: its idle share is the machine's")
def test_idle_share_falls_while_every_core_spins() -> None:
    cores = _usable_cores()
    spinners = _tree(SPIN.format(s=1.5), cores + 1)
    time.sleep(0.4)  # started and spinning
    idle0 = _cpu_idle_ticks()
    time.sleep(0.8)
    idle1 = _cpu_idle_ticks()
    spinners.wait()
    busy_idle = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    assert idle1[1] > idle0[1] and idle1[0] >= idle0[0]  # counters only grow
    assert busy_idle < 0.25, busy_idle  # more spinners than cores: hardly a tick left idle
