"""The compiled batch loop answers exactly what the pure reference answers.

The verification core (``flk.impl.verifier.core.VerifyBatch``) runs steps 3, 4 and 6
of a batch's common case with one compiled call per tenant (``accept_batch``: the
``accept_v1`` of every body) and frames the batch's inbox WAL records with one more
(``frame_records``: ``walformat.encode_frame`` of every payload). These tests compare:

* ``accept_batch`` with ``accept_v1`` of each body, over arbitrary bodies (valid,
  mutated, re-signed, Ed25519, arbitrary JSON, arbitrary bytes) in one list;
* ``frame_records`` (and :func:`flk.impl.verifier.pipeline.frame_inbox`) with the
  reference framing, over arbitrary heads, bodies and inbox records;
* the whole batch path (``run_requests`` on a real ``SegmentedLog``) with the
  compiled functions and on the pure reference alone, over batches where one
  tenant sends many requests, and over every HMAC signing and verification test
  vector (spec/vectors) submitted in one batch per key set: the same responses,
  events, latency labels, WAL bytes and dedup state.

A differential test is only worth something if it catches a wrong compiled loop:
``test_planted_c_bugs_are_caught`` builds ``_fastverify.c`` with a planted bug (a
stale answer reused by the batch loop; a header CRC over too few bytes) and checks
that the property tests above fail on it and pass on the real build.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sysconfig
import tempfile
from base64 import b64decode, b64encode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.conformance.vectors import decode_input, load_cases, vectors_dir
from flk.impl.agent import factory
from flk.impl.core import accel
from flk.impl.storage.inbox import encode_inbox_records
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import encode_frame
from flk.impl.verifier import core, pipeline
from flk.impl.verifier.pipeline import Request, Verifier, WalAppend
from flk.impl.verifier.tenants import from_mapping

from .pcsgen import HMAC_A, HMAC_B, registry
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


BODY_LISTS = st.lists(st.one_of(st.sampled_from(_pool()), request_bodies()), min_size=0, max_size=12)
KEY_SETS = st.sampled_from([[HMAC_A], [HMAC_B], [HMAC_B, HMAC_A]])


def accept_batch_property(fv):
    """The property: ``fv.accept_batch`` answers ``fv.accept_v1`` of each body, in order."""
    params, parts = _accept_args()

    @DIFF
    @given(bodies=BODY_LISTS, keys=KEY_SETS)
    def prop(bodies, keys):
        assert fv.accept_batch(bodies, keys, params, parts) == [fv.accept_v1(b, keys, params, parts) for b in bodies]

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
                      st.sampled_from([None, None, None, None, "get", "put"]))
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


def core_store():
    from flk.impl.dedup import open_store

    return open_store("memory")


# ------------------------------------------------------------ planted C bugs

def _build_planted(bug: int, out_dir: pathlib.Path):
    """``_fastverify.c`` compiled with ``-DFLK_PLANTED_BUG=<bug>``, loaded as a module of its own."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        return None
    target = out_dir / f"_fastverify{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [*cc, "-shared", "-fPIC", "-O1", "-ffp-contract=off", f"-DFLK_PLANTED_BUG={bug}",
           f"-I{sysconfig.get_paths()['include']}", str(ROOT / "impl/verifier/_fastverify.c"), "-o", str(target),
           "-lcrypto"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    loader = importlib.machinery.ExtensionFileLoader("_fastverify", str(target))
    spec = importlib.util.spec_from_file_location("_fastverify", str(target), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@needs_compiled
@pytest.mark.parametrize("bug, prop", [(1, accept_batch_property), (2, frame_records_property)])
def test_planted_c_bugs_are_caught(bug, prop, tmp_path):
    """A stale answer in the batch loop (bug 1) and a header CRC over 4 bytes after the first
    record (bug 2) make the differential properties fail; the real build passes them."""
    planted = _build_planted(bug, tmp_path)
    if planted is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler to build the planted extension")
        pytest.skip("no C compiler")
    with pytest.raises(AssertionError):
        prop(planted)()
    prop(_extension())()  # the property passes on the real build
