"""PII gate: every class with positives and negatives that must not match; modes; counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.governance import pii

POSITIVES = {
    "email": ["alice@example.com", "a.b+tag@sub.example.co.uk", "x_y%z@mail-server.org"],
    "phone": ["(212) 555-0100", "212-555-0100", "212.555.0100", "+1 212 555 0100", "+442071838750", "2125550100"],
    "ssn": ["123-45-6789", "078-05-1120", "665 12 3456", "899-99-9999"],
    "card": ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011000990139424"],
}

NEGATIVES = {
    "email": ["user@localhost", "@handle", "a@b.c", "no at sign here", "foo@bar..com", "mailto:", "x@-bad.com"],
    "phone": ["2024-01-15", "1.2.3.4", "123-456-7890", "(055) 555-0100", "v2.12.0", "555-0100", "12345", "+0123456789"],
    "ssn": ["000-12-3456", "666-12-3456", "900-12-3456", "987-65-4321", "123-00-4567", "123-45-0000", "123-45-67890",
            "123-45 6789"],
    "card": ["4111111111111112", "1234567812345678", "4111 1111 1111 111", "411111111111", "41111111111111111111",
             "4111  1111 1111 1111", "ab4111111111111111"],
}


@pytest.mark.parametrize("kind", pii.KINDS)
def test_pii_positive_cases(kind):
    for text in POSITIVES[kind]:
        found = pii.scan_text(f"see {text} now")
        assert [d.kind for d in found] == [kind], (text, found)
        d = found[0]
        assert (d.start, d.end) == (4, 4 + len(text))


@pytest.mark.parametrize("kind", pii.KINDS)
def test_pii_negative_cases(kind):
    for text in NEGATIVES[kind]:
        assert [d.kind for d in pii.scan_text(f"see {text} now") if d.kind == kind] == [], text


def test_pii_luhn():
    assert pii.luhn_ok("4111111111111111") and pii.luhn_ok("79927398713")
    assert not pii.luhn_ok("4111111111111112") and not pii.luhn_ok("79927398710")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=15, max_size=15))
def test_pii_16_digit_numbers_match_iff_luhn(prefix):
    body = "".join(map(str, prefix))
    for check in range(10):
        number = body + str(check)
        matched = [d.kind for d in pii.scan_text(number)] == ["card"]
        assert matched == pii.luhn_ok(number)
    assert sum(pii.luhn_ok(body + str(c)) for c in range(10)) == 1


def test_pii_hex_digests_are_not_cards():
    # hex strings with long decimal runs bounded by letters: no match
    assert pii.scan_text("a4111111111111111f") == []
    assert pii.scan_pcs({"merkle_root": "4111111111111111", "sig": "alice@example.com"}) == []


def _pcs(**kw):
    pcs = {"pcs_id": "00" * 32, "merkle_root": "11" * 32, "epoch": 1, "shard_id": "s1", "D_hat": 1.0,
           "coh_star": 0.5, "r": 0.5, "budget": 0.4, "sig": "AAAA", "schema": "fractal-lba-kakeya",
           "version": "1", "regime": "mixed"}
    pcs.update(kw)
    return pcs


def test_pii_scan_pcs_meta_keys_and_values_never_text():
    pcs = _pcs(meta={"owner": "bob@example.org", "card 4111111111111111": "x"})
    found = pii.scan_pcs(pcs)
    assert sorted(d.kind for d in found) == ["card", "email"]
    assert {d.field for d in found} == {"meta.owner", "meta{key}"}
    for d in found:  # a detection never carries the matched text
        assert "example" not in repr(d) and "4111" not in repr(d)


def test_pii_modes():
    counters = pii.PiiCounters()
    pcs = _pcs(meta={"contact": "call 212-555-0100 or bob@example.org"})
    assert pii.gate(pcs, "off", "t1", counters).reasons == ()
    assert counters.counts == {}
    r = pii.gate(pcs, "detect", "t1", counters)
    assert r.reasons == () and r.kinds == ("email", "phone") and r.pcs is pcs
    assert counters.get("t1", "email") == 1 and counters.get("t1", "phone") == 1
    r = pii.gate(pcs, "block", "t1", counters)
    assert r.reasons == (pii.REASON_PII,) and pii.HTTP_STATUS[r.reasons[0]] == 400
    r = pii.gate(pcs, "redact", "t1", counters)
    assert r.reasons == ()
    assert r.pcs["meta"] == {"contact": "call [REDACTED:phone] or [REDACTED:email]"}
    assert pcs["meta"]["contact"].startswith("call 212")  # the input is not mutated by gate()
    assert counters.get("t1", "email") == 3 and counters.get("t2", "email") == 0
    # PII in a signed field cannot be redacted: blocked
    r = pii.gate(_pcs(shard_id="alice@example.com"), "redact", "t1", counters)
    assert r.reasons == (pii.REASON_PII,)
    clean = _pcs(meta={"note": "all good"})
    assert pii.gate(clean, "block", "t1", counters).reasons == ()
    with pytest.raises(InvalidInput):
        pii.gate(clean, "shout", "t1", counters)


def test_pii_hook_per_tenant_mode_and_redacts_in_place():
    counters = pii.PiiCounters()
    hook = pii.make_pii_hook({"strict": "block", "soft": "redact"}, counters)
    assert hook(_pcs(meta={"m": "ssn 078-05-1120"}), "strict") == [pii.REASON_PII]
    pcs = _pcs(meta={"m": "ssn 078-05-1120"})
    assert hook(pcs, "soft") == []
    assert pcs["meta"] == {"m": "ssn [REDACTED:ssn]"}
    assert hook(_pcs(meta={"m": "ssn 078-05-1120"}), "unknown") == []  # default mode off
    assert counters.get("strict", "ssn") == 1 and counters.get("unknown", "ssn") == 0
