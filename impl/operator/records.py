"""What the controller keeps: its status per policy, and the audit log of its transitions.

Why this module exists: a killed controller must resume from what it wrote,
and every transition must be provable afterwards. Order of a driver's step
(INV-OP-RESUME): reconcile -> :meth:`StatusStore.save` (atomic; the status
carries the transition records not yet audited in ``pending_audit``) ->
:func:`flush_audit` (append each record to the WORM audit log, skipping one
whose ``(policy, seq)`` the log already holds, then clear ``pending_audit``)
-> carry out the actions. A kill between any two of these loses nothing: the
status is either the old one (the reconcile is redone) or the new one (its
pending records are flushed on resume, exactly once).

An audit entry uses the WORM log's fields (spec/GOVERNANCE.md) without
changing its format: ``tenant`` = ``operator``, ``pcs_id`` =
``<Kind>/<name>#<seq>``, ``outcome`` = ``<from>-><to>``, ``payload_digest`` =
SHA-256 of the canonical transition record (which names the guard, the gate
verdicts and the spec generation). I/O goes through ``FileSystem``.
"""

from __future__ import annotations

import hashlib
import json
import re

from ..core import textdata
from ..governance.audit import AuditLog, read_log_files
from ..storage.fs import FileSystem

AUDIT_TENANT = "operator"
SAFE = re.compile(r"[^A-Za-z0-9_.-]")
SEQ = re.compile(r"[0-9]{1,18}")


def parse_status(data: bytes) -> dict:
    """A status file's bytes as the status it holds; ``ValueError`` saying why when they are
    not one (not JSON, or not a JSON object with a ``phase``)."""
    try:
        doc = textdata.json_loads(data)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or "phase" not in doc:
        raise ValueError("not a status (a JSON object with a phase)")
    return doc


def status_name(policy_key: str) -> str:
    return SAFE.sub("_", policy_key.replace("/", "__")) + ".status.json"


class StatusStore:
    """``<dir>/<Kind>__<name>.status.json``, written atomically (``write_atomic``)."""

    def __init__(self, directory: str, fs: FileSystem) -> None:
        self.dir, self.fs = directory, fs
        fs.makedirs(directory)

    def path(self, policy_key: str) -> str:
        return f"{self.dir.rstrip('/')}/{status_name(policy_key)}"

    def load(self, policy_key: str) -> dict | None:
        p = self.path(policy_key)
        if not self.fs.exists(p):
            return None
        try:
            return parse_status(self.fs.read(p))
        except ValueError:
            return None  # unreadable: start over from observation (every action is idempotent)

    def save(self, policy_key: str, status: dict) -> None:
        self.fs.write_atomic(self.path(policy_key), json.dumps(status, sort_keys=True, indent=1).encode())


def record_digest(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def audited_ids(directory: str, fs: FileSystem) -> set[str]:
    """``pcs_id``s of the operator's entries already in the audit log."""
    out = set()
    for name, data in sorted(read_log_files(directory, fs).items()):
        if not name.endswith(".log"):
            continue
        for line in data.splitlines():
            try:
                e = textdata.json_loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("tenant") == AUDIT_TENANT:
                out.add(str(e.get("pcs_id")))
    return out


def last_seq(seen: set[str], policy_key: str) -> int:
    """The highest transition number of ``policy_key`` among audited ids (0: none)."""
    prefix = f"{policy_key}#"
    nums = [int(i[len(prefix):]) for i in seen if i.startswith(prefix) and SEQ.fullmatch(i[len(prefix):])]
    return max(nums, default=0)


def audit_id(rec: dict) -> str:
    return f"{rec['policy']}#{rec['seq']}"


def flush_audit(status: dict, log: AuditLog, now: float, seen: set[str]) -> list[dict]:
    """Append ``status["pending_audit"]`` to ``log`` (each once: ``seen`` holds the ids already
    there and is updated), fsync, clear the list. Returns the entries written."""
    written = []
    for rec in status.get("pending_audit", []):
        aid = audit_id(rec)
        if aid in seen:
            continue
        written.append(log.append(tenant=AUDIT_TENANT, pcs_id=aid, outcome=f"{rec['from']}->{rec['to']}",
                                  payload_digest=record_digest(rec), now=now,
                                  policy_version=str(rec.get("generation", ""))[:64] or None))
        seen.add(aid)
    log.sync()
    status["pending_audit"] = []
    return written
