"""Home answers in a segment's manifest (SPEC.md section 12.4): what the region answered each
record travels with the segment; a manifest without them (written before they existed) still
replays; a malformed one rejects the segment."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.replication.stream import SegmentRejected, verify_segment
from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import (
    A_CONFLICT,
    A_REJECTED,
    A_STORED,
    AnswerNote,
    decode_answers,
    encode_answers,
    manifest_bytes,
)
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

DIGEST = "ab" * 32


def _log(n: int, fs=None):
    log = SegmentedLog("/wal", fs=fs or CrashableMemoryFileSystem())
    for k in range(n):
        log.append(encode_inbox_record(InboxRecord("t", 1.0 + k, "eu", b"{}")))
    return log


def _shipped(log, sealed):
    data = log.fs.read("/wal/" + sealed.name)
    raw = log.fs.read("/wal/" + sealed.name.replace(".log", ".manifest.json"))
    return raw, data


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 4)), min_size=1, max_size=30))
def test_answers_round_trip_through_the_manifest(codes):
    first = 5
    notes = {first + k: AnswerNote(first + k, a, 0, DIGEST if a == A_CONFLICT else "")
             for k, a in enumerate(codes) if a is not None}
    m = {"first_index": first, "count": len(codes), "answers": encode_answers(first, len(codes), notes)}
    got = decode_answers(json.loads(json.dumps(m)))
    assert {i: (n.answer, n.digest) for i, n in got.items()} == {i: (n.answer, n.digest) for i, n in notes.items()}


def test_a_sealed_segment_carries_its_records_answers_and_a_reader_attaches_them():
    log = _log(3)
    log.note_answers([AnswerNote(0, A_STORED, 200), AnswerNote(1, A_CONFLICT, 409, DIGEST),
                      AnswerNote(2, A_REJECTED, 401)])
    sealed = log.seal()
    raw, data = _shipped(log, sealed)
    assert json.loads(raw)["answers"] == {"codes": "SCR", "held": {"1": DIGEST}}
    _, recs = verify_segment("eu", sealed.name, raw, data)
    assert [(r.index, r.home.answer, r.home.refused) for r in recs] == [
        (0, A_STORED, False), (1, A_CONFLICT, True), (2, A_REJECTED, True)]
    assert recs[1].home.digest == DIGEST
    # answers of records already sealed are dropped; the next segment starts clean
    log.note_answers([AnswerNote(0, A_STORED, 200)])
    log.append(encode_inbox_record(InboxRecord("t", 9.0, "eu", b"{}")))
    nxt = log.seal()
    assert "answers" not in json.loads(_shipped(log, nxt)[0])


def test_a_manifest_without_answers_replays_as_before():
    """A segment written before answers existed (no ``answers`` key, same manifest format):
    its records carry no home answer and are replayed as the writes they would be alone."""
    log = _log(2)
    sealed = log.seal()
    raw, data = _shipped(log, sealed)
    assert "answers" not in json.loads(raw) and json.loads(raw)["format"] == "flk-wal-manifest/1"
    _, recs = verify_segment("eu", sealed.name, raw, data)
    assert [r.home for r in recs] == [None, None] and [r.index for r in recs] == [0, 1]


@pytest.mark.parametrize("answers", [{"codes": "S"}, {"codes": "SX"}, {"codes": 7}, "SS",
                                     {"codes": "CS", "held": {"0": 5}}])
def test_a_malformed_answers_object_rejects_the_segment(answers):
    log = _log(2)
    sealed = log.seal()
    raw, data = _shipped(log, sealed)
    m = json.loads(raw)
    m["answers"] = answers
    with pytest.raises(SegmentRejected, match="answers"):
        verify_segment("eu", sealed.name, manifest_bytes(m), data)
    with pytest.raises(InvalidInput):
        decode_answers(m)


def test_a_crash_loses_the_active_segments_answers_and_recovery_seals_without_them():
    fs = CrashableMemoryFileSystem()
    log = _log(2, fs)
    log.sync()
    log.note_answers([AnswerNote(0, A_STORED, 200)])
    fs.crash()
    again = SegmentedLog("/wal", fs=fs)
    assert again.next_index == 2
    sealed = again.seal()
    assert "answers" not in json.loads(_shipped(again, sealed)[0])  # start-up replay re-notes them
