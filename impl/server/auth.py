"""Who may read what: the operator credential and signed tenant reads.

Why this module exists: besides submitting PCS, the server answers reads that
must not be open to anyone -- operator endpoints (``/metrics``,
``/api/shards/*``, ``/v1/crr/*``, the reconciliation review decision) and a
tenant's own authoritative outcomes (``/v1/pcs/{pcs_id}/authoritative``). The
rules (SPEC.md section 9.3) live here, in one place, as pure functions of the
request's method, path, headers, client address and the time; the app only
turns a refusal into a problem+json answer.

Operator. With ``OPERATOR_USER``/``OPERATOR_PASS`` configured, an operator
request carries them as HTTP Basic credentials (401 otherwise). Without them,
operator endpoints answer only loopback clients (403 otherwise), so a default
``flk serve`` on 127.0.0.1 stays usable and one on a public address is not
open.

Tenant reads. A tenant proves itself with the key material it signs PCS with:
``X-Flk-Date`` (Unix seconds, within ``READ_AUTH_SKEW_S`` of the server's
clock) and ``X-Flk-Signature``, the base64 HMAC-SHA256 (hmac tenants) or
Ed25519 signature (ed25519 tenants) of :func:`read_message`:
``flk-read-v1 LF METHOD LF PATH LF DATE LF TENANT``. An operator may read any
tenant's record (naming it with ``X-Tenant-Id``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.signing import b64encode

READ_SCHEME = "flk-read-v1"


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: a catalog slug (``unauthorized`` 401, ``forbidden``
    403, ``bad-request`` 400), a detail a caller can act on, and extra headers."""

    slug: str
    detail: str
    headers: dict[str, str] | None = None


def single_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> tuple[str | None, Refusal | None]:
    """The one value of header ``name`` (lower-case bytes) or a 400 refusal when it is
    repeated: one rule for ``X-Tenant-Id`` on every endpoint."""
    found = [value for key, value in headers if key == name]
    if len(found) > 1:
        return None, Refusal("bad-request", f"header {name.decode()} given {len(found)} times; send it once")
    return (found[0].decode("latin-1") if found else None), None


MAX_DATE_DIGITS = 12  # Unix seconds until the year 33658: more digits cannot be within any skew


def is_unix_seconds(value: str) -> bool:
    """True for 1..12 ASCII digits. ``str.isdigit`` alone also accepts ``²`` and other
    Unicode digits ``int`` refuses, and a 400-digit number overflows the float
    comparison with the clock: both were a 500 with a traceback."""
    return 0 < len(value) <= MAX_DATE_DIGITS and value.isascii() and value.isdigit()


def is_loopback(client: tuple[str, int] | None) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class OperatorAuth:
    """The operator credential (HTTP Basic) or, when none is configured, loopback only."""

    def __init__(self, user: str, password: str) -> None:
        self.expected = f"{user}:{password}".encode() if user else None

    def check(self, authorization: str | None, client: tuple[str, int] | None) -> Refusal | None:
        """None when the request is an operator's, else the refusal."""
        if self.expected is None:
            if is_loopback(client):
                return None
            return Refusal("forbidden", "operator endpoints answer only loopback clients while no "
                           "OPERATOR_USER/OPERATOR_PASS is configured")
        given = b""
        header = authorization or ""
        if header[:6].lower() == "basic ":
            try:
                given = base64.b64decode(header[6:].strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
        if not hmac.compare_digest(given, self.expected):
            return Refusal("unauthorized", "this endpoint needs the operator's HTTP Basic credentials",
                           {"WWW-Authenticate": 'Basic realm="flk-operator"'})
        return None


def read_message(method: str, path: str, date: str, tenant: str) -> bytes:
    """The bytes a tenant signs to read ``path``."""
    return "\n".join((READ_SCHEME, method.upper(), path, date, tenant)).encode("utf-8")


def sign_read(method: str, path: str, tenant: str, now: float, *, hmac_key: bytes | None = None,
              ed25519_private: Any = None) -> dict[str, str]:
    """The headers of a signed tenant read (a client helper; tests and the docs use it)."""
    date = str(int(now))
    message = read_message(method, path, date, tenant)
    if hmac_key is not None:
        signature = hmac.new(hmac_key, message, hashlib.sha256).digest()
    else:
        signature = ed25519_private.sign(message)
    return {"X-Tenant-Id": tenant, "X-Flk-Date": date, "X-Flk-Signature": b64encode(signature)}


def _verify(tenant: Any, message: bytes, signature: bytes, now: float) -> bool:
    keys = tenant.active_keys(now)
    if tenant.alg == "hmac":
        mac = [hmac.new(key, message, hashlib.sha256).digest() for key in keys]
        return any(hmac.compare_digest(m, signature) for m in mac)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..core.signing import ed25519_key_canonical

    for key in keys:
        if not ed25519_key_canonical(key):  # RFC 8032 section 5.1.3: not a key, verifies nothing
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def check_tenant_read(registry: Any, method: str, path: str, tenant_id: str | None, date: str | None,
                      signature: str | None, now: float, skew_s: float) -> Refusal | None:
    """None when the signed read proves ``tenant_id`` (or the registry's default tenant
    in single-tenant mode when the header is absent), else the 401 refusal."""
    challenge = {"WWW-Authenticate": f'{READ_SCHEME} headers="x-tenant-id x-flk-date x-flk-signature"'}
    if date is None or signature is None:
        return Refusal("unauthorized", "a tenant read needs X-Flk-Date and X-Flk-Signature (SPEC.md 9.3) "
                       "or the operator credential", challenge)
    if not is_unix_seconds(date) or abs(int(date) - now) > skew_s:
        return Refusal("unauthorized", f"X-Flk-Date must be Unix seconds within {skew_s:g} s of the "
                       "server's clock", challenge)
    tenant = registry.resolve(tenant_id)
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if tenant is None or not raw or not _verify(tenant, read_message(method, path, date, tenant.tenant_id),
                                                 raw, now):
        return Refusal("unauthorized", "X-Flk-Signature does not verify for this tenant, method, path and date",
                       challenge)
    return None
