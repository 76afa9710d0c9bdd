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
from ..storage.walformat import A_STORED
from ..verifier.core import VerifyBatch
from ..verifier.pipeline import Response, Verifier, _Authenticated, _outcome_response
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


# -- bugs that only a combination of faults or an unusual workload mix reaches ----------------------
# (``flk sim explore --swarm`` finds each; no catalog scenario triggers one at seed 1:
# tests/sim/test_explore_planted.py). Each mutant's ``triggered(batch, where)`` names the
# situation it needs, so a run with :class:`TriggerProbe` can show that a scenario never reaches it.
class _Situational(VerifyBatch):
    """Base of the situational mutants: keeps, per verifier (one per region, it survives a crash),
    the newest clock reading of a live (not replayed) batch and the clock reading before it."""

    def __init__(self, verifier, now, **kwargs) -> None:
        super().__init__(verifier, now, **kwargs)
        if not kwargs.get("replay"):
            seen = verifier.__dict__.setdefault("_plant_clock", [now, now])  # [newest, highest]
            seen[0], seen[1] = now, max(seen[1], now)

    def clock_stepped_back(self) -> bool:
        seen = self.v.__dict__.get("_plant_clock")
        return seen is not None and self.now < seen[1] - 1.0

    def rotating(self) -> bool:
        return any(item.tenant is not None and len(item.tenant.active_keys(self.now)) > 1 for item in self._pending)

    def _fail_open(self) -> None:
        """Answer every pending item as stored although the store never took it (a 200 whose
        record is lost: INV-NO-ACKED-LOSS)."""
        rest = []
        for item in self._pending:
            if item.outcome is None:
                rest.append(item)
                continue
            self._finish(item, _outcome_response(item.outcome, False), None, A_STORED, item.outcome.payload_digest)
        self._pending = rest


class RotationOutageFailOpen(_Situational):
    """Mutant: when the dedup store does not answer while a tenant's key rotation overlap is open,
    the request is answered 200 as if stored (a fail-open meant for the rotation's old-key
    retries); the record is lost. Needs a store outage inside a key rotation's overlap window."""

    def triggered(self) -> bool:
        return self.rotating()

    def lookup_failed(self) -> None:
        if self.triggered():
            self._fail_open()
        super().lookup_failed()


class SkewOutageFailOpen(_Situational):
    """Mutant: when the dedup store does not answer while the region's clock reads behind a time
    it already read (a clock stepped back), the request is answered 200 as if stored (a TTL
    check that took the step for a stale entry); the record is lost. Needs a backward clock
    step and a store outage at once."""

    def triggered(self) -> bool:
        return self.clock_stepped_back()

    def lookup_failed(self) -> None:
        if self.triggered():
            self._fail_open()
        super().lookup_failed()


class FourthTenantStaleReplay(_Situational):
    """Mutant: a duplicate of a tenant beyond the third (a per-tenant answer cache with three
    slots) is answered with a stale body (a trailing space), not the stored bytes. Needs four
    or more tenants sending duplicates (INV-NO-ACKED-LOSS)."""

    def triggered(self, item) -> bool:
        return not self.replay and item.tenant is not None and item.tenant.tenant_id not in ("t0", "t1", "t2")

    def _existing(self, item, stored) -> None:
        super()._existing(item, stored)
        resp = self.responses[item.pos]
        if resp.status in (200, 202) and self.triggered(item):
            self.responses[item.pos] = Response(resp.status, resp.headers, resp.body + b" ")


class ThirdTenantReplayRewrites(_Situational):
    """Mutant: on WAL replay, the answer of a tenant beyond the second (a replay path that keeps
    two tenants' answers byte for byte and re-serialises the others) gets a re-serialised body.
    Needs a crash and restart with three or more tenants' records in the WAL
    (INV-IDEMPOTENT-REPLAY)."""

    def triggered(self, item) -> bool:
        return self.replay and item.tenant is not None and item.tenant.tenant_id not in ("t0", "t1")

    def _finish(self, item, resp, event, answer, digest="") -> None:
        if resp.status in (200, 202) and self.triggered(item):
            resp = Response(resp.status, resp.headers, resp.body + b"\n")
        super()._finish(item, resp, event, answer, digest)


class RotationAcceptsBadSignatures(Verifier):
    """Mutant: while a tenant's key rotation overlap is open (two keys verify), a signature that no
    active key verifies is taken as the tenant's (a fallback meant for clients still signing with
    the retired key). Needs bad-signature traffic inside a key rotation's overlap window
    (INV-VERIFY-BEFORE-DEDUP)."""

    @staticmethod
    def triggered(who, tenant, now) -> bool:
        return (isinstance(who, Response) and tenant is not None and b"bad-signature" in who.body
                and len(tenant.active_keys(now)) > 1)

    def authenticate(self, doc: dict, tenant, now: float):
        who = super().authenticate(doc, tenant, now)
        if self.triggered(who, tenant, now):
            digest = hashlib.sha256(canonical_bytes(doc, "v1")).hexdigest()
            return _Authenticated(tenant.tenant_id, VERSION_PROFILE[doc["version"]], digest)
        return who


SITUATIONAL = (RotationOutageFailOpen, SkewOutageFailOpen, FourthTenantStaleReplay, ThirdTenantReplayRewrites,
               RotationAcceptsBadSignatures)


class TriggerProbe(_Situational):
    """Not a bug: the real batch, recording in ``fired`` (a class attribute: reset it before a
    run) the situational mutants whose situation this batch reached."""

    fired: set[str] = set()

    def _note(self, cls, *args) -> None:
        if cls.triggered(self, *args):
            TriggerProbe.fired.add(cls.__name__)

    def lookup_failed(self) -> None:
        self._note(RotationOutageFailOpen)
        self._note(SkewOutageFailOpen)
        super().lookup_failed()

    def _existing(self, item, stored) -> None:
        super()._existing(item, stored)
        if self.responses[item.pos].status in (200, 202):
            self._note(FourthTenantStaleReplay, item)

    def _finish(self, item, resp, event, answer, digest="") -> None:
        if resp.status in (200, 202):
            self._note(ThirdTenantReplayRewrites, item)
        if RotationAcceptsBadSignatures.triggered(resp, item.tenant, self.now):
            TriggerProbe.fired.add(RotationAcceptsBadSignatures.__name__)
        super()._finish(item, resp, event, answer, digest)


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
    *(PlantedBug(name, (cls.__doc__ or "").split("\n")[0].strip(), breaks,
                 {"verifier_cls" if issubclass(cls, Verifier) else "core_cls": cls})
      for name, cls, breaks in (
          ("rotation-outage-fail-open", RotationOutageFailOpen, ("INV-NO-ACKED-LOSS",)),
          ("skew-outage-fail-open", SkewOutageFailOpen, ("INV-NO-ACKED-LOSS",)),
          ("fourth-tenant-stale-replay", FourthTenantStaleReplay, ("INV-NO-ACKED-LOSS",)),
          ("third-tenant-replay-rewrites", ThirdTenantReplayRewrites, ("INV-IDEMPOTENT-REPLAY",)),
          ("rotation-accepts-bad-signatures", RotationAcceptsBadSignatures, ("INV-VERIFY-BEFORE-DEDUP",)))),
)}
# the bugs only exploration finds (flk sim explore --swarm): no catalog scenario reaches them at seed 1
SITUATIONAL_BUGS = ("rotation-outage-fail-open", "skew-outage-fail-open", "fourth-tenant-stale-replay",
                    "third-tenant-replay-rewrites", "rotation-accepts-bad-signatures")


def world_kwargs(name: str) -> dict[str, Any]:
    """The ``World`` keyword arguments that plant bug ``name``; ``KeyError`` naming the known ones."""
    try:
        return dict(PLANTED[name].world_kwargs)
    except KeyError:
        raise KeyError(f"no planted bug {name!r} (known: {', '.join(sorted(PLANTED))})") from None
