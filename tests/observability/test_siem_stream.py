"""The sans-I/O audit stream (flk.impl.governance.siem): framing, spool, ordering, re-sends.

No network here: a fake driver takes the batches (test_siem_rsyslog.py runs the real one
against rsyslog)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.governance.siem import KINDS, RESERVED, SiemStream, Spool, pipeline_sink, rfc5424

FIELDS = st.dictionaries(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
                         .filter(lambda k: k not in ("key", "sig", "body", "payload", "secret", "password", *RESERVED)),
                         st.one_of(st.text(max_size=40), st.integers(-10**9, 10**9), st.booleans()), max_size=5)


def unframe(data: bytes) -> list[bytes]:
    """RFC 5425 octet counting, parsed back."""
    out = []
    while data:
        n, _, rest = data.partition(b" ")
        out.append(rest[: int(n)])
        data = rest[int(n):]
    return out


def payload(message: bytes) -> dict:
    m = re.match(rb"^<(\d+)>1 \S+ \S+ flk - (\w+) \[flk@32473 id=\"([^\"]+)\" seq=\"(\d+)\"\] (.*)$", message, re.S)
    assert m, message[:200]
    doc = json.loads(m.group(5))
    assert doc["kind"] == m.group(2).decode() and doc["id"] == m.group(3).decode() and doc["seq"] == int(m.group(4))
    return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(st.sampled_from(KINDS), FIELDS), min_size=1, max_size=30),
       batch=st.integers(1, 7), acked_batches=st.integers(0, 5))
def test_frames_carry_every_event_in_order_and_a_restart_resends_from_the_watermark(tmp_path_factory, events,
                                                                                    batch, acked_batches):
    d = str(tmp_path_factory.mktemp("spool"))
    s = SiemStream(Spool(d, file_events=4), "eu", "host-1", batch_size=batch, flush_interval_s=0.0, confirm_s=0.0)
    for i, (kind, fields) in enumerate(events):
        s.offer(kind, fields, 1000.0 + i)
    seen = []
    for _ in range(acked_batches):
        if not s.due(2000.0):
            break
        last, data = s.batch()
        seen += [payload(m) for m in unframe(data)]
        s.sent(last, 2000.0)
        s.confirm(2000.0)
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    for e, (kind, fields) in zip(seen, events, strict=False):
        assert e["kind"] == kind and {k: e[k] for k in fields} == fields
    s.spool.close()
    again = SiemStream(Spool(d, file_events=4), "eu", "host-1", batch_size=1000, flush_interval_s=0.0)
    rest = [payload(m) for m in unframe(again.batch()[1])] if again.due(3000.0) else []
    assert [e["seq"] for e in rest] == list(range(len(seen) + 1, len(events) + 1))  # nothing lost, nothing twice
    assert again.spool.last == len(events)


def test_a_broken_connection_resends_everything_after_the_watermark_with_the_same_ids(tmp_path) -> None:
    s = SiemStream(Spool(str(tmp_path)), "eu", "h", batch_size=2, flush_interval_s=0.0, confirm_s=0.2)
    for i in range(5):
        s.offer("anchor", {"n": i}, 10.0)
    last, first = s.batch()
    s.sent(last, 10.0)
    assert s.confirm(10.1) == 0  # not confirmed yet
    s.broken(10.1)
    assert not s.due(10.15) and s.due(10.1 + s.backoff.delay(1))  # backs off
    assert s.batch()[1] == first  # the same messages again (same ids)
    s.sent(2, 11.0)
    assert s.confirm(11.3) == 2


def test_payloads_and_secrets_are_refused(tmp_path) -> None:
    s = SiemStream(Spool(str(tmp_path)), "eu", "h")
    for bad in ("body", "signature", "hmac_key", "password", "seq", "id"):
        with pytest.raises(ValueError):
            s.offer("operator_action", {bad: "x"}, 1.0)
    with pytest.raises(ValueError):
        s.offer("not-a-kind", {}, 1.0)
    with pytest.raises(ValueError):
        SiemStream(Spool(str(tmp_path / "b")), "has space", "h")
    assert s.spool.last == 0  # nothing refused reached the spool
    assert rfc5424({"kind": "anchor", "ts": 0.0, "id": "eu:1", "seq": 1}, "h").startswith(b"<110>1 1970-01-01T")


def test_the_pipeline_sink_streams_outcomes_and_auth_failures_without_payloads() -> None:
    got = []
    sink = pipeline_sink(lambda kind, fields: got.append((kind, fields)), region="eu")
    sink({"kind": "accepted", "tenant": "t1", "pcs_id": "p", "payload_digest": "ab" * 32, "status": 200})
    sink({"kind": "signature_error", "tenant_label": "t2", "status": 401})
    sink({"kind": "ingest", "tenant_label": "t1"})
    assert [k for k, _ in got] == ["worm_append", "auth_failure"]
    assert got[0][1] == {"tenant": "t1", "pcs_id": "p", "payload_digest": "ab" * 32, "status": 200,
                         "outcome": "accepted", "region": "eu"}
