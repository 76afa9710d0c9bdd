"""The ledger of a killed run lists its work dir: ``flk cluster cleanup`` removes it with the
namespaces and processes, and never removes a directory that is not a run's work dir (a
ledger file in the temp folder is data, not an instruction to delete anything). No root,
no namespaces: these ledgers list directories only."""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.cluster.network import WORK_DIR_PREFIX, cleanup_ledger


def ledger(tmp_path, dirs) -> str:
    path = tmp_path / "flk-cluster-test.json"
    path.write_text(json.dumps({"namespaces": [], "links": [], "pids": [], "mounts": [], "pid": None, "dirs": dirs}))
    return str(path)


def test_a_killed_runs_work_dir_goes_with_its_ledger(tmp_path):
    work = tmp_path / f"{WORK_DIR_PREFIX}smoke-abc"
    (work / "us" / "data").mkdir(parents=True)
    (work / "us" / "server.log").write_text("log")
    path = ledger(tmp_path, [str(work)])
    assert cleanup_ledger(path) == []
    assert not work.exists() and not os.path.exists(path)


def test_a_directory_that_is_not_a_work_dir_is_kept_and_named(tmp_path):
    keep = tmp_path / "data"
    keep.mkdir()
    (keep / "precious").write_text("x")
    link = tmp_path / f"{WORK_DIR_PREFIX}link"
    link.symlink_to(keep)
    relative = f"{WORK_DIR_PREFIX}relative"
    path = ledger(tmp_path, [str(keep), str(link), relative])
    left = cleanup_ledger(path)
    assert len(left) == 3 and all("kept" in x for x in left), left
    assert (keep / "precious").exists() and link.is_symlink()
    assert os.path.exists(path)  # something is left: the ledger stays for the next cleanup


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), st.integers(), st.none()), max_size=4))
def test_any_dirs_field_is_an_answer_and_removes_only_work_dirs(tmp_path_factory, dirs):
    tmp = tmp_path_factory.mktemp("ledger")
    keep = tmp / "keep"
    keep.mkdir()
    path = ledger(tmp, [*dirs, str(keep)])
    left = cleanup_ledger(path)
    assert isinstance(left, list) and all(isinstance(x, str) for x in left)
    assert keep.exists() and any(str(keep) in x for x in left)
