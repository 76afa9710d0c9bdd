"""A migration state file edited or damaged into another shape -- a progress table replaced by
null, a count by a string, the history by a number -- is refused by every step with one line and
exit 2 naming the key, never a TypeError or KeyError traceback halfway through a step (copy, verify
and dual-write crashed on such files). The check is flk.impl.dedup.migrate.check_state_tables,
run by load_state."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import migrate
from flk.impl.lab import cli

STEPS = [["status"], ["dual-write", "--dry-run"], ["copy", "--max-batches", "1"],
         ["verify", "--max-batches", "1", "--settle-s", "0"], ["catchup", "--max-batches", "1", "--settle-s", "0"],
         ["cutover", "--dry-run"], ["rollback", "--dry-run", "--settle-s", "0"], ["cleanup", "--dry-run"],
         ["prune", "--max-batches", "1", "--settle-s", "0"]]


def _plan(tmp_path) -> str:
    old = ",".join(f"s{i}=sqlite:///{tmp_path}/s{i}.db" for i in range(2))
    state = str(tmp_path / "m.json")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["dedup-migrate", "plan", "--state", state, "--old", old,
                         "--new", old + f",s2=sqlite:///{tmp_path}/s2.db"]) == 0
        assert cli.main(["dedup-migrate", "dual-write", "--state", state]) == 0
    return state


def _step(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, err.getvalue()


def _paths(doc, path=()):
    """Every key path below the progress tables and the history."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if path or k in {f.name for f in migrate.STATE_FIELDS}:
                yield (*path, k)
                yield from _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield (*path, i)
            yield from _paths(v, (*path, i))


@pytest.mark.parametrize("key,value,step", [
    ("copy", None, "copy"), ("copy", {}, "copy"), ("verify", None, "verify"), ("history", 5, "dual-write"),
])
def test_the_steps_that_crashed_refuse_the_file_with_one_line(tmp_path, key, value, step):
    state = _plan(tmp_path)
    doc = json.loads(open(state).read())
    doc[key] = value
    open(state, "w").write(json.dumps(doc))
    before = open(state).read()
    rc, err = _step(["dedup-migrate", *next(s for s in STEPS if s[0] == step), "--state", state])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"not a usable migration state: {key}" in err, err
    assert open(state).read() == before  # refused before anything was written


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.text(max_size=3), st.just([]), st.just({}),
                   st.just(1e308))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_any_one_changed_value_gets_an_answer_from_every_step(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("m")
    state = _plan(tmp)
    doc = json.loads(open(state).read())
    path = data.draw(st.sampled_from(sorted(_paths(doc), key=repr)))
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = data.draw(VALUES)
    open(state, "w").write(json.dumps(doc))
    for step in STEPS:
        rc, err = _step(["dedup-migrate", *step, "--state", state])
        assert rc in (0, 1, 2) and "Traceback" not in err, (step, err)
        if rc == 2:
            assert err.count("\n") == 1, err


def test_a_state_written_before_the_prune_existed_is_read_with_a_fresh_prune(tmp_path):
    """A cleaned migration's file of an earlier version has no ``prune`` table: it is read with a
    fresh one dated at its last cleanup (the prune's settle counts from there), and prunes."""
    state = _plan(tmp_path)
    doc = json.loads(open(state).read())
    doc["phase"] = "cleaned"
    doc["history"].append({"phase": "cleaned", "at": 123.0})
    del doc["prune"]
    open(state, "w").write(json.dumps(doc))
    assert migrate.load_state(state)["prune"] == migrate.new_prune(123.0)
    rc, err = _step(["dedup-migrate", "prune", "--state", state, "--settle-s", "0"])
    assert rc == 0, err
    assert json.loads(open(state).read())["prune"]["done"] is True
