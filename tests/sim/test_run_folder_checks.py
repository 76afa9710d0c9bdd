"""A run folder stays where ``--out`` says, and a run folder's saved history is checked.

``scenario.name`` names the run folder ``OUT/<name>/<seed>``: it is one folder name (a name
``../../etc`` wrote outside ``--out``, ``/abs/x`` ignored it, ``a/b`` nested folders). ``flk sim
replay`` compares the saved history with the recorded digest too (it said "reproduced exactly"
over a cut, emptied or missing history), and ``flk sim diff`` shows the digest of the history it
read and refuses one that does not read as events (exit 2, as ``flk sim coverage`` does).
"""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flk.impl.lab import cli
from flk.sim import api
from flk.sim.scenario import ScenarioError, completed, list_scenarios, load, scenario_dir, validate

TINY = ["scenario.duration_s=1", "scenario.quiescence_s=1", "workload.agents=2", "workload.rate_per_s=20"]


def _cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.text(max_size=140), st.text(alphabet="./\\\x00ab-_ ", max_size=8)))
@example("../../etc")
@example("/abs/x")
@example("a/b")
@example("..")
@example(".")
@example(".hidden")
@example("a\\b")
@example("a\x00b")
@example("x" * 129)
def test_a_scenario_name_is_one_folder_inside_out_or_a_scenario_error(tmp_path_factory, name):
    out = tmp_path_factory.getbasetemp() / "out"
    data = completed({"scenario": {"name": name}})
    try:
        validate(data)
    except ScenarioError as exc:
        assert exc.key == "scenario.name", exc
        return
    run_dir = (out / name / "1").resolve()
    assert run_dir.parent.parent == out.resolve() and run_dir.parent.name == name


@pytest.mark.parametrize("name", ["../../etc", "ABSOLUTE", "a/b", "..", ".hidden"])
def test_a_run_never_writes_outside_out(tmp_path, capsys, name):
    name = (tmp_path / "abs" / "x").as_posix() if name == "ABSOLUTE" else name  # an absolute path, kept in tmp
    scenario = tmp_path / "trav.toml"
    scenario.write_text(f'[scenario]\nname = "{name}"\nduration_s = 1.0\nquiescence_s = 1.0\n', encoding="utf-8")
    out = tmp_path / "a" / "b" / "out"
    rc, _, err = _cli(capsys, "sim", "run", scenario, "--no-plots", "--quiet", "--out", out)
    assert rc == 2 and err.count("\n") == 1 and "scenario.name" in err and "Traceback" not in err, err
    written = [p for p in tmp_path.rglob("*") if p.is_file() or (p.is_dir() and p not in out.parents and p != out)]
    assert written == [scenario]  # nothing written, in --out or out of it


def test_a_file_name_that_cannot_name_a_folder_asks_for_scenario_name(tmp_path, capsys):
    (tmp_path / "my scenario.toml").write_text("[workload]\nagents = 2\n", encoding="utf-8")
    rc, _, err = _cli(capsys, "sim", "validate", tmp_path / "my scenario.toml")
    assert rc == 2 and err.count("\n") == 1 and "set scenario.name" in err, err
    (tmp_path / "my scenario.toml").write_text('[scenario]\nname = "mine"\n', encoding="utf-8")
    assert load(tmp_path / "my scenario.toml").name == "mine"
    (tmp_path / "my-scenario_2.toml").write_text("", encoding="utf-8")
    assert load(tmp_path / "my-scenario_2.toml").name == "my-scenario_2"


def test_every_catalog_scenario_and_regression_still_has_a_folder_name():
    names = [load(n).name for n in list_scenarios()]
    names += [load(p).name for p in sorted((scenario_dir() / "regressions").glob("*.toml"))]
    assert len(names) > 30 and all("/" not in n and not n.startswith(".") for n in names)


def test_a_regression_file_whose_name_cannot_name_its_runs_folder_is_refused(tmp_path):
    case = tmp_path / "my case.toml"
    case.write_text('[regression]\nscenario = "crash-restart"\nseed = 1\n', encoding="utf-8")
    with pytest.raises(ScenarioError, match="rename the file") as err:
        load(case)
    assert err.value.key == "regression"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path_factory.mktemp("runs"), plots=False).out_dir


def _copy(run_dir, tmp_path, damage=None):
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    path = d / "history.jsonl"
    raw = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage is not None:
        path.write_bytes(damage(raw))
    return d


SAME_EVENTS_FEWER = {  # readable histories that are not the recorded one
    "empty": lambda raw: b"",
    "first-lines": lambda raw: b"".join(raw.splitlines(keepends=True)[:20]),
    "edited": lambda raw: raw.replace(b'"type"', b' "type"', 1),
}
UNREADABLE = {
    "missing": "missing",
    "cut": lambda raw: raw[: len(raw) // 2],
    "random": lambda raw: bytes(range(256)) * 8,
}


def test_replay_of_an_intact_run_reproduces_exactly(run_dir, tmp_path, capsys):
    rc, out, err = _cli(capsys, "sim", "replay", _copy(run_dir, tmp_path))
    assert rc == 0 and "reproduced exactly" in out, (out, err)


@pytest.mark.parametrize("damage", sorted(SAME_EVENTS_FEWER))
def test_replay_says_when_the_saved_history_is_not_the_recorded_one(run_dir, tmp_path, capsys, damage):
    d = _copy(run_dir, tmp_path, SAME_EVENTS_FEWER[damage])
    rc, out, err = _cli(capsys, "sim", "replay", d)
    assert rc == 1 and "reproduced exactly" not in out, (out, err)
    assert "SAVED HISTORY DIFFERS" in err and "history.jsonl" in err and "Traceback" not in err, err


@pytest.mark.parametrize("damage", sorted(UNREADABLE))
def test_replay_and_diff_refuse_an_unreadable_history_in_one_line(run_dir, tmp_path, capsys, damage):
    d = _copy(run_dir, tmp_path, UNREADABLE[damage])
    for argv in (["sim", "replay", d], ["sim", "diff", run_dir, d], ["sim", "diff", d, run_dir, "--json"]):
        rc, out, err = _cli(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and "history.jsonl" in err and "Traceback" not in err, (argv, err)
        assert "reproduced exactly" not in out


def test_replay_checks_a_compact_history_too(tmp_path, capsys):
    res = api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path / "runs", plots=False,
                  history_format="jsonl.gz")
    gz = res.out_dir / "history.jsonl.gz"
    rc, out, _ = _cli(capsys, "sim", "replay", res.out_dir)
    assert rc == 0 and "reproduced exactly" in out
    lines = gzip.decompress(gz.read_bytes()).splitlines(keepends=True)
    gz.write_bytes(gzip.compress(b"".join(lines[:-1])))  # the last event dropped
    rc, _, err = _cli(capsys, "sim", "replay", res.out_dir)
    assert rc == 1 and "SAVED HISTORY DIFFERS" in err and "history.jsonl.gz" in err, err
    gz.write_bytes(gz.read_bytes()[:-20])  # cut: not a whole gzip stream
    rc, _, err = _cli(capsys, "sim", "replay", res.out_dir)
    assert rc == 2 and err.count("\n") == 1 and "history.jsonl.gz" in err, err


def test_diff_shows_the_digest_of_the_history_it_read(run_dir, tmp_path, capsys):
    from flk.sim.history import file_digest

    d = _copy(run_dir, tmp_path, SAME_EVENTS_FEWER["first-lines"])
    recorded = json.loads((d / "results.json").read_text())["digest"]
    actual = file_digest(d / "history.jsonl")
    rc, out, err = _cli(capsys, "sim", "diff", run_dir, d)
    line_b = next(line for line in out.splitlines() if line.startswith("B "))
    assert rc == 1 and f"20 events, sha256 {actual}" in line_b and f"records {recorded}" in line_b, out
    rc, out, _ = _cli(capsys, "sim", "diff", run_dir, d, "--json")
    report = json.loads(out)
    assert rc == 1 and report["b"]["digest"] == actual != report["b"]["recorded_digest"] == recorded
    assert report["a"]["digest"] == report["a"]["recorded_digest"] == recorded
