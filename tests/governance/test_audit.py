"""WORM audit log: chain, seals, HEAD, anchors, `flk audit verify`, and INV-WORM-CHAIN under
every kind of tampering (Hypothesis)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.governance import audit
from flk.impl.lab.cli import main

T0 = 1_800_000_000.0


def _digest(i: int) -> str:
    return hashlib.sha256(f"payload-{i}".encode()).hexdigest()


def build_log(directory: str, n: int, per_segment: int, anchor_every: int = 0) -> audit.AuditLog:
    log = audit.AuditLog(directory, segment_entries=per_segment)
    store = audit.AttestationStore(os.path.join(directory, "anchors"))
    for i in range(n):
        log.append(tenant=f"t{i % 3}", pcs_id=f"{i:064x}", outcome="accepted" if i % 4 else "escalated",
                   payload_digest=_digest(i), now=T0 + i, status=200 if i % 4 else 202, policy_version="1.0.0")
        if anchor_every and (i + 1) % anchor_every == 0:
            log.anchor(store, T0 + i)
    log.close(now=T0 + n)
    return log


def _writable(path: str) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def _lines(directory: str, seg: int) -> list[bytes]:
    with open(os.path.join(directory, audit.segment_name(seg)), "rb") as f:
        return f.read().split(b"\n")[:-1]


def _put_lines(directory: str, seg: int, lines: list[bytes], raw: bytes | None = None) -> None:
    path = os.path.join(directory, audit.segment_name(seg))
    _writable(path)
    with open(path, "wb") as f:
        f.write(raw if raw is not None else b"".join(line + b"\n" for line in lines))


def test_inv_worm_chain_intact_log_verifies(tmp_path, capsys):
    d = str(tmp_path / "log")
    build_log(d, 23, 5, anchor_every=7)
    report = audit.verify_directory(d, os.path.join(d, "anchors"))
    assert report.ok and report.entries == 23 and report.segments == 5 and report.sealed_segments == 5
    assert report.anchors == 3
    assert main(["audit", "verify", d]) == 0
    assert "INV-WORM-CHAIN holds: 23 entries" in capsys.readouterr().out
    assert main(["audit", "verify", d, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_inv_worm_chain_entries_chain_and_hold_no_payload(tmp_path):
    d = str(tmp_path)
    build_log(d, 6, 4)
    lines = _lines(d, 0) + _lines(d, 1)
    entries = [json.loads(x) for x in lines]
    assert entries[0]["prev"] == audit.GENESIS
    for a, b in zip(entries, entries[1:], strict=False):
        assert b["prev"] == a["hash"] and b["seq"] == a["seq"] + 1
    assert set(entries[0]) == {"v", "seq", "ts", "tenant", "pcs_id", "outcome", "status", "payload_digest",
                               "policy_version", "prev", "hash"}
    seal = json.loads(open(os.path.join(d, audit.seal_name(0)), "rb").read())
    assert seal["merkle_root"] == audit.segment_root(_lines(d, 0)) and seal["count"] == 4


def test_inv_worm_chain_sealed_segments_are_read_only_and_refuse_rewrite(tmp_path):
    d = str(tmp_path)
    log = build_log(d, 4, 2)
    mode = os.stat(os.path.join(d, audit.segment_name(0))).st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    log.active = 0  # try to point the writer back at a sealed segment
    with pytest.raises(audit.WormViolation):
        log.append(tenant="t", pcs_id="p", outcome="accepted", payload_digest=_digest(0), now=T0)
    store = audit.AttestationStore(str(tmp_path / "a"))
    store.put({"batch": 0})
    with pytest.raises(audit.WormViolation):
        store.put({"batch": 0})


def test_audit_reopen_continues_chain_and_drops_torn_tail(tmp_path):
    d = str(tmp_path)
    log = audit.AuditLog(d, segment_entries=10)
    for i in range(3):
        log.append(tenant="t", pcs_id=f"p{i}", outcome="accepted", payload_digest=_digest(i), now=T0 + i)
    log.sync()
    log.close()
    path = os.path.join(d, audit.segment_name(0))
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":3')  # crash in the middle of an append
    assert not audit.verify_directory(d).ok
    log = audit.AuditLog(d, segment_entries=10)
    assert log.seq == 3
    log.append(tenant="t", pcs_id="p3", outcome="accepted", payload_digest=_digest(3), now=T0 + 3)
    log.close(now=T0 + 4)
    assert audit.verify_directory(d).ok and audit.verify_directory(d).entries == 4
    log = audit.AuditLog(d, segment_entries=10)  # after a seal the next entry opens segment 1
    log.append(tenant="t", pcs_id="p4", outcome="accepted", payload_digest=_digest(4), now=T0 + 5)
    log.close()
    r = audit.verify_directory(d)
    assert r.ok and r.segments == 2 and r.sealed_segments == 1


def test_audit_entry_validation_refuses_payloads():
    with pytest.raises(audit.InvalidInput):
        audit.make_entry(0, audit.GENESIS, tenant="t", pcs_id="p", outcome="ok", payload_digest="{raw payload}", ts=T0)
    with pytest.raises(audit.InvalidInput):
        audit.make_entry(0, audit.GENESIS, tenant="", pcs_id="p", outcome="ok", payload_digest=_digest(0), ts=T0)
    with pytest.raises(audit.InvalidInput):
        audit.make_entry(0, audit.GENESIS, tenant="t", pcs_id="p\n", outcome="ok", payload_digest=_digest(0), ts=T0)


def test_inv_worm_chain_anchor_tampering_detected(tmp_path, capsys):
    d = str(tmp_path)
    build_log(d, 8, 2, anchor_every=4)
    adir = os.path.join(d, "anchors")
    name = sorted(os.listdir(adir))[1]
    path = os.path.join(adir, name)
    a = json.loads(open(path).read())
    _writable(path)
    # rewrite segment 3 *and* its seal, HEAD consistent: only the anchor can tell
    a_ok = json.loads(json.dumps(a))
    a["segment_roots"][0] = "00" * 32
    open(path, "w").write(json.dumps(a))
    r = audit.verify_directory(d, adir)
    assert not r.ok and r.problem.kind == "anchor_corrupt"
    a_ok["root"] = "11" * 32
    a_ok["anchor_hash"] = audit.anchor_hash(a_ok)
    open(path, "w").write(json.dumps(a_ok))
    r = audit.verify_directory(d, adir)
    assert not r.ok and r.problem.kind == "anchor_corrupt"
    assert main(["audit", "verify", d, "--anchors", adir]) == 1
    assert "INV-WORM-CHAIN violated" in capsys.readouterr().err


def test_inv_worm_chain_resealed_segment_caught_by_anchor(tmp_path):
    """An attacker who rewrites an entry and recomputes every hash, seal and HEAD is caught by the anchor."""
    d = str(tmp_path)
    build_log(d, 4, 2, anchor_every=4)
    files = audit.read_log_files(d)
    entries = [json.loads(x) for x in files[audit.segment_name(1)].split(b"\n")[:-1]]
    entries[1]["outcome"] = "rejected"
    entries[1]["hash"] = audit.entry_hash(entries[1])
    lines = [audit.canonical_json(e) for e in entries]
    seal = json.loads(files[audit.seal_name(1)])
    seal.update(merkle_root=audit.segment_root(lines), last_hash=entries[1]["hash"])
    seal["seal_hash"] = audit.seal_hash(seal)
    head = {"v": 1, "sealed_segments": 2, "last_seal": seal["seal_hash"]}
    forged = dict(files)
    forged[audit.segment_name(1)] = b"".join(x + b"\n" for x in lines)
    forged[audit.seal_name(1)] = audit.canonical_json(seal) + b"\n"
    forged[audit.HEAD] = audit.canonical_json(head) + b"\n"
    assert audit.verify_log(forged).ok  # self-consistent without the anchor...
    anchors = audit.AttestationStore(os.path.join(d, "anchors")).read_all()
    r = audit.verify_log(forged, anchors)  # ...but not against it
    assert not r.ok and r.problem.kind == "anchor_mismatch" and r.problem.segment == 1


def test_audit_cli_bad_input(tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["audit", "verify", str(tmp_path)]) == 2
    assert "not an audit log" in capsys.readouterr().err
    assert main(["audit"]) == 2


MUTATIONS = ["change", "flip", "delete", "swap", "truncate_entries", "torn", "drop_tail_segments",
             "delete_segment", "reorder_segments"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 14), per=st.integers(2, 4), data=st.data())
def test_a_bad_entry_before_a_torn_tail_is_the_problem_reported(n, per, data):
    """Checks go in log order: an entry made garbage before a torn tail of its segment is the
    first problem (a random-bytes segment read as a crash-torn tail said the damage was its
    end, which a repair cuts off)."""
    with tempfile.TemporaryDirectory() as d:
        build_log(d, n, per)
        k = data.draw(st.integers(0, n - 1).filter(lambda k: k % per < min(per, n - k // per * per) - 1), label="entry")
        s, p = k // per, k % per
        lines = _lines(d, s)
        torn_at = data.draw(st.integers(p + 1, len(lines) - 1), label="torn")
        lines[p] = data.draw(st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b), label="garbage")
        raw = b"".join(x + b"\n" for x in lines[:torn_at]) + lines[torn_at][:-1]
        _put_lines(d, s, lines, raw=raw)
        report = audit.verify_directory(d)
        assert not report.ok and (report.problem.segment, report.problem.entry) == (s, p), report.problem
        assert report.problem.kind != "torn_tail"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 14), per=st.integers(1, 4), kind=st.sampled_from(MUTATIONS), data=st.data())
def test_inv_worm_chain_every_mutation_detected_at_the_right_position(n, per, kind, data):
    with tempfile.TemporaryDirectory() as d:
        build_log(d, n, per)
        nseg = (n + per - 1) // per
        seg_of = lambda k: (k // per, k % per)  # noqa: E731
        if kind in ("change", "flip", "delete", "truncate_entries", "torn"):
            k = data.draw(st.integers(0, n - 1), label="entry")
            s, p = seg_of(k)
            lines = _lines(d, s)
            if kind == "change":
                obj = json.loads(lines[p])
                obj["outcome"] = "rejected" if obj["outcome"] != "rejected" else "accepted"
                lines[p] = audit.canonical_json(obj)
                _put_lines(d, s, lines)
            elif kind == "flip":
                b = data.draw(st.integers(0, len(lines[p]) * 8 - 1), label="bit")
                line = bytearray(lines[p])
                line[b // 8] ^= 1 << (b % 8)
                lines[p] = bytes(line)
                _put_lines(d, s, lines)
            elif kind == "delete":
                del lines[p]
                _put_lines(d, s, lines)
            elif kind == "truncate_entries":
                _put_lines(d, s, lines[:p])
            else:  # torn: cut inside entry p
                cut = data.draw(st.integers(1, len(lines[p]) - 1), label="cut")
                raw = b"".join(x + b"\n" for x in lines[:p]) + lines[p][:cut]
                _put_lines(d, s, lines, raw=raw)
            want = (s, p)
        elif kind == "swap":
            if n < 2:
                return
            k = data.draw(st.integers(0, n - 2), label="entry")
            (s1, p1), (s2, p2) = seg_of(k), seg_of(k + 1)
            if json.loads(_lines(d, s1)[p1]) == json.loads(_lines(d, s2)[p2]):
                return
            l1, l2 = _lines(d, s1), _lines(d, s2)
            if s1 == s2:
                l1[p1], l1[p2] = l1[p2], l1[p1]
                _put_lines(d, s1, l1)
            else:
                l1[p1], l2[p2] = l2[p2], l1[p1]
                _put_lines(d, s1, l1)
                _put_lines(d, s2, l2)
            want = (s1, p1)
        elif kind == "drop_tail_segments":
            s = data.draw(st.integers(0, nseg - 1), label="segment")
            for m in range(s, nseg):
                os.remove(os.path.join(d, audit.segment_name(m)))
                os.remove(os.path.join(d, audit.seal_name(m)))
            want = (s, 0)
        elif kind == "delete_segment":
            if nseg < 2:
                return
            s = data.draw(st.integers(0, nseg - 2), label="segment")
            os.remove(os.path.join(d, audit.segment_name(s)))
            os.remove(os.path.join(d, audit.seal_name(s)))
            want = (s, None)
        else:  # reorder_segments: swap two adjacent segments together with their seals
            if nseg < 2:
                return
            s = data.draw(st.integers(0, nseg - 2), label="segment")
            for name in (audit.segment_name, audit.seal_name):
                a, b = os.path.join(d, name(s)), os.path.join(d, name(s + 1))
                os.rename(a, a + ".x")
                os.rename(b, a)
                os.rename(a + ".x", b)
            want = (s, 0)
        report = audit.verify_directory(d)
        assert not report.ok, kind
        got = (report.problem.segment, report.problem.entry)
        assert got == want, (kind, report.problem)
        assert main(["audit", "verify", d]) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), per=st.integers(1, 3), data=st.data())
def test_inv_worm_chain_any_bit_flip_in_any_file_is_detected(n, per, data):
    """Entries, seals, HEAD and anchors: one flipped bit anywhere is reported, never a traceback."""
    with tempfile.TemporaryDirectory() as d:
        build_log(d, n, per, anchor_every=2)
        adir = os.path.join(d, "anchors")
        paths = sorted(os.path.join(d, x) for x in os.listdir(d) if x != "anchors")
        paths += sorted(os.path.join(adir, x) for x in os.listdir(adir))
        path = data.draw(st.sampled_from(paths), label="file")
        raw = bytearray(open(path, "rb").read())
        bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
        raw[bit // 8] ^= 1 << (bit % 8)
        _writable(path)
        open(path, "wb").write(bytes(raw))
        report = audit.verify_directory(d, adir)
        assert not report.ok, (os.path.basename(path), bit)
        log_json = path.endswith(".json") and os.path.dirname(path) == d  # seals and HEAD; anchors are not read
        with pytest.raises((audit.AuditCorruption, audit.WormViolation)) if log_json else _noop():
            audit.AuditLog(d, segment_entries=per)


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_audit_reopen_finishes_an_interrupted_seal_but_refuses_truncation(tmp_path):
    d = str(tmp_path)
    build_log(d, 6, 2)
    head = open(os.path.join(d, audit.HEAD), "rb").read()
    # crash between writing seal 2 and HEAD: HEAD still names two sealed segments
    files = audit.read_log_files(d)
    seal1 = json.loads(files[audit.seal_name(1)])
    _writable(os.path.join(d, audit.HEAD))
    open(os.path.join(d, audit.HEAD), "wb").write(
        audit.canonical_json({"v": 1, "sealed_segments": 2, "last_seal": seal1["seal_hash"]}) + b"\n")
    assert audit.verify_directory(d).problem.kind == "head_mismatch"
    audit.AuditLog(d, segment_entries=2)
    assert open(os.path.join(d, audit.HEAD), "rb").read() == head and audit.verify_directory(d).ok
    # dropping the last sealed segment is not repaired silently
    os.remove(os.path.join(d, audit.segment_name(2)))
    os.remove(os.path.join(d, audit.seal_name(2)))
    with pytest.raises(audit.AuditCorruption):
        audit.AuditLog(d, segment_entries=2)
    assert main(["audit", "anchor", d, "--now", "1"]) == 1
