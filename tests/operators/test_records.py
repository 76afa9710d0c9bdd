"""The controller's records survive a crash: a synced audit entry in a new segment (the
segment's directory entry is fsynced when it is created), the status file, and a pending
transition flushed exactly once."""

from __future__ import annotations

from flk.impl.governance.audit import AuditLog, verify_directory
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
