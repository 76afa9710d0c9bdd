"""The reference authoritative-outcome merge (SPEC section 11).

Why this module exists: during a partition two regions may store different
payloads under one ``(tenant, pcs_id)``. Each region keeps its own first write
(INV-FWW) and, *beside* it, computes the **authoritative outcome** with this
merge. Because the merge is the minimum of a total order it is a
join-semilattice operation -- commutative, associative, idempotent -- so every
region that has seen the same set of outcomes, in any order and with any
number of re-deliveries, holds the same authoritative outcome
(INV-CONVERGENCE). ``flk.formal.merge`` proves those three laws with Z3 and
cross-checks this very function against its Z3 encoding.

The rule: the earliest ``(first_seen, region, payload_digest)`` wins. Two
outcomes equal on that triple but different elsewhere cannot arise from the
protocol (one region stores one outcome per key); the remaining fields are
compared after the triple only so that the order is total and the laws hold
unconditionally.

The multi-region implementation (``flk.impl.replication.reconcile``) imports
:func:`merge` or is proved equal to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What a region stores for one (tenant, pcs_id): the abstract StoredOutcome."""

    first_seen: float
    region: str
    payload_digest: str
    status: int = 200

    def order_key(self) -> tuple:
        return (self.first_seen, self.region, self.payload_digest, self.status)


def merge(a: Outcome | None, b: Outcome | None) -> Outcome | None:
    """The authoritative one of two outcomes for the same key (``None`` = not seen)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.order_key() <= b.order_key() else b


def merge_all(outcomes: Iterable[Outcome]) -> Outcome | None:
    best: Outcome | None = None
    for o in outcomes:
        best = merge(best, o)
    return best


def join(left: Mapping, right: Mapping) -> dict:
    """Pointwise merge of two authoritative maps ``key -> Outcome`` (the lattice join)."""
    out = dict(left)
    for key in sorted(right):
        out[key] = merge(out.get(key), right[key])
    return out
