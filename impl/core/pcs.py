"""pcs_id and PCS field rules (SPEC.md section 5).

``pcs_id = hex(SHA-256(merkle_root + "|" + decimal(epoch) + "|" + shard_id))``.
``shard_id`` matches ``^[A-Za-z0-9._:-]{1,128}$`` -- no ``|``, so the preimage
is unambiguous -- and ``merkle_root`` is 64 lowercase hex characters.
"""

from __future__ import annotations

import hashlib
import re

from .canonical import EPOCH_MAX
from .errors import InvalidInput

SHARD_ID_MAX = 128  # characters (the compiled wire check copies it: _fastverify_constants.h)
SHARD_ID_RE = re.compile(rf"^[A-Za-z0-9._:-]{{1,{SHARD_ID_MAX}}}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


def check_shard_id(shard_id: object) -> str:
    if not isinstance(shard_id, str):
        raise InvalidInput("shard_id", f"must be a string, got {type(shard_id).__name__}")
    if not SHARD_ID_RE.fullmatch(shard_id):
        raise InvalidInput("shard_id", "must match ^[A-Za-z0-9._:-]{1,128}$ (no '|')")
    return shard_id


def check_hex64(value: object, field: str) -> str:
    if not isinstance(value, str) or not HEX64_RE.fullmatch(value):
        raise InvalidInput(field, "must be 64 lowercase hexadecimal characters")
    return value


def check_epoch(epoch: object) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise InvalidInput("epoch", f"must be an integer, got {type(epoch).__name__}")
    if not 0 <= epoch <= EPOCH_MAX:
        raise InvalidInput("epoch", f"must be in [0, 2^53-1], got {epoch}")
    return epoch


def pcs_id(merkle_root: str, epoch: int, shard_id: str) -> str:
    check_hex64(merkle_root, "merkle_root")
    check_epoch(epoch)
    check_shard_id(shard_id)
    return pcs_id_of_checked(merkle_root, epoch, shard_id)


def pcs_id_of_checked(merkle_root: str, epoch: int, shard_id: str) -> str:
    """The hash of :func:`pcs_id` alone, for inputs already checked -- by the
    ``check_*`` functions above or by a stricter check such as the verifier's
    wire validation, which runs before it on every request."""
    return hashlib.sha256(f"{merkle_root}|{epoch}|{shard_id}".encode()).hexdigest()
