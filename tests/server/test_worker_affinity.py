"""Where the workers run (``WORKER_CPU_AFFINITY``, :func:`flk.impl.server.supervisor.worker_cpus`):
the rule, the pinning of every thread of a process, and a real ``flk serve`` with 2 workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.server.supervisor import CPU_AFFINITY_MODES, allowed_cpus, cpu_list, worker_cpus

from .proc import ServerProc

ALLOWED = allowed_cpus()
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2 or not hasattr(os, "sched_setaffinity"),
                                    reason="needs Linux and at least 2 usable CPUs")


@given(workers=st.integers(0, 70), allowed=st.sets(st.integers(0, 255), max_size=40),
       mode=st.sampled_from(CPU_AFFINITY_MODES))
def test_the_rule_pins_round_robin_only_where_it_may(workers: int, allowed: set[int], mode: str) -> None:
    got = worker_cpus(workers, allowed, mode)
    assert len(got) == workers
    cpus = sorted(allowed)
    pinned = workers >= 2 and len(cpus) >= 2 and (mode == "on" or (mode == "auto" and workers >= len(cpus)))
    if not pinned:
        assert got == [None] * workers
        return
    # worker i on the i-th allowed core, round robin: one core each, every core used, evenly
    assert got == [frozenset({cpus[i % len(cpus)]}) for i in range(workers)]
    load = [sum(1 for g in got if c in g) for c in cpus]
    assert max(load) - min(load) <= 1 and (mode == "on" or min(load) >= 1)


def test_fewer_workers_than_cores_are_left_alone_under_auto() -> None:
    # several servers on one large host must not all pile onto its first cores
    assert worker_cpus(2, range(16), "auto") == [None, None]
    assert worker_cpus(2, range(16), "on") == [frozenset({0}), frozenset({1})]
    assert worker_cpus(3, {4, 6}, "auto") == [frozenset({4}), frozenset({6}), frozenset({4})]
    assert worker_cpus(1, {0, 1}, "on") == [None]  # one worker may use every core
    with pytest.raises(ValueError):
        worker_cpus(2, {0, 1}, "sometimes")
    assert cpu_list(frozenset({3, 1})) == "1,3" and cpu_list(None) == ""


def _affinities(pid: int) -> dict[int, set[int]]:
    """The CPU set of every thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = set(os.sched_getaffinity(int(tid)))
        except (ProcessLookupError, FileNotFoundError):
            pass
    return out


_PIN_CHILD = r"""
import json, os, sys, threading
from flk.impl.server.supervisor import pin_process
stop = threading.Event()
before = threading.Thread(target=stop.wait, daemon=True)  # a thread started before the pinning
before.start()
refused = pin_process(frozenset(json.loads(sys.argv[1])))
after = threading.Thread(target=stop.wait, daemon=True)  # and one after it: inherits it
after.start()
sets = {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
print(json.dumps({"refused": refused, "sets": sets}))
"""


def _pin_in_child(cpus: list[int]) -> dict:
    out = subprocess.run([sys.executable, "-c", _PIN_CHILD, json.dumps(cpus)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_two_cpus
def test_pinning_covers_the_threads_before_it_and_those_started_after() -> None:
    got = _pin_in_child([ALLOWED[1]])
    assert got["refused"] is None
    assert len(got["sets"]) >= 3 and all(s == [ALLOWED[1]] for s in got["sets"].values()), got


@needs_two_cpus
def test_a_refused_pinning_says_why_and_leaves_the_process_where_it_ran() -> None:
    got = _pin_in_child([max(ALLOWED) + 4096])  # no such CPU: the kernel refuses
    assert got["refused"] and "Error" in got["refused"]
    assert all(s == ALLOWED for s in got["sets"].values()), got


def _workers(srv: ServerProc) -> dict[int, dict]:
    """worker index -> its worker_started log line (pid, cpus), the latest per index."""
    out = {}
    for line in srv.log_text().splitlines():
        if line.startswith("{") and '"event":"worker_started"' in line:
            rec = json.loads(line)
            out[int(rec["detail"].split("-")[1])] = rec
    return out


def _submit_one(srv: ServerProc, key: str, i: int) -> None:
    from flk.impl.testing.workload import bodies

    for body in bodies(key.encode(), 8)[i * 4:(i + 1) * 4]:  # a few connections: both workers get some
        r = httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=20)
        assert r.status_code == 200, r.text


@needs_two_cpus
def test_two_workers_each_run_with_all_their_threads_on_a_core_of_their_own(tmp_path) -> None:
    key = "0123456789abcdef0123"
    workers = len(ALLOWED)  # auto pins when the workers cover the cores (the default worker count)
    with ServerProc(tmp_path, {"PCS_HMAC_KEY": key, "WORKERS": str(workers)}) as srv:
        _submit_one(srv, key, 0)
        _submit_one(srv, key, 1)
        started = _workers(srv)
        assert sorted(started) == list(range(workers))
        seen = {}
        for i, rec in started.items():
            sets = _affinities(rec["pid"])
            assert len(sets) >= 2, sets  # the event loop and the threads the app started
            assert all(s == {ALLOWED[i]} for s in sets.values()), (i, sets)
            assert rec["cpus"] == str(ALLOWED[i])
            seen[i] = ALLOWED[i]
        assert len(set(seen.values())) == workers  # each on its own core
        # a worker killed is restarted on the core it ran on
        victim = started[0]["pid"]
        os.kill(victim, 9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _workers(srv)[0]["pid"] == victim:
            time.sleep(0.1)
        again = _workers(srv)[0]
        assert again["pid"] != victim and again["cpus"] == str(ALLOWED[0])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(s == {ALLOWED[0]} for s in _affinities(again["pid"]).values()):
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        assert all(s == {ALLOWED[0]} for s in _affinities(again["pid"]).values())


@needs_two_cpus
def test_with_affinity_off_the_workers_run_where_the_supervisor_may(tmp_path) -> None:
    key = "0123456789abcdef0123"
    with ServerProc(tmp_path, {"PCS_HMAC_KEY": key, "WORKERS": "2", "WORKER_CPU_AFFINITY": "off"}) as srv:
        _submit_one(srv, key, 0)
        started = _workers(srv)
        assert all(rec["cpus"] == "any" for rec in started.values())
        for rec in started.values():
            assert all(s == set(ALLOWED) for s in _affinities(rec["pid"]).values())


def test_a_bad_affinity_setting_is_a_usage_error(tmp_path) -> None:
    from .proc import FLK, clean_env

    out = subprocess.run([FLK, "serve", "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env=clean_env(WORKER_CPU_AFFINITY="sometimes", PCS_HMAC_KEY="0123456789abcdef0123"))
    assert out.returncode == 2 and "WORKER_CPU_AFFINITY must be one of auto, on, off" in out.stderr
    assert "Traceback" not in out.stderr


@needs_two_cpus
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_bench_anchor_places_its_workers_as_told(mode: str) -> None:
    # flk bench serve's bare Starlette runs on this supervisor: pinned like the server (auto), or
    # left to the scheduler as stock uvicorn runs it (off: the bench's bare_starlette_unpinned)
    workers = len(ALLOWED)
    proc = subprocess.Popen([sys.executable, "-m", "flk.impl.testing.bare", "--port", "0", "--workers",
                             str(workers), "--starlette", "--cpu-affinity", mode],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # the listening line: every worker listens
        assert '"listening"' in line, line
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as fh:
                        stat = fh.read()
                    with open(f"/proc/{d}/cmdline", "rb") as fh:
                        cmd = fh.read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == proc.pid and b"resource_tracker" not in cmd:
                    kids.append(int(d))
        assert len(kids) == workers
        placed = sorted(next(iter(_affinities(k).values())) == set(ALLOWED) for k in kids)
        cores = sorted(min(set().union(*_affinities(k).values())) for k in kids)
        if mode == "off":
            assert all(placed)
        else:
            assert not any(placed) and cores == ALLOWED
    finally:
        proc.terminate()
        proc.wait(timeout=30)
