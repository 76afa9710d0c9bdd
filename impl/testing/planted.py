"""Planted bugs: small, named mutants of the real implementation for tests that must see a
checker (or the shrinker) catch a bug on purpose.

Why this module exists: ``flk sim run --plant NAME`` and ``flk sim shrink`` rerun a failing
run with the *same* bug, so the bug needs a stable name the run directory can record.
Each entry gives the simulator's ``World`` keyword arguments that plant it (``core_cls``
here: this package may not import the simulator, so a mutant is a subclass of a real
implementation class the simulator is given). Production code never imports this module
(spec/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..core.canonical import canonical_bytes
from ..verifier.core import VerifyBatch
from ..verifier.pipeline import Response, Verifier, _Authenticated
from ..verifier.wire import VERSION_PROFILE


class ReplayRewritesAnswer(VerifyBatch):
    """Mutant: on WAL replay the stored answer is re-serialised (a trailing newline) instead of
    being replayed byte for byte, so a replay changes an outcome. It shows only after a crash
    and restart replays the WAL (INV-IDEMPOTENT-REPLAY, INV-FWW); a run without one is valid."""

    def _finish(self, item, resp, event, answer, digest="") -> None:
        if self.replay and resp.status in (200, 202):
            resp = Response(resp.status, resp.headers, resp.body + b"\n")
        super()._finish(item, resp, event, answer, digest)


class AcceptsBadSignatures(Verifier):
    """Mutant: a signature that no active key verifies is taken as the tenant's (the payload
    digest is still computed), so tampered, forged and corrupted PCS are accepted. It breaks
    INV-VERIFY-BEFORE-DEDUP and drops the containment KPI (flk.sim.kpi)."""

    def authenticate(self, doc: dict, tenant, now: float):
        who = super().authenticate(doc, tenant, now)
        if isinstance(who, Response) and tenant is not None and b"bad-signature" in who.body:
            digest = hashlib.sha256(canonical_bytes(doc, "v1")).hexdigest()
            return _Authenticated(tenant.tenant_id, VERSION_PROFILE[doc["version"]], digest)
        return who


@dataclass(frozen=True)
class PlantedBug:
    name: str
    doc: str
    breaks: tuple[str, ...]  # the invariants a run that exercises the bug violates
    world_kwargs: dict[str, Any] = field(default_factory=dict)


PLANTED: dict[str, PlantedBug] = {bug.name: bug for bug in (
    PlantedBug("replay-rewrites-answer", (ReplayRewritesAnswer.__doc__ or "").split("\n")[0].strip(),
               ("INV-IDEMPOTENT-REPLAY", "INV-FWW"), {"core_cls": ReplayRewritesAnswer}),
    PlantedBug("accepts-bad-signatures", (AcceptsBadSignatures.__doc__ or "").split("\n")[0].strip(),
               ("INV-VERIFY-BEFORE-DEDUP",), {"verifier_cls": AcceptsBadSignatures}),
)}


def world_kwargs(name: str) -> dict[str, Any]:
    """The ``World`` keyword arguments that plant bug ``name``; ``KeyError`` naming the known ones."""
    try:
        return dict(PLANTED[name].world_kwargs)
    except KeyError:
        raise KeyError(f"no planted bug {name!r} (known: {', '.join(sorted(PLANTED))})") from None
