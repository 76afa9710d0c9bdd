"""A run folder whose results.json, scenario.toml or history is damaged -- missing, cut in half,
garbage bytes, valid JSON of another shape, nested past the parser's depth -- gets one line and
exit 2 from every command that reads it (naming the file), never a KeyError or TypeError
traceback; ``flk sim diff`` still shows where two histories part, a damaged line as its text.
flk.sim.artifacts.read_results/read_scenario and flk.sim.history.iter_history are the readers."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab import cli
from flk.sim import api
from flk.sim.artifacts import read_results
from flk.sim.history import HistoryError, iter_history
from flk.sim.scenario import ScenarioError

TINY = ["scenario.duration_s=1", "scenario.quiescence_s=1", "workload.agents=2", "workload.rate_per_s=20"]
DAMAGE = {
    "missing": None,
    "half": "HALF",
    "garbage": b"\xff\x00garbage{[\n",
    "empty-object": b"{}\n",
    "list": b"[]\n",
    "string": b'"x"\n',
    "deep": b"[" * 100_000 + b"\n",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path_factory.mktemp("runs"), plots=False).out_dir


def _damaged(run_dir, tmp_path, name, damage):
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    path, data = d / name, DAMAGE[damage]
    if data is None:
        path.unlink()
    elif data == "HALF":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.write_bytes(data)
    return d


def _run(capsys, argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _commands(d, tmp_path):
    return {
        "replay": ["sim", "replay", d],
        "report": ["sim", "report", d, "--out", tmp_path / "r.html"],
        "kpi": ["kpi", d, "--out", tmp_path / "k.html"],
        "coverage": ["sim", "coverage", d, "--out", tmp_path / "c"],
        "shrink": ["sim", "shrink", d, "--out", tmp_path / "s.toml", "--quiet"],
    }


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["replay", "report", "kpi", "coverage", "shrink"])
def test_a_damaged_results_file_is_one_line_naming_it(run_dir, tmp_path, capsys, damage, command):
    d = _damaged(run_dir, tmp_path, "results.json", damage)
    rc, out, err = _run(capsys, _commands(d, tmp_path)[command])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "results.json" in err, err


SCENARIO_DAMAGE = {
    "cut": lambda raw: raw[: len(raw) // 2] + b"\nbroken\n",
    "unnamed": lambda raw: b"[workload]\nagents = 2\n",
    "named-by-a-number": lambda raw: b"[scenario]\nname = 7\n",
    "deep": lambda raw: b"a = " + b"[" * 5_000 + b"]" * 5_000 + b"\n",
    "invalid": lambda raw: raw.replace(b"[workload]", b"[workload]\nagents = -3", 1),
}


@pytest.mark.parametrize("damage", ["missing", "garbage", *SCENARIO_DAMAGE])
@pytest.mark.parametrize("command", ["replay", "coverage", "shrink"])
def test_a_damaged_scenario_file_is_one_line_naming_it(run_dir, tmp_path, capsys, damage, command):
    if damage in SCENARIO_DAMAGE:
        d = _damaged(run_dir, tmp_path, "scenario.toml", "list")
        (d / "scenario.toml").write_bytes(SCENARIO_DAMAGE[damage]((run_dir / "scenario.toml").read_bytes()))
    else:
        d = _damaged(run_dir, tmp_path, "scenario.toml", damage)
    rc, out, err = _run(capsys, _commands(d, tmp_path)[command])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "scenario.toml" in err, err


def test_a_scenario_file_without_a_later_key_still_replays_exactly(run_dir, tmp_path, capsys):
    """A folder written before a key existed reads with that key's default (the scenario as
    run had it), and the replay says it reproduces."""
    d = _damaged(run_dir, tmp_path, "scenario.toml", "list")
    lines = (run_dir / "scenario.toml").read_text().splitlines(keepends=True)
    (d / "scenario.toml").write_text("".join(line for line in lines if not line.startswith("group_commit_ms")))
    assert (d / "scenario.toml").read_text() != (run_dir / "scenario.toml").read_text()
    rc, out, err = _run(capsys, ["sim", "replay", d])
    assert rc == 0 and "reproduced exactly" in out, (out, err)


@pytest.mark.parametrize("damage", ["half", "garbage", "empty-object", "list", "string", "deep"])
def test_a_damaged_history_is_one_line_for_coverage_diff_and_replay(run_dir, tmp_path, capsys, damage):
    d = _damaged(run_dir, tmp_path, "history.jsonl", damage)
    for argv in (_commands(d, tmp_path)["coverage"], ["sim", "diff", run_dir, d, "--json"], _commands(d, tmp_path)["replay"]):
        rc, out, err = _run(capsys, argv)
        assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, (argv, err)
        assert "history.jsonl" in err, err


def test_a_history_reader_names_the_file_and_line(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"type": "client.send", "t_us": 1}\n\n[1, 2]\n')
    events = iter_history(path)
    assert next(events)["type"] == "client.send"
    with pytest.raises(HistoryError, match=r"history.jsonl:3: not a history event"):
        next(events)


RESULTS = {"scenario": "s", "seed": 1, "digest": "d", "invariants": [{"id": "INV-X", "ok": True}],
           "slos": [{"metric": "m", "ok": False, "value": 1.5}], "metrics": {"a": 1}}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.one_of(JSON, st.tuples(st.sampled_from(sorted(RESULTS)), JSON).map(lambda kv: {**RESULTS, kv[0]: kv[1]})))
def test_read_results_returns_the_checked_document_or_a_scenario_error(tmp_path_factory, doc):
    d = tmp_path_factory.mktemp("r")
    (d / "results.json").write_text(json.dumps(doc))
    try:
        got = read_results(d)
    except ScenarioError as exc:
        assert str(exc).startswith(str(d / "results.json") + ": ")
        return
    assert got == doc and isinstance(got["seed"], int) and all(isinstance(c["ok"], bool) for c in got["invariants"])
