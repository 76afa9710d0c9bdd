"""The abstract consistent-hash ring, as a specification.

A ring is a list of virtual-node positions, sorted, each owned by a live shard.
A key hashes to a position ``h``; its owner is the shard of the first vnode at
or after ``h`` (the successor), wrapping around to the first vnode when ``h`` is
past the last one. INV-RING-OWNER: every key maps to exactly one live shard.

``flk.formal.ring`` proves that property for the successor rule below over all
positions of bounded rings; ``flk.impl.dedup.sharded`` is to be tied to
this model by a cross-check once it exists.
"""

from __future__ import annotations

from collections.abc import Sequence

SPACE = 2**32  # positions are u32


def build(vnodes: Sequence[tuple[int, str]], live: Sequence[str]) -> list[tuple[int, str]]:
    """The ring of the live shards' vnodes, sorted by (position, shard) -- ties included."""
    alive = set(live)
    return sorted((p % SPACE, s) for p, s in vnodes if s in alive)


def successor_index(positions: Sequence[int], h: int) -> int:
    """Index of the first position >= h, wrapping to 0 (positions sorted, non-empty)."""
    if not positions:
        raise ValueError("empty ring")
    lo, hi = 0, len(positions)
    while lo < hi:
        mid = (lo + hi) // 2
        if positions[mid] < h:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < len(positions) else 0


def owner(ring: Sequence[tuple[int, str]], h: int) -> str:
    return ring[successor_index([p for p, _ in ring], h % SPACE)][1]


def inv_ring_owner(ring: Sequence[tuple[int, str]], live: Sequence[str], h: int) -> bool:
    """INV-RING-OWNER at one position: exactly one index selected, its shard is live."""
    positions = [p for p, _ in ring]
    h %= SPACE
    selected = [
        i
        for i in range(len(positions))
        if (positions[i] >= h and (i == 0 or positions[i - 1] < h)) or (i == 0 and h > positions[-1])
    ]
    return len(selected) == 1 and ring[selected[0]][1] in set(live) and selected[0] == successor_index(positions, h)
