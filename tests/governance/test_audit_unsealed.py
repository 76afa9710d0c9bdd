"""Chain links of the unsealed (active) audit segment are checked.

Sealed segments are covered three times over (seal, Merkle root, anchor), so a
verifier that checked hash links only where a seal exists passed every older
test that tampers with sealed data. The active segment has nothing but its
links: here every entry position of it is tampered with in ways that keep each
entry self-consistent (canonical JSON, its own hash recomputed, seq renumbered),
so only the ``prev`` link can tell -- and the problem must be reported at that
entry.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from flk.impl.governance import audit

from .test_audit import T0, _digest, _lines, _put_lines

N, PER = 9, 5  # segment 0 sealed (5 entries), segment 1 active (4 entries, never sealed)
ACTIVE = 1


def build_unsealed(directory: str) -> None:
    log = audit.AuditLog(directory, segment_entries=PER)
    for i in range(N):
        log.append(tenant=f"t{i % 3}", pcs_id=f"{i:064x}", outcome="accepted", payload_digest=_digest(i),
                   now=T0 + i, status=200, policy_version="1.0.0")
    log.close()  # no ``now``: the active segment stays unsealed


def rehash(obj: dict, seq: int | None = None) -> bytes:
    obj = dict(obj)
    if seq is not None:
        obj["seq"] = seq
    obj["hash"] = audit.entry_hash(obj)
    return audit.canonical_json(obj)


def tamper(lines: list[bytes], kind: str, p: int, first_seq: int) -> list[bytes]:
    objs = [json.loads(line) for line in lines]
    if kind == "relink":  # entry p points at another (well-formed) predecessor hash
        objs[p]["prev"] = audit.entry_hash({"forged": p})
        return [*lines[:p], rehash(objs[p]), *lines[p + 1:]]
    if kind == "drop":  # entry p removed, the rest renumbered and rehashed (links kept)
        del objs[p]
    else:  # "swap": entries p and p+1 exchanged, renumbered and rehashed
        objs[p], objs[p + 1] = objs[p + 1], objs[p]
    return [*lines[:p], *(rehash(o, first_seq + k) for k, o in enumerate(objs[p:], start=p))]


CASES = [(kind, p) for kind in ("relink", "drop", "swap") for p in range(N - PER)
         if not (kind == "swap" and p == N - PER - 1) and not (kind == "drop" and p == N - PER - 1)]


@pytest.mark.parametrize("kind, p", CASES)
def test_tampered_link_in_the_unsealed_segment_is_found_at_its_entry(kind, p) -> None:
    with tempfile.TemporaryDirectory() as d:
        build_unsealed(d)
        assert audit.seal_name(ACTIVE) not in os.listdir(d)
        assert audit.verify_directory(d).ok
        lines = _lines(d, ACTIVE)
        assert len(lines) == N - PER
        _put_lines(d, ACTIVE, tamper(lines, kind, p, PER))
        report = audit.verify_directory(d)
        assert not report.ok, (kind, p)
        assert (report.problem.kind, report.problem.segment, report.problem.entry) == ("chain_break", ACTIVE, p)

