"""The quarantine of poison records: one line per record, no payload outside the file."""

from __future__ import annotations

import base64
import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from flk.impl.lab.cli import main
from flk.impl.storage.quarantine import (
    FILE_NAME,
    Quarantine,
    describe_error,
    parse_entries,
    public_view,
    read_entries,
)
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walinspect import inspect_directory
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from .faultfs import FaultFileSystem

SECRET = "payload-secret-do-not-log"


def raise_with_payload():
    raise ValueError("could not parse " + SECRET)


def caught() -> BaseException:
    try:
        raise_with_payload()
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def test_reason_names_type_and_code_location_never_the_message() -> None:
    reason = describe_error(caught())
    assert reason.startswith("ValueError in raise_with_payload (test_quarantine.py:") and SECRET not in reason
    assert describe_error(KeyError("x")) == "KeyError"  # never raised: no traceback


def test_add_persists_once_and_public_view_hides_the_bytes() -> None:
    fs = CrashableMemoryFileSystem()
    fs.makedirs("/wal")
    q = Quarantine("/wal/" + FILE_NAME, fs)
    record = b"\x01" + SECRET.encode()
    entry = q.add("inbox", 7, "seg-00000000000000000000.log", record, caught(), 123.0, worker=0)
    assert entry["persisted"] and entry["index"] == 7 and entry["digest"] == hashlib.sha256(record).hexdigest()
    assert SECRET not in json.dumps(entry) and "record_b64" not in entry
    assert q.add("inbox", 7, "seg-00000000000000000000.log", record, caught(), 124.0) is None  # seen before
    assert q.add("eu", 7, None, record, caught(), 125.0) is not None  # another source is another record
    assert q.status()["count"] == 2 and q.status()["last_source"] == "eu"
    fs.crash()  # fsynced: survives a power cut
    entries, bad = read_entries("/wal/" + FILE_NAME, fs)
    assert bad == 0 and [e["source"] for e in entries] == ["inbox", "eu"]
    assert base64.b64decode(entries[0]["record_b64"]) == record and SECRET in entries[0]["detail"]
    again = Quarantine("/wal/" + FILE_NAME, fs)  # a restart knows what it quarantined
    assert again.count == 2 and again.add("inbox", 7, None, record, caught(), 126.0) is None


def test_a_full_disk_does_not_stop_quarantining() -> None:
    fs = FaultFileSystem(CrashableMemoryFileSystem())
    fs.makedirs("/wal")
    fs.full = True
    q = Quarantine("/wal/" + FILE_NAME, fs)
    entry = q.add("inbox", 0, None, b"x", caught(), 1.0)
    assert entry is not None and entry["persisted"] is False
    assert q.status() == {"count": 1, "last_reason": entry["reason"], "last_index": 0, "last_source": "inbox",
                          "write_failures": 1}


@given(st.binary(max_size=300))
def test_any_file_bytes_parse_without_raising(data) -> None:
    entries, bad = parse_entries(data)
    assert all(isinstance(e, dict) for e in entries) and bad >= 0


def test_torn_last_line_is_counted_not_fatal() -> None:
    line = json.dumps({"format": "flk-quarantine/1", "source": "inbox", "index": 1, "digest": "d"})
    entries, bad = parse_entries((line + "\n" + line[:10]).encode())
    assert len(entries) == 1 and bad == 1


def test_inspect_lists_the_quarantine_of_a_wal_directory(tmp_path, capsys) -> None:
    d = str(tmp_path / "wal")
    with SegmentedLog(d) as log:
        log.append(b"one")
        log.append(b"two")
    q = Quarantine(str(tmp_path / "wal" / FILE_NAME))
    entry = q.add("inbox", 1, "seg-00000000000000000000.log", b"two", caught(), 5.0)
    rep = inspect_directory(d)
    assert rep["ok"] and FILE_NAME not in rep["foreign"]
    assert rep["quarantine"]["count"] == 1 and rep["quarantine"]["entries"] == [public_view(
        read_entries(str(tmp_path / "wal" / FILE_NAME))[0][0])]
    assert any("1 quarantined record" in w for w in rep["warnings"])
    assert main(["wal", "inspect", d]) == 0
    out = capsys.readouterr().out
    assert "quarantined" in out and entry["digest"][:16] in out and "ValueError in raise_with_payload" in out
    assert main(["wal", "verify", d]) == 0  # a quarantine is not corruption
