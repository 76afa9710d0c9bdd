"""PII gates: detect, block or redact personal data in a PCS's string fields.

Why this module exists: a PCS is a summary of an event stream, and nothing in
it needs personal data; agents that leak some (an e-mail address as a shard
name, a card number in ``meta``) must be caught before the PCS reaches the
dedup store, the audit log or the metrics. The gate is a pure function of the
PCS and the tenant's mode; its only state is an explicit :class:`PiiCounters`
object owned by the caller. Matched text is never returned, stored or logged
-- a detection carries the class and the position only.

Classes (see spec/GOVERNANCE.md for the exact rules):

* ``email`` -- ``local@domain.tld`` with a dotted domain and an alphabetic TLD
  of 2-63 letters;
* ``phone`` -- NANP numbers (``(212) 555-0100``, ``212-555-0100``,
  ``+1 212 555 0100``, area code and exchange starting 2-9) and compact E.164
  (``+`` then 8-15 digits, first digit 1-9);
* ``ssn`` -- US SSNs written ``AAA-GG-SSSS`` or ``AAA GG SSSS``; area 000, 666
  and 900-999, group 00 and serial 0000 are not issued and do not match;
* ``card`` -- 13-19 digits, optionally grouped by single spaces or dashes,
  that pass the Luhn check.

Modes (per tenant): ``off`` (no scan), ``detect`` (count, accept), ``block``
(count, reject with reason ``pii_detected`` -> HTTP 400), ``redact`` (count,
replace matches in ``meta`` values by ``[REDACTED:<class>]``; PII in a
*signed* field cannot be redacted without breaking the signature, so it is
blocked).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from ..core.canonical import SIGNED_FIELDS
from ..core.errors import InvalidInput

KINDS = ("card", "ssn", "email", "phone")  # also the priority order for overlapping matches
MODES = ("off", "detect", "block", "redact")
REASON_PII = "pii_detected"
HTTP_STATUS = {REASON_PII: 400}

# Fields whose values are hex digests, signatures or protocol constants: never scanned.
EXEMPT_FIELDS = frozenset({"sig", "merkle_root", "pcs_id", "vrf_proof", "schema", "version", "sig_alg", "regime"})

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_PHONE_NANP = re.compile(
    r"(?<![\w+])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]?\d{4}(?![\w-])"
)
_PHONE_E164 = re.compile(r"(?<![\w+])\+[1-9]\d{7,14}(?![\w-])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _ssn_ok(m: re.Match) -> bool:
    area, group, serial = int(m.group(1)), int(m.group(3)), int(m.group(4))
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def _card_ok(m: re.Match) -> bool:
    text = m.group(0)
    if "  " in text or "--" in text:
        return False
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


@dataclass(frozen=True)
class Detection:
    """One match: its class and where it is. Never the matched text."""

    kind: str
    field: str
    start: int
    end: int


def _candidates(text: str) -> Iterator[tuple[str, int, int]]:
    for m in _CARD.finditer(text):
        if _card_ok(m):
            yield "card", m.start(), m.end()
    for m in _SSN.finditer(text):
        if _ssn_ok(m):
            yield "ssn", m.start(), m.end()
    for m in _EMAIL.finditer(text):
        yield "email", m.start(), m.end()
    for rx in (_PHONE_NANP, _PHONE_E164):
        for m in rx.finditer(text):
            yield "phone", m.start(), m.end()


def scan_text(text: str, field_name: str = "value") -> list[Detection]:
    """Non-overlapping detections in ``text``, earlier classes of :data:`KINDS` winning."""
    if not isinstance(text, str):
        raise InvalidInput(field_name, f"must be a string, got {type(text).__name__}")
    taken: list[tuple[int, int]] = []
    out: list[Detection] = []
    for kind, start, end in _candidates(text):
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        out.append(Detection(kind, field_name, start, end))
    out.sort(key=lambda d: (d.start, d.end))
    return out


def _walk(value: object, path: str) -> Iterator[tuple[str, str]]:
    """(path, string) for every string in a JSON value, keys included (sorted, deterministic)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k in sorted(value, key=str):
            if isinstance(k, str):
                yield f"{path}{{key}}", k
            yield from _walk(value[k], f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def scan_pcs(pcs: Mapping) -> list[Detection]:
    """Detections in every string field of a PCS (``meta`` keys and values included)."""
    if not isinstance(pcs, Mapping):
        raise InvalidInput("pcs", "must be an object")
    out: list[Detection] = []
    for key in sorted(pcs, key=str):
        if key in EXEMPT_FIELDS:
            continue
        for path, text in _walk(pcs[key], str(key)):
            out.extend(scan_text(text, path))
    return out


def redact_text(text: str) -> str:
    """``text`` with every detection replaced by ``[REDACTED:<class>]``."""
    pieces, last = [], 0
    for d in scan_text(text):
        pieces.append(text[last : d.start])
        pieces.append(f"[REDACTED:{d.kind}]")
        last = d.end
    pieces.append(text[last:])
    return "".join(pieces)


@dataclass
class PiiCounters:
    """Detections counted per (tenant, class) -- the only state of the gate, held by the caller."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, tenant: str, detections: list[Detection]) -> None:
        for d in detections:
            key = (tenant, d.kind)
            self.counts[key] = self.counts.get(key, 0) + 1

    def get(self, tenant: str, kind: str) -> int:
        return self.counts.get((tenant, kind), 0)


@dataclass(frozen=True)
class GateResult:
    reasons: tuple[str, ...]
    kinds: tuple[str, ...]  # classes found, sorted, no duplicates (safe to log)
    pcs: Mapping  # the PCS to continue with (redacted copy in redact mode)


def gate(pcs: Mapping, mode: str, tenant: str = "default", counters: PiiCounters | None = None) -> GateResult:
    """Apply the tenant's PII mode to ``pcs``; see the module docstring."""
    if mode not in MODES:
        raise InvalidInput("pii_mode", f"unknown mode {mode!r}; expected one of {MODES}")
    if mode == "off":
        return GateResult((), (), pcs)
    found = scan_pcs(pcs)
    if counters is not None:
        counters.add(tenant, found)
    kinds = tuple(sorted({d.kind for d in found}))
    if not found or mode == "detect":
        return GateResult((), kinds, pcs)
    if mode == "block":
        return GateResult((REASON_PII,), kinds, pcs)
    # redact: only unsigned string data can change; PII in the signed subset blocks
    if any(d.field.split(".")[0].split("{")[0] in SIGNED_FIELDS for d in found):
        return GateResult((REASON_PII,), kinds, pcs)
    out = dict(pcs)
    for key in sorted({d.field.split(".")[0].split("{")[0].split("[")[0] for d in found}, key=str):
        out[key] = _redact_value(pcs[key])
    return GateResult((), kinds, out)


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {(redact_text(k) if isinstance(k, str) else k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


def make_pii_hook(
    mode_for: Mapping[str, str] | Callable[[str], str], counters: PiiCounters, default_mode: str = "off"
) -> Callable[[dict, str], list[str]]:
    """A pipeline hook ``(pcs, tenant) -> [reason]``.

    In redact mode it replaces the PCS's unsigned fields in place (the hook
    contract hands it a ``dict``), so what is stored and audited is redacted.
    """

    def lookup(tenant: str) -> str:
        if callable(mode_for):
            return mode_for(tenant) or default_mode
        return mode_for.get(tenant, default_mode)

    def hook(pcs: dict, tenant: str) -> list[str]:
        result = gate(pcs, lookup(tenant), tenant, counters)
        if result.pcs is not pcs and isinstance(pcs, dict):
            pcs.update(result.pcs)
        return list(result.reasons)

    hook.__name__ = "pii_hook"
    return hook
