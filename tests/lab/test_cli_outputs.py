"""Output locations on the command line: a place the command cannot write is exit 2 with
one line naming the option and the cause, checked before the command's work (a finished
simulation or a started cluster is never lost to its last mkdir); any other refusal of the
operating system is one line too, never a traceback."""

from __future__ import annotations

import pathlib
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.lab import cli
from flk.impl.lab.cli import UsageError, output_dir, output_file

RUN = str(pathlib.Path(__file__).parents[1] / "cluster" / "data" / "cluster-latency-run")  # a run folder

# (arguments with {out}, what {out} must be: a folder or a file)
COMMANDS = [
    (["check", "model", "--out", "{out}"], "file"),
    (["kpi", RUN, "--out", "{out}"], "file"),
    (["sim", "report", RUN, "--out", "{out}"], "file"),
    (["compliance", "report", "--framework", "soc2", "--out", "{out}"], "dir"),
    (["demo", "--out", "{out}"], "dir"),
    (["sim", "run", "crr-normal", "--seed", "1", "--out", "{out}"], "dir"),
    (["sim", "sweep", "crr-normal", "--seeds", "1", "--out", "{out}"], "dir"),
    (["sim", "topology", "crr-normal", "--out", "{out}"], "file"),
    (["vectors", "generate", "--dir", "{out}"], "dir"),
    (["cluster", "run", "crr-normal", "--out", "{out}"], "dir"),
    (["sim", "explore", "--scenario", "crr-normal", "--runs", "1", "--out", "{out}"], "dir"),
    (["conformance", "vectors", "--adapter", "./no-such-adapter", "--junit", "{out}"], "file"),
    (["conformance", "server", "--url", "http://127.0.0.1:9", "--hmac-key", "k" * 32, "--json", "{out}"], "file"),
]


# a file in the way of the path; the option's name taken by a file (a folder option) or a folder (a file option)
CASES = [(argv, bad) for argv, kind in COMMANDS for bad in ("under_a_file", "a_file" if kind == "dir" else "a_dir")]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv,bad", CASES, ids=[" ".join(argv[:2]) + f"-{bad}" for argv, bad in CASES])
def test_a_bad_output_location_is_exit_2_before_any_work(tmp_path, capsys, argv, bad):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    target = {"under_a_file": tmp_path / "afile" / "sub", "a_file": tmp_path / "afile", "a_dir": tmp_path / "adir"}[bad]
    rc, out, err = _run(capsys, [a.replace("{out}", str(target)) for a in argv])
    assert rc == 2, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    option = argv[argv.index("{out}") - 1]
    assert f"{option} {target}" in err, err
    assert "regions in namespaces" not in err and "wrote" not in out  # nothing was started, nothing written


def test_vectors_check_of_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    rc, _, err = _run(capsys, ["vectors", "check", "--dir", str(tmp_path / "none")])
    assert rc == 2 and f"--dir {tmp_path / 'none'}: no such directory" in err


def test_serve_with_a_data_dir_that_is_a_file_is_a_configuration_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc, _, err = _run(capsys, ["serve", "--check", "--data-dir", str(tmp_path / "afile" / "data")])
    assert rc == 2 and "Traceback" not in err
    assert "DATA_DIR" in err and "must be a writable directory" in err, err


def test_an_os_error_a_command_did_not_check_is_one_line(monkeypatch, capsys):
    from flk.impl.lab.cli import cmd_vectors

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(cmd_vectors, "run", refuse)
    rc, _, err = _run(capsys, ["vectors", "check"])
    assert rc == 2 and err == "flk vectors: error: Permission denied: /some/where\n"


def test_a_closed_stdout_ends_the_command_quietly(monkeypatch, capsys):
    from flk.impl.lab.cli import cmd_vectors

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cmd_vectors, "run", closed)
    rc, _, err = _run(capsys, ["vectors", "check"])  # (captured: no file descriptor to point at /dev/null)
    assert rc == 1 and err == ""


_SEGMENT = st.text(string.ascii_letters + string.digits + "._- ", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=4), file_at=st.integers(-1, 3), as_file=st.booleans())
def test_output_locations_are_made_or_refused_with_a_usage_error(tmp_path_factory, segments, file_at, as_file):
    """Any path: the folder (or the file's folder) exists and is a folder afterwards, or
    UsageError names the option and the path -- never another exception."""
    root = tmp_path_factory.mktemp("out")
    if 0 <= file_at < len(segments):  # a file where the path wants a folder (or the file itself)
        blocker = root.joinpath(*segments[:file_at + 1])
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("x")
    path = root.joinpath(*segments)
    try:
        made = (output_file if as_file else output_dir)(path)
    except UsageError as exc:
        assert str(exc).startswith(f"--out {path}"), exc
        return
    assert made == path
    assert (path.parent if as_file else path).is_dir()
    assert not (as_file and path.is_dir())
