"""The server's threads carry their names in the kernel (``/proc/<pid>/task/<tid>/comm``:
``top -H``, ``ps -T``, perf), and ``flk bench serve`` splits a server's CPU and its disk
writes by them."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.bench.serve import (
    _by_name_between,
    _disk_written_bytes,
    _per_request_by_name,
    _tree_thread_cpu_by_name,
    _tree_thread_wchar_by_name,
    fs_type,
)
from flk.impl.storage import threads as named
from flk.impl.storage.threads import COMM_BYTES, NamedThread, os_name

from .proc import ServerProc

HAVE_COMM = os.path.exists("/proc/thread-self/comm")
needs_comm = pytest.mark.skipif(not HAVE_COMM, reason="no /proc/thread-self/comm here (not Linux)")


def _comm_in(thread: NamedThread) -> bytes:
    """The kernel name ``thread`` gave itself, read on that thread as it runs."""
    got: dict[str, bytes] = {}

    def read() -> None:
        with open("/proc/thread-self/comm", "rb") as fh:
            got["comm"] = fh.read()

    thread._target = read  # type: ignore[attr-defined]
    thread.start()
    thread.join(10)
    return got["comm"]


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_os_name_is_the_names_longest_whole_character_prefix_the_kernel_keeps(name: str) -> None:
    raw = os_name(name)
    text = raw.decode("utf-8")  # never a cut character
    assert len(raw) <= COMM_BYTES and "\n" not in text and "\0" not in text
    whole = name.replace("\n", " ").replace("\0", " ").encode("utf-8", "replace")
    assert whole.startswith(raw)
    # the longest such prefix: one more character would not fit
    assert raw == whole or len(raw) + len(whole[len(raw):].decode("utf-8", "ignore")[:1].encode("utf-8")) > COMM_BYTES


@needs_comm
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
@settings(max_examples=60, deadline=None)
def test_a_named_thread_is_known_to_the_kernel_by_its_name(name: str) -> None:
    thread = NamedThread(name=name, daemon=True)  # "" is threading's own "Thread-N"
    assert _comm_in(thread) == os_name(thread.name) + b"\n"


@needs_comm
def test_a_plain_thread_keeps_the_processes_name_and_a_named_one_its_own() -> None:
    with open("/proc/self/comm", "rb") as fh:
        process = fh.read()
    plain: dict[str, bytes] = {}

    def read() -> None:
        with open("/proc/thread-self/comm", "rb") as fh:
            plain["comm"] = fh.read()

    t = threading.Thread(target=read)
    t.start()
    t.join(10)
    assert plain["comm"] == process  # what every server thread read before
    assert _comm_in(NamedThread(name="submit-batch", daemon=True)) == b"submit-batch\n"


@needs_comm
def test_a_pools_threads_are_named_by_its_initializer() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from flk.impl.storage.threads import name_pool_thread

    def comm() -> bytes:
        with open("/proc/thread-self/comm", "rb") as fh:
            return fh.read()

    with ThreadPoolExecutor(1, thread_name_prefix="dedup", initializer=name_pool_thread) as pool:
        assert pool.submit(comm).result(10) == b"dedup_0\n"


def test_a_thread_the_kernel_will_not_name_runs_as_before(monkeypatch) -> None:
    """No /proc (not Linux) or a refused write: the thread runs its target all the same."""
    def refuse(*args, **kwargs):
        raise PermissionError("no")

    monkeypatch.setattr(named, "open", refuse, raising=False)
    assert named.name_this_thread("x") is False
    ran = []
    t = NamedThread(target=ran.append, args=(1,), name="anything", daemon=True)
    t.start()
    t.join(10)
    assert ran == [1]


@needs_comm
def test_the_bench_splits_a_process_trees_cpu_by_thread_name() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    t = NamedThread(target=spin, name="bench-spin", daemon=True)
    before = _tree_thread_cpu_by_name(os.getpid())
    t.start()
    time.sleep(0.6)
    after = _tree_thread_cpu_by_name(os.getpid())
    stop.set()
    t.join(10)
    assert "main" in before and after.get("bench-spin", 0.0) > 0.1  # a spinning thread shows by its name
    split = _per_request_by_name(_by_name_between([before], [after]), 1000)
    assert split["bench-spin"] == pytest.approx(after["bench-spin"] * 1e6 / 1000, abs=0.1)
    assert all(v > 0 for v in split.values())  # a name that used no CPU is left out


@needs_comm
@pytest.mark.skipif(not os.path.exists("/proc/thread-self/io"), reason="no per-thread I/O counters here")
def test_the_bench_splits_a_process_trees_writes_by_thread_name_and_reads_the_disks(tmp_path) -> None:
    chunk, rounds = b"x" * 7000, 150  # 1 MB, in appends of a batch's size, each synced as a log's
    wrote, read = threading.Event(), threading.Event()

    def write() -> None:
        with open(tmp_path / "written", "wb") as fh:
            for _ in range(rounds):
                fh.write(chunk)
                fh.flush()
                os.fdatasync(fh.fileno())
        wrote.set()
        read.wait(30)  # a thread's counters go to its process when it ends: read them before

    t = NamedThread(target=write, name="bench-writer", daemon=True)
    before, disk0 = _tree_thread_wchar_by_name(os.getpid()), _disk_written_bytes(str(tmp_path))
    t.start()
    assert wrote.wait(30)
    after, disk1 = _tree_thread_wchar_by_name(os.getpid()), _disk_written_bytes(str(tmp_path))
    read.set()
    t.join(30)
    split = _by_name_between([before], [after])
    # what it passed to write, by its name (and the name itself: NamedThread writes it to
    # /proc/thread-self/comm); the main thread wrote nothing meanwhile
    assert rounds * len(chunk) <= split["bench-writer"] <= rounds * len(chunk) + 16, split
    assert split.get("main", 0.0) < len(chunk), split
    if fs_type(str(tmp_path)) in ("tmpfs", "overlay") or disk0 is None:
        return  # no block device behind tmp_path: nothing more to read
    # every synced byte reached the disk (an append rewrites its partial last block: more)
    assert disk1 - disk0 >= rounds * len(chunk)


def test_the_per_request_split_adds_up_over_processes_and_leaves_idle_names_out() -> None:
    before = [{"main": 1.0, "submit-batch": 2.0, "idle": 0.5}, {"main": 1.0, "submit-batch": 1.0}]
    after = [{"main": 1.5, "submit-batch": 2.5, "idle": 0.5}, {"main": 1.25, "submit-batch": 1.5, "new": 0.25}]
    assert _per_request_by_name(_by_name_between(before, after), 10_000) == {
        "main": 75.0, "new": 25.0, "submit-batch": 100.0}


@needs_comm
def test_a_serving_workers_threads_carry_their_names(tmp_path) -> None:
    key = "0123456789abcdef0123"
    with ServerProc(tmp_path, {"PCS_HMAC_KEY": key}) as srv:
        from flk.impl.testing.workload import bodies

        r = httpx.post(srv.url + "/v1/pcs/submit", content=bodies(key.encode(), 1)[0], timeout=20)
        assert r.status_code == 200, r.text
        names = _tree_thread_cpu_by_name(srv.proc.pid)
    # the batch driver's two threads (started by the first batch), the SQLite store's checkpoint
    # thread (the first 15 bytes of its name), the store executor's pool thread
    assert {"main", "submit-batch", "submit-sync", "dedup-checkpoin", "dedup_0"} <= set(names), names


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.integers(0, 10**12), st.integers(0, 10**9), st.one_of(st.none(), st.integers(0, 10**12)),
       st.integers(1, 10**7), st.floats(0.5, 60.0))
def test_a_runs_writes_are_the_differences_of_two_readings(disk0, grew, main_bytes, requests, seconds) -> None:
    from flk.impl.lab.bench.serve import _writes_between

    before = ([{"main": 10.0, "submit-batch": 100.0}], disk0)
    after = ([{"main": 10.0 + (main_bytes or 0), "submit-batch": 100.0 + 4096}], disk0 + grew)
    got = _writes_between(before, after, requests, seconds)
    assert got["disk_write_kb_per_req"] * 1024 * requests == pytest.approx(grew, rel=1e-9, abs=1e-6)
    assert got["disk_write_mb_per_s"] * 1e6 * seconds == pytest.approx(grew, rel=1e-9, abs=1e-6)
    assert got["thread_wchar_kb_per_req"]["submit-batch"] == round(4 / requests, 2) or 4 / requests < 0.005
    assert ("main" in got["thread_wchar_kb_per_req"]) is bool(main_bytes)  # a name that wrote nothing is left out
    # a disk that cannot be read (no device behind the work directory) gives no disk figures
    assert "disk_write_kb_per_req" not in _writes_between((before[0], None), after, requests, seconds)
