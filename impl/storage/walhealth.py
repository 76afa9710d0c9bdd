"""When a failed inbox WAL is probed again, and when it counts as dead.

Why this module exists: after ENOSPC or EIO the WAL refuses work
(:attr:`flk.impl.storage.wal.SegmentedLog.failed`). A freed disk must bring
the worker back without a restart, a disk that stays broken must show in the
liveness signal so that an orchestrator restarts or replaces the worker, and
clients retrying in the meantime must be turned away cheaply (503 +
``Retry-After`` before the WAL) instead of refilling a nearly full disk. This
is the rule for all of that, as a pure state machine: no I/O, no clock (time
is passed in, seconds, non-decreasing); the server's watcher carries out the
probes (:meth:`flk.impl.storage.wal.SegmentedLog.recover`).

========================  ===========================================  =====================
event                     condition                                    effect
========================  ===========================================  =====================
``failed(reason, now)``   state ``ok``                                 ``failed``; first probe
                                                                       after ``backoff(1)``
``probe_failed(r, now)``  ``probes`` reaches ``max_probes`` or         ``dead`` (still probed)
                          ``give_up_after_s`` passed since failure
``probe_failed(r, now)``  otherwise                                    next probe after
                                                                       ``backoff(probes+1)``
``recovered(now)``                                                     ``ok``; ``recoveries``+1
========================  ===========================================  =====================
"""

from __future__ import annotations

import math
from typing import Any

from ..core.backoff import Backoff

__all__ = ["WalHealth"]


class WalHealth:
    """The availability of one inbox WAL: ``ok``, ``failed`` (being probed) or
    ``dead`` (failed for too long: liveness fails; probing goes on)."""

    def __init__(self, backoff: Backoff = Backoff(0.25, 10.0), max_probes: int = 40,
                 give_up_after_s: float = 300.0) -> None:
        if max_probes < 1 or not give_up_after_s > 0:
            raise ValueError("max_probes must be >= 1 and give_up_after_s > 0")
        self.backoff = backoff
        self.max_probes = max_probes
        self.give_up_after_s = float(give_up_after_s)
        self.state = "ok"
        self.reason: str | None = None
        self.since: float | None = None
        self.probes = 0
        self.next_probe_at: float | None = None
        self.recoveries = 0
        self.failures = 0

    @property
    def available(self) -> bool:
        return self.state == "ok"

    @property
    def alive(self) -> bool:
        """False once the WAL failed for longer than the bounds allow."""
        return self.state != "dead"

    def failed(self, reason: str, now: float) -> None:
        """The WAL was seen failed (idempotent while it stays failed)."""
        if self.state != "ok":
            return
        self.state, self.reason, self.since, self.probes = "failed", reason, now, 0
        self.failures += 1
        self.next_probe_at = now + self.backoff.delay(1)

    def probe_due(self, now: float) -> bool:
        return self.state != "ok" and self.next_probe_at is not None and now >= self.next_probe_at

    def probe_failed(self, reason: str, now: float) -> None:
        self.probes += 1
        self.reason = reason
        if self.probes >= self.max_probes or self._failed_for(now) >= self.give_up_after_s:
            self.state = "dead"
        self.next_probe_at = now + self.backoff.delay(self.probes + 1)

    def _failed_for(self, now: float) -> float:
        return 0.0 if self.since is None else now - self.since

    def recovered(self, now: float) -> None:
        if self.state == "ok":
            return
        self.state, self.reason, self.since, self.probes, self.next_probe_at = "ok", None, None, 0, None
        self.recoveries += 1

    def retry_after(self, now: float, default: int = 1) -> int:
        """Seconds a client should wait: until the next probe (at least 1)."""
        if self.next_probe_at is None:
            return max(1, default)
        return max(1, math.ceil(self.next_probe_at - now))

    def status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "recoveries": self.recoveries}
        if self.state != "ok":
            out.update(reason=self.reason, probes=self.probes,
                       failed_for_s=round(self._failed_for(now), 3),
                       next_probe_in_s=round(max(0.0, (self.next_probe_at or now) - now), 3))
        return out
