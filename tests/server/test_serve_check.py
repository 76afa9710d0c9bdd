"""``flk serve --check`` validates what a start would and creates nothing: no data or WAL
directory, no HMAC key file, no SQLite file (it says which a start would create); what is
there is checked as a start checks it (a key file is read, a store opened, a WAL lock
tried). A HOST that names no address is a configuration error before any bind."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import open_store
from flk.impl.lab import cli
from flk.impl.lab.cli import cmd_serve
from flk.impl.server.config import BY_ENV, ConfigError, ensure_key_file

pytestmark = pytest.mark.server


@pytest.fixture
def clean(monkeypatch, tmp_path):
    for name in BY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKERS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(["serve", "--check", *argv])
    return rc, capsys.readouterr().err


def _tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in dirs + files}


def test_a_check_of_a_new_data_dir_creates_nothing_and_says_what_a_start_would(clean, capsys):
    rc, err = _check(capsys, "--data-dir", "d")
    assert rc == 0 and "configuration ok" in err, err
    assert _tree(clean) == set()  # no d/, d/wal, d/hmac.key, d/dedup.sqlite3 (they were all made)
    for made in ("would create directory " + str(clean / "d"), "would create the data dir's HMAC key file",
                 "would create the SQLite dedup store " + str(clean / "d" / "dedup.sqlite3")):
        assert made in err, err
    rc, err = _check(capsys)  # no --data-dir: ./data was made by a check
    assert rc == 0 and _tree(clean) == set(), err


def test_a_check_of_an_existing_data_dir_reads_its_key_and_opens_its_store(clean, capsys):
    ensure_key_file(str(clean / "d"))  # what a start made: the key, the WAL directory, the store
    (clean / "d" / "wal").mkdir()
    open_store(f"sqlite:///{clean / 'd' / 'dedup.sqlite3'}").close()
    made = _tree(clean)
    rc, err = _check(capsys, "--data-dir", "d")
    assert _tree(clean) == made
    assert rc == 0 and "using the data dir's HMAC key file" in err and "would create" not in err, err
    (clean / "d" / "hmac.key").write_text("not a key\n")
    rc, err = _check(capsys, "--data-dir", "d")
    assert rc == 2 and "is not 64 lowercase hex characters" in err, err


def test_a_data_dir_that_cannot_be_made_is_an_error_of_the_check(clean, capsys):
    (clean / "afile").write_text("x")
    rc, err = _check(capsys, "--data-dir", "afile/d")
    assert rc == 2 and "DATA_DIR afile/d must be a writable directory" in err and "Traceback" not in err, err
    rc, err = _check(capsys, "--data-dir", "/proc/flk-none/d")  # root passes a permission check here
    assert rc == 2 and "must be a writable directory" in err, err


@pytest.mark.parametrize("host", ["not a host", "256.1.1.1", "-", "a..b"])
def test_a_host_that_is_no_address_is_an_error_before_the_bind(clean, capsys, host):
    rc, err = _check(capsys, "--host", host, "--data-dir", "d")
    assert rc == 2 and f"HOST {host!r} is not an address to listen on" in err, err
    assert len(err.strip().splitlines()) == 1


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_any_host_text_is_accepted_or_a_configuration_error(host):
    try:
        cmd_serve._check_host(host)
    except ConfigError as exc:
        assert "is not an address to listen on" in str(exc)
