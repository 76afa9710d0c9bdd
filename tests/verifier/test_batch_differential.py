"""The compiled batch loop answers exactly what the pure reference answers.

The verification core (``flk.impl.verifier.core.VerifyBatch``) runs steps 3, 4 and 6
of a batch's common case with one compiled call per tenant (``accept_batch``: the
``accept_v1`` of every body) and frames the batch's inbox WAL records with one more
(``frame_records``: ``walformat.encode_frame`` of every payload). These tests compare:

* ``accept_batch`` with ``accept_v1`` of each body, over arbitrary bodies (valid,
  mutated, re-signed, Ed25519, arbitrary JSON, arbitrary bytes, and realistic PCS
  spelled every way JSON allows: whitespace, key order, repeated keys, number
  spellings, escapes, non-ASCII) in one list;
* ``accept_scan`` (the common case read off the body without a dict) with
  ``accept_v1`` (the dict path) wherever it answers, over the same bodies and every
  HMAC vector;
* ``frame_records`` (and :func:`flk.impl.verifier.pipeline.frame_inbox`) with the
  reference framing, over arbitrary heads, bodies and inbox records;
* the whole batch path (``run_requests`` on a real ``SegmentedLog``) with the
  compiled functions and on the pure reference alone, over batches where one
  tenant sends many requests, and over every HMAC signing and verification test
  vector (spec/vectors) submitted in one batch per key set: the same responses,
  events, latency labels, WAL bytes and dedup state.

A differential test is only worth something if it catches a wrong compiled loop:
``test_planted_c_bugs_are_caught`` builds ``_fastverify.c`` with a planted bug (a
stale answer reused by the batch loop; a header CRC over too few bytes; a scanner
that takes a repeated key) and checks
that the property tests above fail on it and pass on the real build.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from base64 import b64decode, b64encode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flk.conformance.vectors import decode_input, load_cases, vectors_dir
from flk.impl.agent import factory
from flk.impl.core import accel
from flk.impl.storage.inbox import encode_inbox_records
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import encode_frame
from flk.impl.testing.cbuild import build_variant
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier import core, pipeline
from flk.impl.verifier.pipeline import Request, Verifier, WalAppend
from flk.impl.verifier.tenants import from_mapping

from .pcsgen import HMAC_A, HMAC_A2, HMAC_B, registry
from .test_fastpath_differential import (
    DIFF,
    _drive,
    compact,
    needs_compiled,
    pure_core,
    realistic_pcs,
    request_bodies,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARAMS_NOW = 1_700_000_000.0


def _accept_args():
    verifier = Verifier(registry(), region="eu")
    parts = (repr(PARAMS_NOW), verifier.policy_version_json, verifier.region_json)
    return verifier.signal_params, parts


def _pool() -> list[bytes]:
    conflicting = factory.sign({**realistic_pcs(0), "coh_star": 0.5, "sig_alg": "hmac"}, HMAC_A)
    return [compact(realistic_pcs(i)) for i in range(4)] + [compact(conflicting), json.dumps(realistic_pcs(1)).encode()]


WS = st.sampled_from(["", "", "", " ", "\n", "\t ", "\r\n  "])


def _spell_float(draw, x: float, wild: bool) -> str:
    """``x`` written one of the ways JSON allows (tame: always the same double)."""
    how = draw(st.integers(0, 6 if wild else 2))
    if how == 1:
        return f"{x:.17e}"  # an exponent: the same double
    if how == 2:
        return repr(x) + "0" if "e" not in repr(x) else repr(x)  # a trailing zero: the same double
    if how == 3:
        return f"{x:.3e}"  # fewer digits: another double (the signature no longer holds)
    if how == 4 and x == int(x):
        return str(int(x))  # an int where a float was: the dict path decides
    if how == 5:
        return draw(st.sampled_from(["1e400", "-0.0", "0.0", "1" * 301 + ".5", "-1.0E-0"]))
    return repr(x)


def _spell(draw, value, wild: bool, depth: int = 0) -> str:
    """``value`` as JSON text with the variations the scanner must read as ``parse_json`` does:
    whitespace, key order, repeated keys, number spellings (tame: nothing else, the values
    stay those signed); wild: also escapes, non-ASCII, ints for floats, extra and nested fields."""
    ws = draw(WS)
    if isinstance(value, dict):
        items = list(value.items())
        if draw(st.booleans()):
            items = draw(st.permutations(items))
        if items and draw(st.integers(0, 3)) == 0:
            items.append(items[draw(st.integers(0, len(items) - 1))])  # a repeated key, the same value
        if wild and depth < 2 and draw(st.integers(0, 3)) == 0:
            items.append((draw(st.sampled_from(["extra", "ft", "meta", "seed", "é"])),
                          draw(st.sampled_from([{"a": [[{"b": None}]]}, {"k": "v", "k2": "\x7f"}, 2**64, 2**64 - 1,
                                                -1, True, "x" * 70, {"a": {"b": [1.5, "c"]}}]))))
        inner = ("," + draw(WS)).join(
            f"{_spell_string(draw, str(k), wild)}{draw(WS)}:{draw(WS)}{_spell(draw, v, wild, depth + 1)}"
            for k, v in items)
        return "{" + ws + inner + ws + "}"
    if isinstance(value, list):
        return "[" + ws + ("," + ws).join(_spell(draw, v, wild, depth + 1) for v in value) + ws + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return _spell_float(draw, value, wild)
    if isinstance(value, int):
        if not wild:
            return str(value)
        return draw(st.sampled_from([str(value), str(value), f"{value}.0", f"-{value}" if value else "-0"]))
    return _spell_string(draw, value, wild)


def _spell_string(draw, text: str, wild: bool) -> str:
    how = draw(st.integers(0, 19)) if wild else 0
    if how == 1 and text:
        return f'"\\u{ord(text[0]):04x}' + json.dumps(text[1:])[1:]  # an escape: the same string
    if how == 2:
        return json.dumps(text + "é", ensure_ascii=False)  # non-ASCII: another string
    return json.dumps(text)


@st.composite
def spelled_pcs(draw) -> bytes:
    """A realistic signed PCS (or one with a changed field, re-signed) spelled by :func:`_spell`."""
    doc = realistic_pcs(draw(st.integers(0, 5)), seed=draw(st.sampled_from([2**63 + 11, 0, 2**64 - 1, 7])))
    wild = draw(st.booleans())
    change = draw(st.integers(0, 14)) if wild else 0
    if change == 1:
        doc["N_j"] = dict(reversed(list(doc["N_j"].items())))
    elif change == 2:
        doc["v_star"] = draw(st.sampled_from([[1, -1], [0.5] * 8, [0.5] * 9, [], [1.0000001], [0]]))
    elif change == 3:
        doc["sent_at"] = draw(st.sampled_from([0, 1.5, -1, "x" * 64, "x" * 65, -0.0]))
    elif change == 4:
        doc["attempt"] = draw(st.sampled_from([0, 2**70, -1]))
    elif change == 5:
        doc["scales"], doc["N_j"] = [2, 4, 8], {"2": 5, "4": 9, "8": 9}
        doc = factory.sign({k: v for k, v in doc.items() if k != "sig"}, HMAC_A)
    elif change == 6:
        doc["shard_id"] = draw(st.sampled_from(["s", "a" * 128, "a" * 129, "a b"]))
    elif change == 7:
        doc["regime"] = draw(st.sampled_from(["sticky", "mixed", "non_sticky", "other"]))
    return (draw(WS) + _spell(draw, doc, wild) + draw(WS)).encode("utf-8", "surrogatepass")


BODY_LISTS = st.lists(st.one_of(st.sampled_from(_pool()), request_bodies(), spelled_pcs()), min_size=0, max_size=12)
KEY_SETS = st.sampled_from([[HMAC_A], [HMAC_B], [HMAC_B, HMAC_A]])


def accept_scan_property(fv):
    """The property: ``fv.accept_scan`` answers what ``fv.accept_v1`` answers, or gives up (None)."""
    params, parts = _accept_args()

    @DIFF
    @given(body=st.one_of(spelled_pcs(), request_bodies()), keys=KEY_SETS)
    def prop(body, keys):
        got = fv.accept_scan(body, keys, params, parts)
        assert got is None or got == fv.accept_v1(body, keys, params, parts)

    return prop


def accept_batch_property(fv):
    """The property: ``fv.accept_batch`` answers ``fv.accept_v1`` of each body, in order."""
    params, parts = _accept_args()

    @DIFF
    @given(bodies=BODY_LISTS, keys=KEY_SETS)
    def prop(bodies, keys):
        assert fv.accept_batch(bodies, keys, params, parts) == [fv.accept_v1(b, keys, params, parts) for b in bodies]

    return prop


# a replay span: each record with the keys active at its receive time and the parts of that time
SPAN_KEYSETS = ([HMAC_A], [HMAC_B], [], [HMAC_B, HMAC_A], [HMAC_A2], [HMAC_A, HMAC_A2])
SPAN_TIMES = (PARAMS_NOW, PARAMS_NOW + 0.5, -0.0, 0.0, 5e9, 1e-300, PARAMS_NOW - 3600.0)


def _span_bodies() -> list[bytes]:
    """Realistic bodies signed with each key (the keys active at a record's time decide)."""
    out = []
    for key in (HMAC_A, HMAC_A2, HMAC_B):
        for i in range(3):
            doc = realistic_pcs(i)
            out.append(compact(factory.sign({k: v for k, v in doc.items() if k != "sig"}, key)))
    return out


def accept_each_property(fv):
    """The property: ``fv.accept_each`` answers ``fv.accept_v1`` of each body with its own keys
    and parts (its receive time), in order -- records of one time sharing their key list and
    parts tuple (``shared``) or each with its own equal copies."""
    params, (_, pv, rj) = _accept_args()
    spans = _span_bodies()
    first = (spans[0], 0, 0)

    @DIFF
    @example(picks=[first, (spans[1], 0, 1)], shared=True)  # another time, the same keys
    @example(picks=[first, (spans[3], 4, 0)], shared=True)  # the same time, other keys
    @example(picks=[first, first, (spans[0], 2, 0)], shared=False)
    @given(picks=st.lists(st.tuples(st.one_of(st.sampled_from(spans), st.sampled_from(_pool()), request_bodies(),
                                              spelled_pcs()),
                                    st.integers(0, len(SPAN_KEYSETS) - 1), st.integers(0, len(SPAN_TIMES) - 1)),
                          max_size=12),
           shared=st.booleans())
    def prop(picks, shared):
        keysets = [SPAN_KEYSETS[k] if shared else list(SPAN_KEYSETS[k]) for _, k, _ in picks]
        partsets = [(repr(SPAN_TIMES[t]), pv, rj) for _, _, t in picks]
        bodies = [body for body, _, _ in picks]
        want = [fv.accept_v1(b, k, params, p) for b, k, p in zip(bodies, keysets, partsets, strict=True)]
        assert fv.accept_each(bodies, keysets, params, partsets) == want

    return prop


HEADS = st.lists(st.binary(max_size=40), min_size=1, max_size=3)


def frame_records_property(fv):
    """The property: ``fv.frame_records`` writes the reference frames of ``heads[i] + bodies[i]``."""

    @DIFF
    @given(heads=HEADS, picks=st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=300)), max_size=8))
    def prop(heads, picks):
        hs = [heads[i % len(heads)] for i, _ in picks]
        bodies = [b for _, b in picks]
        assert fv.frame_records(hs, bodies) == b"".join(encode_frame(h + b) for h, b in zip(hs, bodies, strict=True))

    return prop


def _extension():
    return accel.extension(accel.entry("accept_batch").extension)


@pytest.mark.differential("accept_batch")
@needs_compiled
def test_accept_batch_is_accept_v1_of_each_body():
    fv = _extension()
    accept_batch_property(fv)()
    params, parts = _accept_args()
    bodies = _pool()
    got = accel.active("accept_batch")(bodies, [HMAC_A], params, parts)
    assert all(answer is not None for answer in got[:4])  # the compiled path takes realistic PCS
    assert accel.active("accept_batch")(tuple(bodies), [HMAC_A], params, parts) is None  # not a list: the reference


@pytest.mark.differential("accept_each")
@needs_compiled
def test_accept_each_is_accept_v1_at_each_records_time():
    """The batch loop with a receive time per record (a replay span, ``VerifyBatch.from_span``)
    answers ``accept_v1`` of each body with the keys and the answer parts of its own time."""
    fv = _extension()
    accept_each_property(fv)()
    params, (_, pv, rj) = _accept_args()
    each = accel.active("accept_each")
    bodies = _span_bodies()[:2]
    parts = [(repr(PARAMS_NOW), pv, rj), (repr(PARAMS_NOW + 0.5), pv, rj)]
    got = each(bodies, [[HMAC_A], [HMAC_A]], params, parts)
    assert all(answer is not None and answer[6] is not None for answer in got)  # the common case is taken
    assert b'"first_seen":1700000000.5,' in got[1][6] and b'"first_seen":1700000000.0,' in got[0][6]
    assert each(bodies, [[HMAC_A], [HMAC_B]], params, parts)[1] is None  # its keys at its time sign nothing
    assert each(bodies, [[HMAC_A]], params, parts) is None  # one key list short: the caller's loop decides
    assert each(bodies, [[HMAC_A], [HMAC_A]], params, tuple(parts)) is None
    assert each(tuple(bodies), [[HMAC_A], [HMAC_A]], params, parts) is None
    assert each([], [], params, []) == []


@pytest.mark.differential("accept_scan")
@needs_compiled
def test_accept_scan_is_accept_v1_where_it_answers():
    """The batch loop's read without a dict answers exactly what the dict path answers, over
    spelled, mutated and arbitrary bodies and every HMAC vector; it takes the common case
    (every realistic body, in any spelling of the same bytes' values) and gives up on the rest."""
    fv = _extension()
    accept_scan_property(fv)()
    params, parts = _accept_args()
    scan = accel.active("accept_scan")
    pool = _pool()
    assert all(scan(body, [HMAC_A], params, parts) == fv.accept_v1(body, [HMAC_A], params, parts) is not None
               for body in pool[:5])  # the common case is taken: 200s and an escalation
    assert scan(pool[4], [HMAC_A], params, parts)[6] is None  # escalated: no 200 body
    spaced = json.dumps(realistic_pcs(2), indent=2).encode()  # whitespace, the same values
    assert scan(spaced, [HMAC_A], params, parts) == fv.accept_v1(spaced, [HMAC_A], params, parts) is not None
    doubled = pool[0][:-1] + b',"attempt":1}'  # a duplicate key: parse_json gives up, so does the scanner
    assert scan(doubled, [HMAC_A], params, parts) is None is fv.accept_v1(doubled, [HMAC_A], params, parts)
    assert scan(pool[0], [HMAC_B], params, parts) is None  # another key: not signed by it
    assert scan(pool[0], [], params, parts) is None and scan(pool[0], (HMAC_A,), params, parts) is None
    assert scan(bytearray(pool[0]), [HMAC_A], params, parts) is None
    for keys, bodies in _hmac_vector_bodies().items():
        keys = [k for k in keys if k]
        for body in bodies:  # signed subsets, not whole PCS: neither path takes them
            got = scan(body, keys, params, parts)
            assert got is None or got == fv.accept_v1(body, keys, params, parts), body


@pytest.mark.differential("frame_records")
@needs_compiled
def test_frame_records_is_the_same_as_encode_frame():
    fv = _extension()
    frame_records_property(fv)()
    frame = accel.active("frame_records")
    assert frame([b"a"], [b"b", b"c"]) is None  # lists of different lengths
    assert frame([b"a"], [bytearray(b"b")]) is None  # bytes only
    assert frame([], []) == b""


INBOX_TENANTS = st.sampled_from(["ta", "ta", "tb", "", "é", "x" * 300])
INBOX_NOWS = st.sampled_from([PARAMS_NOW, PARAMS_NOW + 0.5, 0.0, -0.0, 1_700_000_000, float("inf"), 5e9])


@pytest.mark.differential("frame_records")
@needs_compiled
@DIFF
@given(effects=st.lists(st.tuples(INBOX_TENANTS, INBOX_NOWS, st.sampled_from(["eu", "us-east"]),
                                  st.binary(max_size=80)), max_size=8))
def test_frame_inbox_is_the_reference_framing_of_the_inbox_records(effects):
    """``frame_inbox`` gives the frames of ``encode_inbox_records`` or None (the reference then
    encodes -- or refuses -- the records); ``append_inbox`` appends the same bytes either way."""
    appends = [WalAppend(*e) for e in effects]
    try:
        want = b"".join(encode_frame(p) for p in encode_inbox_records(appends))
    except ValueError:
        want = None
    framed = pipeline.frame_inbox(appends)
    assert framed is None or framed == want
    if appends and all(type(a.received_at) is float and a.received_at not in (0.0, float("inf")) for a in appends):
        assert framed == want  # the common case is taken by the compiled path


def _one_tenant_batches():
    """Batches in which tenants send many requests each (accept_batch groups of several bodies)."""
    body = st.one_of(st.sampled_from(_pool()), request_bodies())
    tenant = st.sampled_from(["ta", "ta", "ta", "ta", "tb", "tr", None])
    batch = st.tuples(st.lists(st.tuples(body, tenant), min_size=0, max_size=14),
                      st.sampled_from([PARAMS_NOW, PARAMS_NOW + 1.25, 5e9]),
                      st.sampled_from([None, None, None, None, "first", "put"]))
    return st.lists(batch, min_size=1, max_size=3)


@pytest.mark.differential("accept_batch", "frame_records", "accept_v1")
@needs_compiled
@DIFF
@given(batch_list=_one_tenant_batches(), max_body=st.sampled_from([64 * 1024, 700]))
def test_the_batch_loop_answers_the_same_on_both_paths(batch_list, max_body):
    """``run_requests`` on a SegmentedLog with the compiled batch loop and on the pure
    reference: the same responses, events, latency labels, WAL bytes and dedup state."""
    limits = pipeline.Limits(max_body_bytes=max_body)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        fast = _drive(batch_list, True, "segmented", (), limits, a)
        with pure_core():
            slow = _drive(batch_list, True, "segmented", (), limits, b)
    assert fast == slow


def _keys(texts) -> tuple[bytes, ...]:
    """The keys that decode (a vector may hold a malformed one on purpose: it signs nothing)."""
    out = []
    for text in texts if isinstance(texts, list) else []:
        try:
            out.append(b64decode(text, validate=True))
        except (ValueError, TypeError):
            continue
    return tuple(out)


def _hmac_vector_bodies() -> dict[tuple[bytes, ...], list[bytes]]:
    """Every HMAC signing and verification vector as a submitted body, grouped by key set."""
    groups: dict[tuple[bytes, ...], list[bytes]] = {}
    for case in load_cases(vectors_dir()):
        if case.operation not in ("sign_hmac", "verify_hmac"):
            continue
        subset = decode_input(case.input["subset"])
        if not isinstance(subset, dict):
            continue
        if case.operation == "sign_hmac":
            keys = _keys([case.input.get("key_b64")])
            sig = (case.expected or {}).get("sig")
        else:
            keys = _keys(case.input.get("keys_b64"))
            sig = case.input.get("sig")
        doc = {**subset, "sig": sig} if isinstance(sig, str) else dict(subset)
        try:
            body = json.dumps(doc, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            continue
        groups.setdefault(keys, []).append(body)
    return groups


@pytest.mark.differential("accept_batch", "frame_records")
@needs_compiled
def test_every_hmac_vector_answers_the_same_in_one_batch():
    groups = _hmac_vector_bodies()
    assert sum(map(len, groups.values())) >= 90  # every v1 and legacy HMAC vector with a subset
    tenants = {f"k{i}": {"alg": "hmac", "keys": [{"secret_b64": b64encode(k).decode()} for k in keys if k],
                         "profiles": ["v1", "legacy-0.1"]}
               for i, keys in enumerate(groups) if any(keys)}
    requests = [Request(body, f"k{i}") for i, (keys, bodies) in enumerate(groups.items()) if any(keys)
                for body in bodies]

    def run(tmp):
        verifier = Verifier(from_mapping({"tenants": tenants}), region="eu")
        store, events = core_store(), []
        log = SegmentedLog(tmp)
        try:
            out = core.run_requests(verifier, requests, PARAMS_NOW, log, store, events.append)
            records = [p for _, p in log.records(0)]
        finally:
            log.close()
        return [(r.status, r.headers, r.body) for r in out], events, records

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        fast = run(a)
        with pure_core():
            slow = run(b)
    assert fast == slow
    assert {status for status, _, _ in fast[0]} >= {400}


# ------------------------------------------------------------ step 5 skipped, fresh outcomes unbuilt

def _looked_up(verifier, requests, now, wal, store, sink):
    """The core's steps with step 5 always run and every outcome built (``get_many`` of the
    keys, then ``put_many_if_absent`` of ``writes()``): the sequence ``run_requests`` ran
    before it skipped the lookup without hooks and handed fresh outcomes over unbuilt."""
    batch = core.VerifyBatch(verifier, now, sink=sink)
    appends = batch.admit(requests)
    if appends:
        indexes = pipeline.wal_write(wal, appends)
        batch.wal_written(indexes[0] if indexes and isinstance(indexes[0], int) else None)
    keys = batch.verify()
    if keys:
        batch.found(store.get_many(keys, now))
        writes = batch.writes()
        if writes:
            batch.recorded(store.put_many_if_absent(writes, now, verifier.limits.ttl_s))
    return batch.responses, batch.notes()


def _store_state(store):
    entries, cursor = [], None
    while True:
        page, cursor = store.scan(cursor, 100, -1e300)
        entries += [(t, p, o.to_bytes()) for t, p, o in page]
        if cursor is None:
            return entries


@st.composite
def _dup_batches(draw):
    """Batches over a small pool: a key twice in one batch, keys stored by an earlier batch
    (a replay: 200 with Idempotent-Replayed; a conflict: 409), tenants that share pcs_ids."""
    pool = _pool()
    body = st.one_of(st.sampled_from(pool), st.sampled_from(pool), request_bodies())
    tenant = st.sampled_from(["ta", "ta", "tb", "tr", None])
    batch = st.tuples(st.lists(st.tuples(body, tenant), min_size=1, max_size=10),
                      st.sampled_from([PARAMS_NOW, PARAMS_NOW + 1.25, PARAMS_NOW + 40 * 86400.0]))
    return draw(st.lists(batch, min_size=1, max_size=4))


@pytest.mark.differential("accept_batch")
@DIFF
@given(batch_list=_dup_batches(), kind=st.sampled_from(["memory", "sqlite"]))
def test_skipping_the_lookup_answers_as_the_lookup(batch_list, kind):
    """Without hooks ``run_requests`` skips step 5 (put-if-absent answers a held key as the
    lookup would) and hands the SQLite store its fresh outcomes unbuilt
    (``put_many_fresh_if_absent``): the same responses, events (in another order: see
    below), home answers and final store state as the steps with the lookup and every
    outcome built -- over duplicates
    within a batch, keys stored by earlier batches (replays and conflicts) and expiry."""
    from flk.impl.dedup import open_store

    with tempfile.TemporaryDirectory() as d:
        runs = []
        for name, drive in (("skip", None), ("lookup", _looked_up)):
            verifier = Verifier(registry(tr={"alg": "hmac", "keys": [{"secret": HMAC_A.decode()}]}), region="eu")
            store = open_store("memory") if kind == "memory" else open_store(f"sqlite:///{d}/{name}.db")
            if kind == "sqlite":
                assert hasattr(store, "put_many_fresh_if_absent")
            wal, events, out = MemoryWal(), [], []
            try:
                for requests, now in batch_list:
                    reqs = [Request(b, t) for b, t in requests]
                    if drive is None:
                        notes: list = []
                        got = core.run_requests(verifier, reqs, now, wal, store, events.append, notes=notes)
                    else:
                        got, notes = drive(verifier, reqs, now, wal, store, events.append)
                    out.append(([(r.status, r.headers, r.body) for r in got], notes))
                # the events as a multiset: a hit is answered at step 5 (before the writes' events),
                # a lost put-if-absent at step 7 (in request order among them)
                runs.append((out, sorted(json.dumps(e, sort_keys=True, default=repr) for e in events),
                             _store_state(store)))
            finally:
                store.close()
    assert runs[0] == runs[1]
    statuses = {r[0] for batch, _ in runs[0][0] for r in batch}
    assert statuses <= {200, 202, 400, 401, 409}


def test_the_skip_covers_replays_conflicts_and_in_batch_duplicates():
    """The cases the property must meet, in one fixed run: a key twice in one batch, a
    replay of a stored key, a conflict with a stored key -- on the SQLite store's fresh path."""
    from flk.impl.dedup import open_store

    pool = _pool()  # pool[4] conflicts with pool[0]
    batches = [([(pool[0], "ta"), (pool[0], "ta"), (pool[1], "ta")], PARAMS_NOW),
               ([(pool[0], "ta"), (pool[4], "ta"), (pool[2], "ta"), (pool[4], "ta")], PARAMS_NOW + 1)]
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:///{d}/s.db")
        verifier = Verifier(registry(), region="eu")
        wal = MemoryWal()
        try:
            got = [[(r.status, dict(r.headers).get("Idempotent-Replayed"))
                    for r in core.run_requests(verifier, [Request(b, t) for b, t in reqs], now, wal, store)]
                   for reqs, now in batches]
        finally:
            store.close()
    assert got == [[(200, None), (200, "true"), (200, None)], [(200, "true"), (409, None), (200, None), (409, None)]]


def core_store():
    from flk.impl.dedup import open_store

    return open_store("memory")


# ------------------------------------------------------------ planted C bugs

def _build_planted(bug: int):
    """``_fastverify.c`` compiled with ``-DFLK_PLANTED_BUG=<bug>``, a module of its own."""
    return build_variant(str(ROOT / "impl/verifier/_fastverify.c"), "_fastverify", f"FLK_PLANTED_BUG={bug}",
                         ("crypto",))


@needs_compiled
@pytest.mark.parametrize("bug, prop", [(1, accept_batch_property), (2, frame_records_property),
                                      (3, accept_scan_property), (4, accept_each_property)])
def test_planted_c_bugs_are_caught(bug, prop):
    """A stale answer in the batch loop (bug 1), a header CRC over 4 bytes after the first
    record (bug 2), a scanner that lets a repeated key through, the last one winning
    (bug 3), and a span loop that verifies every record at the first record's receive time
    (its keys and its first_seen, bug 4) make the differential properties fail; the real
    build passes them."""
    planted = _build_planted(bug)
    if planted is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler to build the planted extension")
        pytest.skip("no C compiler")
    with pytest.raises(AssertionError):
        prop(planted)()
    prop(_extension())()  # the property passes on the real build
