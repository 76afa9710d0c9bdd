"""``flk dedup-migrate``: a state file that cannot be read or written is one line naming the path
the user gave (not the temp file of the atomic rewrite) and the cause (for JSON, where it broke)."""

from __future__ import annotations

import pytest

from flk.impl.lab import cli


def _error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_invalid_json_state_says_where_it_broke(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"phase": "planned",\n oops}')
    err = _error(["dedup-migrate", "status", "--state", str(bad)], capsys)
    assert f"unreadable migration state {bad}: not JSON (" in err, err
    assert "line 2 column 2" in err, err


def test_state_not_utf8_says_so(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"a": "\xff"}')
    err = _error(["dedup-migrate", "status", "--state", str(bad)], capsys)
    assert "not UTF-8" in err, err


@pytest.mark.parametrize("where", ["missing/dir/s.json", "file/s.json"])
def test_plan_into_an_unwritable_place_names_the_users_path(where, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    state = tmp_path / where
    argv = ["dedup-migrate", "plan", "--state", str(state), "--old", f"s0=sqlite:///{tmp_path}/a.db",
            "--new", f"s0=sqlite:///{tmp_path}/a.db,s1=sqlite:///{tmp_path}/b.db"]
    err = _error(argv, capsys)
    assert f"cannot write migration state {state}: " in err and ".tmp" not in err, err
    assert not list(tmp_path.glob("**/*.tmp"))
