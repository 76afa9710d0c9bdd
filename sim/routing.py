"""The routing layer between clients and regions: a load balancer with health checks, simulated.

With ``[routing] enabled``, an agent addresses its home region by name and the router decides, at
every send, which region gets the request. This module is the router's SimPy driver only: it
carries the probes (every ``health_interval_s`` a round trip of sampled link latency across the
clients' link; a probe fails if the region is down, paused, cut off by a partition, or slower than
``health_timeout_ms``, or if its dedup store does not answer the ping of flk serve's ``GET /ready``:
at once when the store refuses, after the ping's wait when it hangs) and hands every outcome to the shipped rotation table,
:class:`flk.impl.router.health.HealthTable`, which decides everything else: after
``unhealthy_threshold`` consecutive failures a region leaves rotation (``route.down``), after
``healthy_threshold`` consecutive successes it returns (``route.up``), and a request goes to the
home region while it is in rotation, else to the first region in rotation. The real cluster's
proxy (:mod:`flk.impl.router.proxy`) drives the same class, so the simulator runs what ships.

The RTO of a region loss is therefore detection (interval x threshold, plus the probe timeout) +
the switch + the first success elsewhere, and it responds to those parameters.
"""

from __future__ import annotations

from ..impl.dedup.base import READY_PING_TIMEOUT_S
from ..impl.router.health import HealthTable, check_passed
from .rng import sample
from .topology import CLIENTS


class Router:
    def __init__(self, world) -> None:
        self.world = world
        cfg = world.scenario.data["routing"]
        self.interval_s = float(cfg["health_interval_s"])
        self.timeout_s = float(cfg["health_timeout_ms"]) / 1000.0
        self.table = HealthTable(list(world.region_ids), int(cfg["unhealthy_threshold"]),
                                 int(cfg["healthy_threshold"]))
        self.rng = world.streams.get("routing")

    @property
    def healthy(self) -> dict[str, bool]:
        return self.table.healthy

    def resolve(self, preference: list[str]) -> str:
        """The region that gets a request from an agent whose home is ``preference[0]``.

        Like the deployed router, this one sees the agent's home only (the ``X-Flk-Home`` header);
        the table's order decides the rest."""
        return self.table.resolve(preference[0])

    def _probe(self, region_id: str) -> tuple[bool, float]:
        """One health check: (passed, seconds it took)."""
        region, net = self.world.regions[region_id], self.world.net
        spec = net.link(CLIENTS, region_id)
        rtt = 2 * sample(spec.latency_ms, self.rng, 1.0) / 1000.0
        connected = not net.is_blocked(CLIENTS, region_id) and not net.is_blocked(region_id, CLIENTS)
        serving = region.up and not region.paused and connected
        if serving and region.hang is not None:  # /ready's ping waits for the frozen store (at most READY_PING_TIMEOUT_S)
            took = rtt + min(region.store_timeout_s, READY_PING_TIMEOUT_S)
            return False, min(took, self.timeout_s)
        if serving and not region.store_answers():  # /ready: 503 "dedup store not usable", at once
            return False, min(rtt, self.timeout_s)
        if check_passed(serving, rtt, self.timeout_s):
            return True, rtt
        if connected and not region.up and region.host_refuses():
            return False, min(rtt, self.timeout_s)  # the host refuses the probe at once (its process is not running)
        return False, self.timeout_s  # (a start that replays holds the probe in its backlog past the timeout)

    def record(self, region_id: str, passed: bool) -> None:
        """Hand one probe's outcome to the table; a rotation change becomes a history event."""
        change = self.table.record(region_id, passed)
        if change:
            self.world.history.record(self.world.env.now, f"route.{change}", region=region_id)

    def run(self, region_id: str):
        """Health-check one region forever."""
        env = self.world.env
        while True:
            yield env.timeout(self.interval_s)
            passed, took = self._probe(region_id)
            yield env.timeout(took)
            self.record(region_id, passed)
