"""The FileSystem interface: the real disk and the crashable memory disk agree
on what a reader sees; the memory disk keeps exactly what was made durable."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.storage.fs import OsFileSystem
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


def test_unsynced_content_is_lost_and_synced_content_survives():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    h = fs.open_append("d/f")
    fs.fsync_dir("d")
    h.write(b"abc")
    h.fsync()
    h.write(b"def")
    assert fs.read("d/f") == b"abcdef"
    fs.crash()
    assert fs.read("d/f") == b"abc"
    with pytest.raises(OSError):
        h.write(b"x")  # handles do not survive a crash


def test_a_created_file_needs_a_directory_fsync_to_survive():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    h = fs.open_append("d/new")
    h.write(b"data")
    h.fsync()  # content durable, name not
    fs.crash()
    assert not fs.exists("d/new")
    h = fs.open_append("d/new")
    h.write(b"data")
    h.fsync()
    fs.fsync_dir("d")
    fs.crash()
    assert fs.read("d/new") == b"data"


def test_rename_and_remove_are_durable_only_after_fsync_dir():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    fs.write_atomic("d/a", b"A")
    fs.rename("d/a", "d/b")
    fs.crash()
    assert fs.listdir("d") == ["a"]
    fs.rename("d/a", "d/b")
    fs.fsync_dir("d")
    fs.remove("d/b")
    fs.crash()
    assert fs.listdir("d") == ["b"] and fs.read("d/b") == b"A"


def test_write_atomic_replaces_durably():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    fs.write_atomic("d/m", b"old")
    fs.write_atomic("d/m", b"new")
    fs.crash()
    assert fs.read("d/m") == b"new" and fs.listdir("d") == ["m"]


@settings(max_examples=50, deadline=None)
@given(synced=st.binary(max_size=20), unsynced=st.lists(st.binary(min_size=1, max_size=10), max_size=5),
       seed=st.integers(0, 2**32 - 1))
def test_torn_writes_keep_a_seeded_prefix_of_the_unsynced_tail(synced, unsynced, seed):
    def run():
        fs = CrashableMemoryFileSystem(rng=random.Random(seed), torn_writes=True)
        fs.makedirs("d")
        h = fs.open_append("d/f")
        h.write(synced)
        h.fsync()
        fs.fsync_dir("d")
        for w in unsynced:
            h.write(w)
        fs.crash()
        return fs.read("d/f")

    got = run()
    full = synced + b"".join(unsynced)
    assert full.startswith(got) and len(got) >= len(synced)
    assert run() == got  # same seed, same disk


def test_torn_writes_need_a_seeded_rng():
    fs = CrashableMemoryFileSystem(torn_writes=True)
    with pytest.raises(ValueError):
        fs.crash()


def test_flip_bit_changes_current_and_durable_content():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    fs.write_atomic("d/f", b"\x00\x00")
    fs.flip_bit("d/f", 1, bit=2)
    assert fs.read("d/f") == b"\x00\x04"
    fs.crash()
    assert fs.read("d/f") == b"\x00\x04"
    with pytest.raises(ValueError):
        fs.flip_bit("d/f", 5)


def test_injected_fsync_failure_makes_nothing_durable():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    h = fs.open_append("d/f")
    fs.fsync_dir("d")
    h.write(b"x")
    fs.fail_fsyncs(1)
    with pytest.raises(OSError):
        h.fsync()
    fs.crash()
    assert fs.read("d/f") == b""


def test_fsync_hook_and_counters():
    seen = []
    fs = CrashableMemoryFileSystem(fsync_hook=seen.append)
    fs.makedirs("d")
    h = fs.open_append("d/f")
    h.write(b"1")
    h.fsync()
    assert seen == ["d/f"] and fs.fsync_count == 1


def test_missing_things_raise_the_usual_errors(tmp_path):
    for fs, root in ((CrashableMemoryFileSystem(), "m"), (OsFileSystem(), str(tmp_path / "o"))):
        fs.makedirs(root)
        with pytest.raises(FileNotFoundError):
            fs.read(root + "/nope")
        with pytest.raises(FileNotFoundError):
            fs.open_append(root + "/no/such/dir/file")
        with pytest.raises(FileNotFoundError):
            fs.remove(root + "/nope")


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from("abc"), st.binary(max_size=8)),
    st.tuples(st.just("atomic"), st.sampled_from("abc"), st.binary(max_size=8)),
    st.tuples(st.just("rename"), st.sampled_from("abc"), st.sampled_from("abc")),
    st.tuples(st.just("remove"), st.sampled_from("abc")),
    st.tuples(st.just("truncate"), st.sampled_from("abc"), st.integers(0, 10)),
), max_size=25)


@settings(max_examples=40, deadline=None)
@given(script=ops)
def test_the_real_disk_and_the_memory_disk_agree_on_what_a_reader_sees(tmp_path_factory, script):
    root = str(tmp_path_factory.mktemp("agree"))
    disks = [(OsFileSystem(), root), (CrashableMemoryFileSystem(), "mem")]
    for fs, r in disks:
        fs.makedirs(r)
    for op in script:
        results = []
        for fs, r in disks:
            p = lambda n, r=r: os.path.join(r, n)  # noqa: E731
            try:
                if op[0] == "append":
                    h = fs.open_append(p(op[1]))
                    h.write(op[2])
                    h.fsync()
                    h.close()
                elif op[0] == "atomic":
                    fs.write_atomic(p(op[1]), op[2])
                elif op[0] == "rename":
                    fs.rename(p(op[1]), p(op[2]))
                elif op[0] == "remove":
                    fs.remove(p(op[1]))
                else:
                    fs.truncate(p(op[1]), op[2])
                results.append("ok")
            except FileNotFoundError:
                results.append("ENOENT")
        assert results[0] == results[1], op
        views = [{n: fs.read(os.path.join(r, n)) for n in fs.listdir(r)} for fs, r in disks]
        assert views[0] == views[1]
        assert [fs.size(os.path.join(r, n)) for fs, r in disks for n in ["a"] if fs.exists(os.path.join(r, n))] in (
            [], [len(views[0].get("a", b""))] * 2)


@settings(max_examples=50, deadline=None)
@given(names=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_partial_directory_operations_keep_a_prefix_in_order(names, seed):
    fs = CrashableMemoryFileSystem(rng=random.Random(seed), partial_dir_ops=True)
    fs.makedirs("d")
    states = [[]]  # the listing after each directory operation
    for n in names:
        if fs.exists("d/" + n):
            fs.remove("d/" + n)
        else:
            fs.open_append("d/" + n).close()
        states.append(fs.listdir("d"))
    rep = fs.crash()
    kept, pending = rep["dir_ops_kept"].get("d", (0, 0))
    assert pending == len(names)
    assert fs.listdir("d") == states[kept]


def test_clone_is_an_independent_disk_with_the_same_durable_state():
    fs = CrashableMemoryFileSystem()
    fs.makedirs("d")
    h = fs.open_append("d/f")
    fs.fsync_dir("d")
    h.write(b"durable")
    h.fsync()
    h.write(b"+volatile")
    twin = fs.clone()
    assert twin.read("d/f") == b"durable+volatile"
    twin.crash()
    assert twin.read("d/f") == b"durable" and fs.read("d/f") == b"durable+volatile"
    h.write(b"!")  # the original's handle writes to the original only
    assert fs.read("d/f") == b"durable+volatile!" and twin.read("d/f") == b"durable"
    th = twin.open_append("d/f")
    th.write(b"y")
    assert twin.read("d/f") == b"durabley" and fs.read("d/f") == b"durable+volatile!"


def _rescanned_durable(fs: CrashableMemoryFileSystem, before: dict, d: str) -> dict:
    """The reference fsync_dir: the directory's durable entries replaced by its live ones, found by
    a scan of every file (what fsync_dir did before it applied the pending operations instead)."""
    out = {p: i for p, i in before.items() if os.path.dirname(p) != d}
    out.update({p: i for p, i in fs._live.items() if os.path.dirname(p) == d})
    return out


dir_ops = st.lists(st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["d/a", "d/b", "e/a", "e/c"])),
    st.tuples(st.just("atomic"), st.sampled_from(["d/a", "d/b", "e/a", "e/c"])),
    st.tuples(st.just("rename"), st.sampled_from(["d/a", "d/b", "e/a", "e/c"]), st.sampled_from(["d/a", "d/b", "e/a", "e/c"])),
    st.tuples(st.just("remove"), st.sampled_from(["d/a", "d/b", "e/a", "e/c"])),
    st.tuples(st.just("fsync_dir"), st.sampled_from(["d", "e"])),
    st.tuples(st.just("crash"), st.integers(0, 2**32 - 1)),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(script=dir_ops)
def test_fsync_dir_makes_a_directory_durable_as_a_full_rescan_would(script):
    """fsync_dir applies the directory's pending operations; after any sequence of creates,
    atomic writes, renames (also across directories and over a file), removes, directory
    fsyncs and crashes (partial directory operations kept), the durable entries -- each path
    to the same file -- are the rescan's."""
    fs = CrashableMemoryFileSystem(partial_dir_ops=True)
    fs.makedirs("d")
    fs.makedirs("e")
    for op in script:
        try:
            if op[0] == "create":
                fs.open_append(op[1]).close()
            elif op[0] == "atomic":
                fs.write_atomic(op[1], b"x")
            elif op[0] == "rename":
                fs.rename(op[1], op[2])
            elif op[0] == "remove":
                fs.remove(op[1])
            elif op[0] == "fsync_dir":
                want = _rescanned_durable(fs, dict(fs._durable), op[1])
                fs.fsync_dir(op[1])
                assert fs._durable.keys() == want.keys()
                assert all(fs._durable[p] is want[p] for p in want)
            else:
                fs.crash(rng=random.Random(op[1]))
        except (FileNotFoundError, PermissionError):
            pass
    for d in ("d", "e"):  # and once more at the end, with whatever is pending
        want = _rescanned_durable(fs, dict(fs._durable), d)
        fs.fsync_dir(d)
        assert fs._durable.keys() == want.keys() and all(fs._durable[p] is want[p] for p in want)
