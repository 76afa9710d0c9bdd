"""RFC 3161 timestamping: the optional external anchor of the audit log.

Why this module exists: an anchor in the operator's own attestation store proves
nothing to someone who does not trust the operator; a timestamp token from a
third-party Time-Stamping Authority over the anchor's batch root does. This is
the TSA client, separate from the hash chain (:mod:`flk.impl.governance.auditchain`)
and the log writer (:mod:`flk.impl.governance.audit`), which only takes a
``tsa(root_hex) -> token DER`` callable.

Sans-I/O: :func:`build_timestamp_request` builds the request bytes (a minimal DER
encoder), a driver POSTs them (Content-Type ``application/timestamp-query``;
:func:`http_tsa` is that driver), :func:`parse_timestamp_response` parses the
reply bytes. The token's CMS signature is *not* verified here (that needs the
TSA's certificate chain); the parser checks status, content types, the message
imprint and the nonce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import InvalidInput

OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
PKI_STATUS = {0: "granted", 1: "grantedWithMods", 2: "rejection", 3: "waiting", 4: "revocationWarning", 5: "revocationNotification"}


class TimestampError(ValueError):
    """A timestamp response that is malformed, refused or does not match the request."""


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def der_int(v: int) -> bytes:
    if v < 0:
        raise InvalidInput("der_int", "only non-negative integers")
    b = v.to_bytes(v.bit_length() // 8 + 1, "big")  # leading 0x00 keeps the sign bit clear
    return der_tlv(0x02, b)


def der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return der_tlv(0x06, bytes(out))


def der_seq(*items: bytes) -> bytes:
    return der_tlv(0x30, b"".join(items))


def build_timestamp_request(digest: bytes, nonce: int | None = None, cert_req: bool = True, policy: str | None = None) -> bytes:
    """DER ``TimeStampReq`` (RFC 3161 section 2.4.1) over a SHA-256 ``digest``.

    ``version 1, messageImprint {sha256 with NULL parameters, digest},
    reqPolicy?, nonce?, certReq`` (certReq is omitted when FALSE, the DER default).
    """
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        raise InvalidInput("digest", "must be a 32-byte SHA-256 digest")
    items = [der_int(1), der_seq(der_seq(der_oid(OID_SHA256), b"\x05\x00"), der_tlv(0x04, bytes(digest)))]
    if policy is not None:
        items.append(der_oid(policy))
    if nonce is not None:
        items.append(der_int(nonce))
    if cert_req:
        items.append(b"\x01\x01\xff")
    return der_seq(*items)


def der_read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, next position) of the TLV at ``pos``; strict definite-length DER."""
    if pos + 2 > len(data):
        raise TimestampError("truncated DER")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise TimestampError("multi-byte tags are not used in RFC 3161")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or pos + k > len(data):
            raise TimestampError("bad DER length")
        length = int.from_bytes(data[pos : pos + k], "big")
        if length < 0x80 or data[pos] == 0:
            raise TimestampError("non-minimal DER length")
        pos += k
    end = pos + length
    if end > len(data):
        raise TimestampError("truncated DER")
    return tag, data[pos:end], end


def der_children(content: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(content):
        tag, body, pos = der_read(content, pos)
        out.append((tag, body))
    return out


def _oid_text(body: bytes) -> str:
    parts = [body[0] // 40, body[0] % 40] if body[0] < 80 else [2, body[0] - 80]
    v = 0
    for b in body[1:]:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(v)
            v = 0
    return ".".join(map(str, parts))


def _expect(item: tuple[int, bytes], tag: int, what: str) -> bytes:
    if item[0] != tag:
        raise TimestampError(f"{what}: expected tag 0x{tag:02x}, got 0x{item[0]:02x}")
    return item[1]


@dataclass(frozen=True)
class TimestampToken:
    status: str
    gen_time: str  # GeneralizedTime text, e.g. 20260101000000Z
    serial: int
    policy: str
    nonce: int | None
    token_der: bytes


def parse_timestamp_response(data: bytes, digest: bytes, nonce: int | None = None) -> TimestampToken:
    """Parse a DER ``TimeStampResp``; check status, imprint (SHA-256 of ``digest``) and nonce."""
    try:
        tag, body, end = der_read(data)
        if tag != 0x30 or end != len(data):
            raise TimestampError("TimeStampResp is not one SEQUENCE")
        parts = der_children(body)
        if not parts:
            raise TimestampError("empty TimeStampResp")
        status_info = der_children(_expect(parts[0], 0x30, "PKIStatusInfo"))
        code = int.from_bytes(_expect(status_info[0], 0x02, "PKIStatus"), "big")
        status = PKI_STATUS.get(code, f"unknown({code})")
        if code not in (0, 1):
            raise TimestampError(f"TSA refused the request: {status}")
        if len(parts) < 2:
            raise TimestampError("granted but no timeStampToken")
        token_der = der_tlv(0x30, _expect(parts[1], 0x30, "timeStampToken"))
        content_info = der_children(parts[1][1])
        if _oid_text(_expect(content_info[0], 0x06, "contentType")) != OID_SIGNED_DATA:
            raise TimestampError("timeStampToken is not CMS SignedData")
        signed_data = der_children(_expect(der_children(_expect(content_info[1], 0xA0, "content"))[0], 0x30, "SignedData"))
        encap = der_children(_expect(signed_data[2], 0x30, "encapContentInfo"))
        if _oid_text(_expect(encap[0], 0x06, "eContentType")) != OID_TST_INFO:
            raise TimestampError("eContentType is not id-ct-TSTInfo")
        tst_der = _expect(der_children(_expect(encap[1], 0xA0, "eContent"))[0], 0x04, "eContent")
        tst = der_children(_expect(der_read(tst_der)[:2], 0x30, "TSTInfo"))
        policy = _oid_text(_expect(tst[1], 0x06, "policy"))
        imprint = der_children(_expect(tst[2], 0x30, "messageImprint"))
        alg = der_children(_expect(imprint[0], 0x30, "hashAlgorithm"))
        if _oid_text(_expect(alg[0], 0x06, "algorithm")) != OID_SHA256:
            raise TimestampError("messageImprint is not SHA-256")
        if _expect(imprint[1], 0x04, "hashedMessage") != bytes(digest):
            raise TimestampError("messageImprint does not match the anchored root")
        serial = int.from_bytes(_expect(tst[3], 0x02, "serialNumber"), "big")
        gen_time = _expect(tst[4], 0x18, "genTime").decode("ascii")
        got_nonce = None
        for t, b in tst[5:]:
            if t == 0x02:
                got_nonce = int.from_bytes(b, "big")
        if nonce is not None and got_nonce != nonce:
            raise TimestampError("nonce does not match the request")
        return TimestampToken(status, gen_time, serial, policy, got_nonce, token_der)
    except (IndexError, UnicodeDecodeError) as exc:
        raise TimestampError(f"malformed TimeStampResp: {exc}") from None


def http_tsa(url: str, timeout: float = 10.0, nonce: int | None = None) -> Callable[[str], bytes]:
    """A driver for :meth:`AuditLog.anchor`: POST the request for a hex root to ``url``
    and return the checked token DER. (Needs network; not exercised by the test suite.)"""

    def call(root_hex: str) -> bytes:
        import httpx

        digest = bytes.fromhex(root_hex)
        req = build_timestamp_request(digest, nonce=nonce)
        resp = httpx.post(url, content=req, headers={"Content-Type": "application/timestamp-query"}, timeout=timeout)
        resp.raise_for_status()
        return parse_timestamp_response(resp.content, digest, nonce).token_der

    return call
