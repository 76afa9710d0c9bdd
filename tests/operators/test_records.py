"""The controller's records survive a crash: a synced audit entry in a new segment (the
segment's directory entry is fsynced when it is created), the status file, and a pending
transition flushed exactly once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.governance.audit import AuditLog, verify_directory
from flk.impl.lab import cli
from flk.impl.operator import records
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


def test_a_synced_audit_entry_in_a_fresh_segment_survives_a_crash():
    fs = CrashableMemoryFileSystem()
    log = AuditLog("/a", fs)
    log.append(tenant="operator", pcs_id="ShardMigration/x#1", outcome="Pending->Planning",
               payload_digest="0" * 64, now=1.0)
    log.sync()
    fs.crash()
    assert records.audited_ids("/a", fs) == {"ShardMigration/x#1"}
    assert verify_directory("/a", fs=fs).ok


def test_pending_transitions_are_flushed_once_across_a_crash_after_the_audit_write():
    fs = CrashableMemoryFileSystem()
    statuses = records.StatusStore("/s", fs)
    rec = {"policy": "ShardMigration/x", "seq": 1, "from": "Pending", "to": "Planning", "generation": "g"}
    status = {"phase": "Planning", "pending_audit": [rec]}
    statuses.save("ShardMigration/x", status)
    log = AuditLog("/a", fs)
    seen = records.audited_ids("/a", fs)
    assert len(records.flush_audit(dict(status), log, 2.0, seen)) == 1
    fs.crash()  # killed before the status without pending_audit was saved
    again = statuses.load("ShardMigration/x")
    assert again["pending_audit"] == [rec]
    log = AuditLog("/a", fs)
    assert records.flush_audit(again, log, 3.0, records.audited_ids("/a", fs)) == []
    assert again["pending_audit"] == [] and records.audited_ids("/a", fs) == {"ShardMigration/x#1"}


# ---- a damaged status file: the controller starts it over, `flk operator status` names it ----
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                                  st.sampled_from(["phase", "kind", "round"]), kids, max_size=3),
                              max_leaves=8).map(lambda doc: json.dumps(doc).encode())))
def test_any_status_bytes_are_a_status_or_a_value_error(data):
    doc = None
    try:
        doc = records.parse_status(data)
    except ValueError as exc:
        assert str(exc).startswith(("not JSON (", "not a status ("))
    else:
        assert isinstance(doc, dict) and "phase" in doc
    fs = CrashableMemoryFileSystem()
    store = records.StatusStore("/s", fs)
    fs.write_atomic(store.path("ShardMigration/m"), data)
    assert store.load("ShardMigration/m") == doc  # unreadable: None, the controller starts it over


DAMAGED = {"list.status.json": b"[1, 2]", "cut.status.json": b'{"phase": "Co', "empty.status.json": b"",
           "utf16.status.json": b"\xff\xfe", "deep.status.json": b"[" * 100_000}


def test_operator_status_prints_the_readable_and_names_each_damaged_file(tmp_path, capsys):
    d = tmp_path / "status"
    d.mkdir()
    for name, data in DAMAGED.items():
        (d / name).write_bytes(data)
    (d / "dir.status.json").mkdir()
    (d / "ok.status.json").write_text(json.dumps({"kind": "ShardMigration", "name": "m", "phase": "Completed"}))
    rc = cli.main(["operator", "status", "--state-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    assert [json.loads(line)["phase"] for line in out.splitlines()] == ["Completed"]
    lines = err.splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == sorted([*DAMAGED, "dir.status.json"])
    assert all(": unreadable: " in line for line in lines)
    assert any(line.endswith("unreadable: Is a directory") for line in lines)


POLICY = """kind = "ShardMigration"
name = "grow"
[spec]
old = { s0 = "sqlite:///unused/s0.db" }
new = { s0 = "sqlite:///unused/s0.db", s1 = "sqlite:///unused/s1.db" }
"""


@pytest.mark.parametrize("damage", ["HEAD.json", "seg-00000000.seal.json"])
def test_operator_run_refuses_an_altered_audit_log_in_one_line(tmp_path, capsys, damage):
    """The controller's transitions must be provable afterwards: with an audit log whose head or
    seal was altered it does not start (INV-WORM-CHAIN), and says so in one line."""
    from flk.impl.storage.fs import OsFileSystem

    audit = tmp_path / "state" / "audit"
    log = AuditLog(str(audit), OsFileSystem())
    log.append(tenant="operator", pcs_id="ShardMigration/grow#1", outcome="Pending->Planning",
               payload_digest="ab" * 32, now=1.0)
    log.sync()
    log.close(2.0)
    (audit / damage).write_bytes(b"[1, 2]")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "grow.toml").write_text(POLICY)
    rc = cli.main(["operator", "run", "--policies", str(tmp_path / "policies"), "--url", "http://127.0.0.1:9",
                   "--state-dir", str(tmp_path / "state"), "--max-seconds", "1"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("INV-WORM-CHAIN violated: refusing to run with the audit log ") and str(audit) in err
    assert f"flk audit verify {audit}" in err
