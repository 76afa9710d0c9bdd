"""The deployment side of a CRRPolicy: what a region reads under a policy, and applying it to a reader.

Why this module exists: the controller's ``crr.apply`` action (``{generation,
spec}``) must mean the same in the simulator (:class:`flk.sim.operator.SimCRR`)
and in ``flk serve`` (the operator routes, ``flk operator run``), so the
selection rule and the backfill rule are written once, here:

* :func:`peers_for` -- which peers region ``me`` reads and, for a selective
  policy, which tenants of them: every peer inside the policy's regions (empty:
  all), all tenants (``full``, ``multi-way``) or the spec's tenants
  (``selective``); a peer outside them is read for no tenant. The caller wraps
  it in the replication :class:`~flk.impl.replication.reading.Topology` (its
  own stream is always read: its reconciler sees its own outcomes);
* :func:`apply` -- a reader switched to a new topology; a peer whose selection
  widened (a tenant it did not read before) is backfilled: its streams'
  watermarks go back to 0 and the reader re-reads them (replay is idempotent),
  so a reselected tenant converges.

Duck-typed on the reader (``topology``, ``rewind(sources)``, which owns the
streams' naming and saves its watermarks) so this package stays free of the
replication package; no I/O but the reader's own state save, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def peers_for(spec: Mapping, region_ids: Sequence[str], me: str) -> dict[str, list[str] | None]:
    """``{peer: None (every tenant) | [tenants]}`` that region ``me`` reads under a CRRPolicy spec."""
    covered = set(spec["regions"]) or set(region_ids)
    peers: dict[str, list[str] | None] = {}
    for src in region_ids:
        if src == me:
            continue
        if me not in covered or src not in covered:
            peers[src] = []
        else:
            peers[src] = list(spec["tenants"]) if spec["mode"] == "selective" else None
    return peers


def filters(sources: Mapping[str, Any]) -> dict:
    """A topology's sources as JSON: ``{region: None | sorted tenants}``."""
    return {src: (None if f is None else sorted(f)) for src, f in sources.items()}


def widened(old: frozenset | None, new: frozenset | None) -> bool:
    """``new`` selects a tenant that ``old`` did not."""
    return old is not None and (new is None or bool(new - old))


def apply(reader: Any, topology: Any, me: str) -> list[str]:
    """Switch ``reader`` to ``topology``; returns the peers backfilled (their streams re-read from 0)."""
    old = reader.topology
    backfill = sorted(src for src, f in topology.sources.items()
                      if src != me and widened(old.sources.get(src, frozenset()), f))
    if backfill:
        reader.rewind(backfill)
    reader.topology = topology
    return backfill
