"""The rotation table of the health-checked router: the one owner of the routing rules.

Why this module exists: the simulator's load balancer and the real cluster's proxy must decide
alike, or a simulated RTO says nothing about the real one. So the rules live here once, sans
I/O -- no sockets, no clock, no event loop: a driver probes a region however it can (SimPy over
the simulated link, asyncio over a real socket), judges the probe with the same timeout rule,
and passes the outcome to :meth:`HealthTable.record`; it asks :meth:`HealthTable.resolve` where
a request goes.

Rules (theory of operation):

* every region starts in rotation, with no consecutive outcomes counted;
* a passed check resets the region's failure count and adds one success; a failed check resets
  the success count and adds one failure;
* a region in rotation leaves it (``"down"``) at ``down_after`` consecutive failures; a region out
  of rotation returns (``"up"``) at ``up_after`` consecutive successes; nothing else changes it;
* a request whose client names home region H goes to H while H is in rotation, else to the first
  region in rotation in the configured order, else (nothing in rotation) to H -- or, without a
  known home, to the first configured region.

A client's preference beyond its home is not the router's input (a deployed router sees the home
header only), so both drivers resolve from the home alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UP, DOWN = "up", "down"


def check_passed(answered: bool, took_s: float, timeout_s: float) -> bool:
    """A health check passes when the region answered ready within the timeout."""
    return answered and took_s <= timeout_s


@dataclass
class HealthTable:
    """Which regions are in rotation and where a request goes (see the module docstring)."""

    regions: list[str]
    down_after: int = 3
    up_after: int = 2
    healthy: dict[str, bool] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=dict)
    oks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.regions:
            raise ValueError("a router needs at least one region")
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("thresholds are at least 1")
        for r in self.regions:
            self.healthy.setdefault(r, True)
            self.fails.setdefault(r, 0)
            self.oks.setdefault(r, 0)

    def record(self, region: str, passed: bool) -> str | None:
        """One health check's outcome; ``"down"`` / ``"up"`` when the region changes rotation, else None."""
        if passed:
            self.fails[region], self.oks[region] = 0, self.oks[region] + 1
            if not self.healthy[region] and self.oks[region] >= self.up_after:
                self.healthy[region] = True
                return UP
        else:
            self.oks[region], self.fails[region] = 0, self.fails[region] + 1
            if self.healthy[region] and self.fails[region] >= self.down_after:
                self.healthy[region] = False
                return DOWN
        return None

    def preference(self, home: str | None) -> list[str]:
        """The order a request from a client with this home tries: the home, then the configured order."""
        head = [home] if home in self.healthy else []
        return head + [r for r in self.regions if r != home]

    def resolve(self, home: str | None) -> str:
        """The region a request from a client whose home is ``home`` goes to."""
        order = self.preference(home)
        return next((r for r in order if self.healthy[r]), order[0])

    def in_rotation(self) -> list[str]:
        """The regions in rotation, in the configured order."""
        return [r for r in self.regions if self.healthy[r]]
