"""Merkle roots of a raw stream (SPEC.md section 6).

v1 is RFC 6962 hashing: leaf = SHA-256(0x00 || data), node =
SHA-256(0x01 || left || right) over raw digests; for n > 1 leaves the left
subtree holds the largest power of two smaller than n; the empty tree is
SHA-256 of the empty string. A raw stream is cut into fixed chunks of
:data:`CHUNK_SIZE` bytes (the last may be shorter; an empty stream has no
leaves).

``legacy-0.1`` is the seed agent's tree: leaf = hex SHA-256 of the chunk,
parent = SHA-256 of the ASCII concatenation of the two child hex digests, an
odd node paired with itself; empty tree = SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .canonical import check_profile
from .errors import InvalidInput

CHUNK_SIZE = 4096


def chunk_stream(raw: bytes, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidInput("raw", f"must be bytes, got {type(raw).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidInput("chunk_size", "must be an integer >= 1")
    raw = bytes(raw)
    return [raw[i : i + chunk_size] for i in range(0, len(raw), chunk_size)]


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _rfc6962(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return _node(_rfc6962(leaves[:k]), _rfc6962(leaves[k:]))


def _legacy(chunks: list[bytes]) -> str:
    level = [hashlib.sha256(c).hexdigest() for c in chunks]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [
            hashlib.sha256((level[i] + level[i + 1]).encode("ascii")).hexdigest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


def merkle_root(chunks: Sequence[bytes], profile: str = "v1") -> str:
    """Hex Merkle root of ``chunks`` under ``profile``."""
    check_profile(profile)
    if isinstance(chunks, (bytes, bytearray, memoryview, str)) or not isinstance(chunks, Sequence):
        raise InvalidInput("chunks", "must be a sequence of byte strings")
    items = []
    for i, c in enumerate(chunks):
        if not isinstance(c, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"chunks[{i}]", f"must be bytes, got {type(c).__name__}")
        items.append(bytes(c))
    if not items:
        return hashlib.sha256(b"").hexdigest()
    if profile == "legacy-0.1":
        return _legacy(items)
    return _rfc6962([_leaf(c) for c in items]).hex()


def stream_root(raw: bytes, profile: str = "v1", chunk_size: int = CHUNK_SIZE) -> str:
    """Merkle root of a raw stream cut into fixed chunks."""
    return merkle_root(chunk_stream(raw, chunk_size), profile)
