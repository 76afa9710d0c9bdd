"""Files a user names that nest past the parser's depth (JSON ``[[[[...``, TOML ``a = [[[[...``
or ``a = {b = {b = ...``), hold an integer past Python's digit limit, or are not UTF-8: every
command answers with one line and exit 2 (also where such a file is given as evidence) --
never a traceback."""

from __future__ import annotations

import pytest

from flk.impl.lab import cli

DEEP_JSON = "[" * 100_000
FILES = {
    "deep.json": DEEP_JSON,
    "deep-lines.jsonl": '{"a": 1}\n' + DEEP_JSON + "\n",
    "deep-list.toml": "a = " + "[" * 5_000 + "]" * 5_000 + "\n",
    "deep-table.toml": "a = " + "{b = " * 3_000 + "1" + "}" * 3_000 + "\n",
    "long-int.toml": "a = " + "1" * 10_000 + "\n",
    "latin1.toml": b'name = "caf\xe9"\n',
}

# (arguments, the file) -- {f} is the file's path
EXIT_2 = [
    (["conformance", "diff", "{f}", "{f}"], "deep.json"),
    (["dedup-migrate", "status", "--state", "{f}"], "deep.json"),
    (["history", "check", "{f}"], "deep-lines.jsonl"),
    (["agent", "submit", "--url", "http://127.0.0.1:9", "--pcs", "{f}"], "deep.json"),
    *[(argv, name) for name in ("deep-list.toml", "deep-table.toml", "long-int.toml", "latin1.toml")
      for argv in (["serve", "--check", "--config", "{f}"], ["sim", "validate", "{f}"], ["operator", "validate", "{f}"])],
]


def _write(tmp_path, name):
    path = tmp_path / name
    data = FILES[name]
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def _run(capsys, argv):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv,name", EXIT_2, ids=[f"{' '.join(a[:2])}-{n}" for a, n in EXIT_2])
def test_exit_2_with_one_line(tmp_path, capsys, argv, name):
    path = _write(tmp_path, name)
    rc, out, err = _run(capsys, [a.replace("{f}", path) for a in argv])
    assert rc == 2, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "set_int_max_str_digits" not in err  # Python's advice to programmers is not the user's
    assert path in err, err  # the line names the file


@pytest.mark.parametrize("flag", ["--proofs", "--conformance"])
def test_compliance_refuses_a_deep_file_given_as_evidence(tmp_path, capsys, flag):
    path = _write(tmp_path, "deep.json")
    rc, out, err = _run(capsys, ["compliance", "report", "--framework", "soc2", flag, path,
                                 "--out", str(tmp_path / "out"), "--json"])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"{flag} {path}: not JSON (JSON nested deeper than this parser allows" in err
    assert not (tmp_path / "out").exists()  # refused before any report is written


def test_a_deep_set_value_is_refused_by_the_scenario_check(tmp_path, capsys):
    rc, out, err = _run(capsys, ["sim", "validate", "crr-normal", "--set", "seed=" + "[" * 5_000])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("text", ["[]", '"x"', "[" * 100_000, "garbage", '{"last_seal": [1]}'])
def test_compliance_reads_an_audit_folder_of_another_shape_as_failing_evidence(tmp_path, capsys, text):
    """HEAD.json or the newest segment as a list, a string or garbage: the chain fails to
    verify and the report says so (a list raised AttributeError in the report's head line)."""
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "HEAD.json").write_text(text)
    (audit / "seg-00000001.log").write_text(text + "\n")
    rc, out, err = _run(capsys, ["compliance", "report", "--framework", "soc2", "--audit", str(audit),
                                 "--out", str(tmp_path / "out"), "--json"])
    assert rc == 1 and "Traceback" not in err, err
    evidence = [e for c in __import__("json").loads(out)["controls"] for e in c["evidence"] if e["kind"] == "audit_chain"]
    assert evidence and all(e["status"] == "failing" for e in evidence), evidence
