"""The compiled rows' ``flk-walbuf`` SQLite VFS (``impl/dedup/_walbuf.h``): a transaction's WAL
frames reach the kernel in one write at its commit frame, and nothing else about the file
changes.

* One commit of fresh rows is one write to the kernel (``Rows.walbuf_stats``); a connection
  opened with SQLite's default VFS does not go through it.
* Hypothesis, on real files: commits through the VFS -- small and larger than what it holds,
  with a page cache so small that SQLite spills a transaction's pages to the WAL and reads
  them back before its commit -- interleaved with commits and checkpoints of connections on
  SQLite's default VFS. After every step a default-VFS reader and the VFS's own connection
  see exactly the committed rows, and at the end a copy of the live files (the state a
  killed process leaves) holds every one of them and passes ``integrity_check``.
* A process killed right after a commit returned (while it waits, or racing its next commit):
  every commit it reported is in the file, every other one whole or absent.
* A write the kernel refuses (``RLIMIT_FSIZE``) fails its commit, as with the default VFS;
  the rows committed before and after are there, the failed batch's are not.
* Planted bugs in ``_walbuf.h`` are caught: the commit frame held (5), a read past held bytes
  (6), more held than the default VFS writes in one call (7), a failed write reported as
  done (8).
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome
from flk.impl.dedup import sqlite as sq
from flk.impl.testing.cbuild import build_variant

ROOT = pathlib.Path(__file__).resolve().parents[2]
try:
    from flk.impl.dedup import _fastsqlite as FAST
except ImportError:  # pragma: no cover - an install without the compiled rows
    FAST = None

needs_compiled = pytest.mark.skipif(FAST is None and os.environ.get("CI") != "true",
                                    reason="flk.impl.dedup._fastsqlite not built")
NOW = 1_000.0
EXPIRES = 1e12
PROPERTY = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PLANTED = settings(PROPERTY, phases=[Phase.generate], report_multiple_bugs=False)


def _make_file(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(sq._SCHEMA)
    conn.close()


def _setup_sql(cache_pages: int | None = None) -> str:
    """The store's pragmas; no automatic checkpoint (the tests run their own); optionally a
    page cache of ``cache_pages`` pages (a larger transaction spills to the WAL)."""
    extra = ["PRAGMA wal_autocheckpoint = 0"]
    if cache_pages is not None:
        extra.append(f"PRAGMA cache_size = {cache_pages}")
    return "; ".join((*sq._PRAGMAS, *extra))


def _open(module, path: str, cache_pages: int | None = None, vfs: str | None = "walbuf"):
    """Rows through ``module``'s own walbuf VFS (``vfs="walbuf"``) or SQLite's default (None)."""
    return module.open_rows(path, 5000, _setup_sql(cache_pages), sq._UPSERT_ONE, sq._GET, StoredOutcome,
                            module.WALBUF_VFS if vfs == "walbuf" else vfs)


def _items(rng: random.Random, n: int, body_max: int = 600) -> list:
    return [(f"t-{rng.randrange(3)}", f"{rng.getrandbits(256):064x}",
             StoredOutcome(f"{rng.getrandbits(256):064x}", 200, b"x" * rng.randrange(body_max), NOW, "eu", "v1"))
            for _ in range(n)]


def _rows_of(conn: sqlite3.Connection) -> dict:
    return {(t, p): bytes(o) for t, p, o in conn.execute("SELECT tenant, pcs_id, outcome FROM dedup")}


def _put(rows, items) -> dict:
    answers = rows.put_many(items, NOW, EXPIRES)
    assert all(won for won, _ in answers), "fresh random keys: every row is written"
    return {(t, p): o.to_bytes() for t, p, o in items}


def _snapshot(path: str, into: str) -> dict:
    """The live files copied (what a killed process leaves: no clean close, no checkpoint),
    opened by SQLite's default VFS: its rows, after an integrity check."""
    for suffix in ("", "-wal"):
        if os.path.exists(path + suffix):
            shutil.copyfile(path + suffix, into + suffix)
    conn = sqlite3.connect(into, isolation_level=None)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return _rows_of(conn)
    finally:
        conn.close()


# ------------------------------------------------------------ one write per commit

@needs_compiled
def test_a_commit_reaches_the_kernel_in_one_write(tmp_path):
    path = str(tmp_path / "d.db")
    _make_file(path)
    rng = random.Random(1)
    rows = _open(FAST, path)
    try:
        _put(rows, _items(rng, 300))  # a tree of some depth: fresh keys land on many pages
        asked0, made0 = rows.walbuf_stats()
        _put(rows, _items(rng, 20))
        asked, made = rows.walbuf_stats()
        assert made - made0 == 1
        assert asked - asked0 >= 20  # a header and a page per frame: at least 10 pages
    finally:
        rows.close()
    plain = _open(FAST, path, vfs=None)  # SQLite's default VFS: not through this one
    try:
        before = plain.walbuf_stats()
        _put(plain, _items(rng, 20))
        assert plain.walbuf_stats() == before
    finally:
        plain.close()


# ------------------------------------------------------------ the property

def _operations():
    put = st.tuples(st.just("put"), st.integers(1, 400))
    other = st.tuples(st.just("other"), st.integers(1, 40))
    ckpt = st.tuples(st.just("checkpoint"), st.sampled_from(["PASSIVE", "FULL", "RESTART", "TRUNCATE"]))
    return st.tuples(st.sampled_from([None, 6, 40]), st.integers(0, 2**32 - 1),
                     st.lists(st.one_of(put, put, other, ckpt), min_size=1, max_size=10))


def walbuf_property(module, planted: bool = False):
    """Commits through ``module``'s VFS, seen at once and whole by every connection."""

    @(PLANTED if planted else PROPERTY)
    @given(drawn=_operations())
    def prop(drawn):
        cache_pages, seed, ops = drawn
        rng = random.Random(seed)
        with tempfile.TemporaryDirectory(prefix="flk-walbuf-") as d:
            path = os.path.join(d, "d.db")
            _make_file(path)
            rows = _open(module, path, cache_pages)
            other = sqlite3.connect(path, isolation_level=None, timeout=5)
            reader = sqlite3.connect(path, isolation_level=None, timeout=5)
            model: dict = {}
            try:
                for op, arg in ops:
                    if op == "put":
                        model.update(_put(rows, _items(rng, arg)))
                    elif op == "other":  # a writer on SQLite's default VFS
                        items = _items(rng, arg)
                        other.execute("BEGIN IMMEDIATE")
                        other.executemany("INSERT INTO dedup VALUES (?, ?, ?, ?)",
                                          [(t, p, EXPIRES, o.to_bytes()) for t, p, o in items])
                        other.execute("COMMIT")
                        model.update({(t, p): o.to_bytes() for t, p, o in items})
                    else:
                        other.execute(f"PRAGMA wal_checkpoint({arg})").fetchone()
                    assert _rows_of(reader) == model
                    keys = list(model)
                    assert rows.get_many(keys, NOW) == [model[k] for k in keys]
                assert _snapshot(path, os.path.join(d, "copy.db")) == model
            finally:
                rows.close()
                other.close()
                reader.close()

    return prop


@needs_compiled
def test_commits_are_seen_at_once_and_whole():
    walbuf_property(FAST)()


# ------------------------------------------------------------ a killed process

# a child process's start: argv = [module file, module name, repository root, database path, ...]
_CHILD = r"""
import importlib.machinery, importlib.util, os, random, resource, signal, sys
sys.path[:0] = [sys.argv[3]]
from tests.dedup.test_sqlite_walbuf import _items, _open, _put
loader = importlib.machinery.ExtensionFileLoader(sys.argv[2], sys.argv[1])
spec = importlib.util.spec_from_file_location(sys.argv[2], sys.argv[1], loader=loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
path = sys.argv[4]
"""
_WRITER = _CHILD + r"""
rows = _open(module, path)
for i in range(10_000):
    _put(rows, _items(random.Random(i), 25))
    print(i, flush=True)
    sys.stdin.readline()  # the parent's go: the next commit (or, blocked here, the kill)
"""


def _batch_keys(i: int) -> set:
    return {(t, p) for t, p, _ in _items(random.Random(i), 25)}


def killed_writer_case(module, acknowledged: int, busy: bool) -> None:
    """A writer through ``module``'s VFS killed (SIGKILL) once it reported ``acknowledged``
    + 1 commits -- while it waits for the next go (``busy`` False: the kill lands right after
    that commit returned, on every run), or just after the go (``busy``: the kill races the
    next commit): each reported commit is in the file, every other one whole or absent."""
    with tempfile.TemporaryDirectory(prefix="flk-walbuf-kill-") as d:
        path = os.path.join(d, "d.db")
        _make_file(path)
        name = module.__name__.rpartition(".")[2]
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, module.__file__, name, str(ROOT), path],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            for k in range(acknowledged + 1):
                line = proc.stdout.readline()
                assert line, "the writer stopped before it was killed"
                if k < acknowledged or busy:
                    proc.stdin.write("\n")
                    proc.stdin.flush()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
        stored = set(_snapshot(path, os.path.join(d, "copy.db")))
        for i in range(acknowledged + 1):
            assert _batch_keys(i) <= stored, f"commit {i} was acknowledged and lost"
        i = acknowledged + 1
        while stored & _batch_keys(i):
            assert _batch_keys(i) <= stored, f"commit {i} is in the file in part"
            i += 1


@needs_compiled
@pytest.mark.parametrize("acknowledged, busy", [(0, False), (6, False), (40, False), (6, True), (40, True)])
def test_a_killed_writer_loses_no_acknowledged_commit(acknowledged, busy):
    killed_writer_case(FAST, acknowledged, busy)


# ------------------------------------------------------------ a refused write

_LIMITED = _CHILD + r"""
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
rows = _open(module, path, vfs="walbuf" if sys.argv[5] == "walbuf" else None)
_put(rows, _items(random.Random(0), 40))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path + "-wal") + 8192, hard))
try:
    _put(rows, _items(random.Random(1), 80))
    print("committed", flush=True)
except module.Error as exc:
    print("refused", exc, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
_put(rows, _items(random.Random(2), 40))
rows.close()
print("done", flush=True)
"""


def refused_write_case(module, vfs: str) -> None:
    with tempfile.TemporaryDirectory(prefix="flk-walbuf-full-") as d:
        path = os.path.join(d, "d.db")
        _make_file(path)
        name = module.__name__.rpartition(".")[2]
        done = subprocess.run([sys.executable, "-c", _LIMITED, module.__file__, name, str(ROOT), path, vfs],
                              capture_output=True, text=True, timeout=120)
        lines = done.stdout.splitlines()
        assert done.returncode == 0, done.stderr[-2000:]
        assert lines[0].startswith("refused"), lines
        assert lines[-1] == "done"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = set(_rows_of(conn))
        finally:
            conn.close()
        keys = [{(t, p) for t, p, _ in _items(random.Random(i), n)} for i, n in ((0, 40), (1, 80), (2, 40))]
        assert keys[0] <= stored and keys[2] <= stored
        assert not keys[1] & stored


@needs_compiled
@pytest.mark.parametrize("vfs", ["walbuf", "default"])
def test_a_refused_write_fails_its_commit(vfs):
    refused_write_case(FAST, vfs)


# ------------------------------------------------------------ planted bugs

def planted_build(bug: int):
    """``_fastsqlite.c`` compiled with ``-DFLK_PLANTED_BUG=<bug>``, a module of its own (every
    planted-bug test of the SQLite rows builds through it); the test is skipped where it cannot
    be built, and fails under CI, where it must be."""
    module = build_variant(str(ROOT / "impl/dedup/_fastsqlite.c"), "_fastsqlite", f"FLK_PLANTED_BUG={bug}",
                           ("sqlite3",), ("/usr/include/sqlite3.h",))
    if module is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler or sqlite3.h to build the planted extension")
        pytest.skip("no C compiler or sqlite3.h")
    return module


@needs_compiled
@pytest.mark.parametrize("bug, case", [
    (5, "property"), (5, "killed"), (6, "property"), (7, "property"), (8, "refused"),
])
def test_planted_walbuf_bugs_are_caught(bug, case):
    """The commit frame held (5), a read past held bytes (6), more held than the default VFS
    writes in one call (7), a failed write reported as done (8): the test named fails."""
    module = planted_build(bug)
    assert module.WALBUF_VFS == f"flk-walbuf-planted-{bug}"  # not the production VFS
    with pytest.raises((AssertionError, sqlite3.DatabaseError, module.Error)):
        if case == "property":
            walbuf_property(module, planted=True)()
        elif case == "killed":
            killed_writer_case(module, 6, busy=False)  # blocked after its commit: caught on every run
        else:
            refused_write_case(module, "walbuf")
