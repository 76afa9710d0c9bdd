"""Invariant predicates of the model, one function per ID of spec/INVARIANTS.md.

Each takes a :class:`~flk.model.region.Region` (or a
:class:`~flk.model.cluster.Cluster`) and returns ``True`` when the invariant
holds. Hypothesis calls them after every step of a random trace
(tests/formal); the refinement tests call them on the implementation's
observable state mapped onto the model.
"""

from __future__ import annotations

from .cluster import Cluster
from .merge import merge_all
from .region import Region, replay_state


def INV_WAL_FIRST(r: Region) -> bool:
    """Every answered request is in the durable WAL, and was made durable before any processing."""
    durable = {rec.sub.rid for rec in r.wal}
    if any(rid not in durable for rid in r.answers):
        return False
    synced_upto = 0
    appended_at: dict[int, int] = {}
    for i, ev in enumerate(r.history):
        if ev.kind == "append":
            appended_at[ev.rid] = i
        elif ev.kind == "sync":
            synced_upto = i
        elif ev.kind in ("verify", "answer") and ev.rid in appended_at and appended_at[ev.rid] > synced_upto:
            return False  # touched a local request appended after the last sync
    return True


def INV_VERIFY_BEFORE_DEDUP(r: Region) -> bool:
    """Every dedup read/write is for the request most recently verified, and it verified."""
    last_verified: int | None = None
    for ev in r.history:
        if ev.kind == "verify":
            last_verified = ev.rid if ev.ok else None
        elif ev.kind in ("dedup_get", "dedup_put"):
            if ev.rid != last_verified:
                return False
        elif ev.kind in ("crash", "restart"):
            last_verified = None
    return True


def INV_FWW(r: Region) -> bool:
    """A stored outcome never changes: the live entry is the first ever stored for the key."""
    return all(r.first_stored.get(k) == v for k, v in r.dedup.items())


def INV_NO_ACKED_LOSS(r: Region) -> bool:
    """Every request answered 200/202 has that outcome in the dedup store (when the region is up)."""
    if not r.up:
        return True
    return all(r.dedup.get(key) == outcome for key, outcome in r.acked.values())


def INV_IDEMPOTENT_REPLAY(r: Region) -> bool:
    """Re-processing the processed WAL prefix (once or twice) from scratch gives the same state."""
    if not r.up:
        return True
    prefix = r.wal[: r.cursor]
    once = replay_state(prefix, r.keys)
    twice = replay_state(prefix + prefix, r.keys)
    return once == (r.dedup, r.authoritative) == twice


def INV_TENANT_ISOLATION(r: Region) -> bool:
    """Every stored (tenant, pcs_id) came from a record of that tenant signed with that tenant's key."""
    for (tenant, pcs_id), out in r.dedup.items():
        if not any(
            rec.sub.tenant == tenant
            and rec.sub.pcs_id == pcs_id
            and rec.sub.payload_digest == out.payload_digest
            and rec.sub.key_id in r.keys.get(tenant, frozenset())
            for rec in r.wal
        ):
            return False
    return True


def INV_CONVERGENCE(c: Cluster) -> bool:
    """(eventually) After quiescence every region holds the same authoritative outcomes,
    equal to the merge of every verified record anywhere."""
    names = sorted(c.regions)
    maps = [c.regions[n].authoritative for n in names]
    if any(m != maps[0] for m in maps):
        return False
    expected: dict = {}
    for n in names:
        reg = c.regions[n]
        for rec in reg.wal:
            if rec.origin == n and rec.sub.key_id in reg.keys.get(rec.sub.tenant, frozenset()):
                expected.setdefault(rec.sub.key, []).append(rec.candidate())
    return maps[0] == {k: merge_all(v) for k, v in expected.items()}


REGION_INVARIANTS = {
    "INV-WAL-FIRST": INV_WAL_FIRST,
    "INV-VERIFY-BEFORE-DEDUP": INV_VERIFY_BEFORE_DEDUP,
    "INV-FWW": INV_FWW,
    "INV-NO-ACKED-LOSS": INV_NO_ACKED_LOSS,
    "INV-IDEMPOTENT-REPLAY": INV_IDEMPOTENT_REPLAY,
    "INV-TENANT-ISOLATION": INV_TENANT_ISOLATION,
}


def violated(r: Region) -> list[str]:
    return [name for name, pred in REGION_INVARIANTS.items() if not pred(r)]
