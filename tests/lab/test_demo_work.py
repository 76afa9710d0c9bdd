"""Where ``flk demo`` keeps its stages' files: ``work/`` in its output folder, emptied at the
start of each run -- but only a folder the demo made (its mark); a ``work`` folder of somebody
else's is exit 2 with one line before any stage runs, and nothing in it is touched."""

from __future__ import annotations

from flk.impl.lab import cli
from flk.impl.lab.demo import WORK_MARK, fresh_work


def test_the_last_runs_work_folder_is_replaced(tmp_path):
    first = fresh_work(tmp_path)
    (first / "serve.log").write_text("old run")
    second = fresh_work(tmp_path)
    assert second == first and (second / WORK_MARK).is_file() and not (second / "serve.log").exists()


def test_a_work_folder_the_demo_did_not_make_is_exit_2_and_kept(tmp_path, capsys):
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    rc = cli.main(["demo", "--out", str(tmp_path), "--only", "vectors"])
    _, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"--out {tmp_path}" in err and "not made by flk demo" in err
    assert (mine / "thesis.tex").read_text() == "precious" and not (tmp_path / "report.html").exists()


def test_a_symlink_named_work_is_never_followed(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / WORK_MARK).write_text("looks made by the demo")
    (elsewhere / "keep").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "work").symlink_to(elsewhere)
    rc = cli.main(["demo", "--out", str(out), "--only", "vectors"])
    assert rc == 2 and (elsewhere / "keep").exists()
