"""``flk sim report``, ``flk kpi`` and ``flk compliance report`` read a run only when its saved
history is there, reads as events and is the one its ``results.json`` records
(flk.impl.lab.report.read_checked_results over flk.sim.artifacts.history_digest): a history that
is missing, random bytes, cut or changed is exit 2 with one line naming the file -- they built a
report from such a run and exited 0."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.lab import cli
from flk.sim import api

TINY = ["scenario.duration_s=1", "scenario.quiescence_s=1", "workload.agents=2", "workload.rate_per_s=20"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return api.run("crr-normal", seed=1, overrides=TINY, out=tmp_path_factory.mktemp("runs"), plots=False).out_dir


def _commands(d, out):
    return {"report": ["sim", "report", d, "--out", out / "r.html"],
            "kpi": ["kpi", d, "--out", out / "k.html"],
            "compliance": ["compliance", "report", "--framework", "soc2", "--runs", d, "--out", out / "c"]}


def _run(capsys, argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _cut(raw: bytes) -> bytes:
    lines = raw.splitlines(keepends=True)
    return b"".join(lines[: len(lines) // 2])


def _edited(raw: bytes) -> bytes:  # every line still an event, one answer changed
    return raw.replace(b'"status":200', b'"status":500', 1).replace(b'"status": 200', b'"status": 500', 1)


DAMAGE = {"missing": None, "random": lambda raw: bytes(range(256)) * 20, "cut": _cut, "edited": _edited,
          "empty": lambda raw: b""}


def _damaged(run_dir, where, damage):
    d = where / "run"
    shutil.copytree(run_dir, d)
    history = d / "history.jsonl"
    if DAMAGE[damage] is None:
        history.unlink()
    else:
        new = DAMAGE[damage](history.read_bytes())
        assert new != history.read_bytes()
        history.write_bytes(new)
    return d


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["report", "kpi", "compliance"])
def test_a_run_whose_history_is_missing_or_not_its_own_is_one_line_naming_it(run_dir, tmp_path, capsys,
                                                                             command, damage):
    d = _damaged(run_dir, tmp_path, damage)
    rc, out, err = _run(capsys, _commands(d, tmp_path)[command])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, (out, err)
    assert str(d / "history.jsonl") in err, err
    assert not any(tmp_path.glob("*.html")) and not any(tmp_path.glob("c/*"))  # no report of that run


def test_a_report_of_a_damaged_run_says_it_cannot_read_the_run(run_dir, tmp_path, capsys):
    """flk sim report said "cannot write the report" for a run it could not read, and named no
    file for a scenario.toml that is not TOML."""
    d = _damaged(run_dir, tmp_path, "cut")
    rc, _, err = _run(capsys, _commands(d, tmp_path)["report"])
    assert rc == 2 and err.startswith("flk sim: error: cannot read the run: "), err
    shutil.rmtree(d)
    shutil.copytree(run_dir, d)
    (d / "scenario.toml").write_text("[scenario\n")
    rc, _, err = _run(capsys, _commands(d, tmp_path)["report"])
    assert rc == 2 and "cannot read the run" in err and str(d / "scenario.toml") in err and "not TOML" in err, err


@pytest.mark.parametrize("command", ["report", "kpi", "compliance"])
def test_a_run_whose_history_is_its_own_is_read(run_dir, tmp_path, capsys, command):
    rc, out, err = _run(capsys, _commands(run_dir, tmp_path)[command])
    assert rc in (0, 1) and err == "", (out, err)  # compliance: 1 when a control fails
    assert any(tmp_path.glob("*.html")) or (tmp_path / "c" / "compliance-soc2.html").is_file()


def test_a_compact_history_is_checked_the_same_way(tmp_path, capsys):
    d = api.run("crr-normal", seed=1, overrides=TINY, out=tmp_path / "runs", plots=False,
                history_format="jsonl.gz").out_dir
    assert _run(capsys, ["kpi", d, "--out", tmp_path / "k.html"])[0] == 0
    gz = d / "history.jsonl.gz"
    gz.write_bytes(gz.read_bytes()[:-20])
    rc, _, err = _run(capsys, ["kpi", d, "--out", tmp_path / "k.html"])
    assert rc == 2 and err.count("\n") == 1 and str(gz) in err, err


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_a_saved_history_is_refused_by_every_reader(run_dir, tmp_path_factory, capsys, data):
    """A byte changed, a stretch dropped or bytes appended anywhere: every command refuses the run
    with one line naming the history (never a report of it)."""
    raw = (run_dir / "history.jsonl").read_bytes()
    at = data.draw(st.integers(0, len(raw) - 1), label="at")
    edit = data.draw(st.sampled_from(["flip", "drop", "append"]), label="edit")
    if edit == "flip":
        new = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255), label="xor")]) + raw[at + 1:]
    elif edit == "drop":
        new = raw[:at] + raw[at + data.draw(st.integers(1, 500), label="n"):]
    else:
        new = raw + data.draw(st.binary(min_size=1, max_size=40), label="tail")
    where = tmp_path_factory.mktemp("d")
    d = where / "run"
    shutil.copytree(run_dir, d)
    (d / "history.jsonl").write_bytes(new)
    for command, argv in _commands(d, where).items():
        rc, out, err = _run(capsys, argv)
        assert rc == 2 and err.count("\n") == 1 and str(d / "history.jsonl") in err, (command, edit, out, err)
