"""The inbox record codec: one request as the inbox WAL stores it (SPEC.md section 12.6).

Why this module exists: the verifier appends every request to the inbox WAL
before it answers (INV-WAL-FIRST) as an :class:`InboxRecord`; start-up replay,
cross-region replay, the simulator, ``flk policy diff`` and the benchmarks read
the same records back. The codec is pure (no I/O) and total: decoding any bytes
either gives a record or raises :class:`flk.impl.core.errors.InvalidInput`.

A record read from a shipped segment also carries its WAL index and the home
region's answer to it (:func:`with_home`; the answer is a
:class:`flk.impl.storage.walformat.AnswerNote` from the segment's manifest).
"""

from __future__ import annotations

import math
import struct
from dataclasses import field

from ..core.errors import InvalidInput
from ..core.records import frozen_record
from .walformat import AnswerNote

__all__ = [
    "InboxRecord",
    "encode_inbox_record",
    "encode_inbox_records",
    "decode_inbox_record",
    "decode_inbox_span",
    "with_home",
]

_INBOX_VERSION = 1
_INBOX_HEAD = struct.Struct("<BHHd")


@frozen_record
class InboxRecord:
    """One request as received: tenant, receive time (seconds since the epoch,
    passed in), region, and the request body verbatim.

    ``home`` and ``index`` are not part of the record's bytes: a reader of a shipped
    segment (:func:`flk.impl.replication.stream.verify_segment`) sets ``index`` (its WAL
    index) and ``home`` (the :class:`AnswerNote` its home region's manifest of the
    segment carries for it, or None)."""

    tenant: str
    received_at: float
    region: str
    body: bytes
    home: AnswerNote | None = field(default=None, compare=False, repr=False)
    index: int = field(default=-1, compare=False, repr=False)


def encode_inbox_record(rec: InboxRecord) -> bytes:
    """``u8 version=1 | u16 len(tenant) | u16 len(region) | f64 received_at |
    tenant UTF-8 | region UTF-8 | body`` (little-endian; body to the end)."""
    if not isinstance(rec.tenant, str) or not isinstance(rec.region, str):
        raise InvalidInput("inbox_record", "tenant and region must be strings")
    if not isinstance(rec.body, (bytes, bytearray, memoryview)):
        raise InvalidInput("inbox_record.body", "body must be bytes")
    try:
        t, r = rec.tenant.encode("utf-8"), rec.region.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("inbox_record", "tenant/region are not valid Unicode") from None
    if len(t) > 0xFFFF or len(r) > 0xFFFF:
        raise InvalidInput("inbox_record", "tenant/region longer than 65535 bytes")
    ts = rec.received_at
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidInput("inbox_record.received_at", "must be a finite number")
    return _INBOX_HEAD.pack(_INBOX_VERSION, len(t), len(r), float(ts)) + t + r + bytes(rec.body)


def encode_inbox_records(records) -> list[bytes]:
    """:func:`encode_inbox_record` of each of ``records`` (objects with ``tenant``,
    ``received_at``, ``region``, ``body``), the same bytes; records with one tenant,
    receive time and region (a batch) share one encoded head."""
    out = []
    heads: dict[tuple[str, float, str], bytes] = {}
    for rec in records:
        tenant, received_at, region, body = rec.tenant, rec.received_at, rec.region, rec.body
        # exact types only, and no zero: 0.0 == -0.0 and 1 == 1.0 == True would share a key
        if type(body) is bytes and type(received_at) is float and received_at != 0.0 \
                and type(tenant) is str and type(region) is str:
            key = (tenant, received_at, region)
            head = heads.get(key)
            if head is None:
                head = heads[key] = encode_inbox_record(InboxRecord(tenant, received_at, region, b""))
            out.append(head + body)
        else:
            out.append(encode_inbox_record(InboxRecord(tenant, received_at, region, body)))
    return out


def decode_inbox_record(payload: bytes, home: AnswerNote | None = None, index: int = -1) -> InboxRecord:
    """The record ``payload`` encodes (:func:`encode_inbox_record`); ``home`` and ``index``
    as :func:`with_home` sets them (a record read from a shipped segment)."""
    head = _INBOX_HEAD.size
    if len(payload) < head:
        raise InvalidInput("inbox_record", "too short")
    version, lt, lr, ts = _INBOX_HEAD.unpack_from(payload, 0)
    if version != _INBOX_VERSION:
        raise InvalidInput("inbox_record", f"unknown version {version}")
    if len(payload) < head + lt + lr:
        raise InvalidInput("inbox_record", "truncated tenant/region")
    if not math.isfinite(ts):
        raise InvalidInput("inbox_record.received_at", "not finite")
    try:
        tenant = payload[head : head + lt].decode("utf-8")
        region = payload[head + lt : head + lt + lr].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("inbox_record", "tenant/region not UTF-8") from None
    return InboxRecord(tenant, ts, region, bytes(payload[head + lt + lr :]), home, index)


def decode_inbox_span(data: bytes, off: int, ln: int, names: dict, home: AnswerNote | None,
                      index: int) -> InboxRecord:
    """:func:`decode_inbox_record` of ``data[off:off + ln]`` with ``home`` and ``index`` (a
    record of a segment being read); ``names`` (kept by the caller for one segment) holds the
    tenant/region bytes already decoded, so a batch's records decode their head strings once.
    The same record, or the same :class:`InvalidInput`."""
    size = _INBOX_HEAD.size
    if type(data) is not bytes or ln < size:
        return decode_inbox_record(bytes(data[off: off + ln]), home, index)
    version, lt, lr, ts = _INBOX_HEAD.unpack_from(data, off)
    start = off + size
    if version != _INBOX_VERSION or ln < size + lt + lr or not math.isfinite(ts):
        return decode_inbox_record(data[off: off + ln], home, index)  # the same error
    raw = data[start: start + lt + lr]
    got = names.get((lt, raw))
    if got is None:
        try:
            got = (raw[:lt].decode("utf-8"), raw[lt:].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput("inbox_record", "tenant/region not UTF-8") from None
        names[(lt, bytes(raw))] = got
    return InboxRecord(got[0], ts, got[1], bytes(data[start + lt + lr: off + ln]), home, index)


def with_home(rec: InboxRecord, note: AnswerNote | None, index: int) -> InboxRecord:
    """``rec`` as read from a shipped segment: its WAL ``index`` and its home answer."""
    return InboxRecord(rec.tenant, rec.received_at, rec.region, rec.body, note, index)
