"""The routing layer between clients and regions: a load balancer with health checks.

With ``[routing] enabled``, an agent addresses its home region by name and the router
decides, at every send, which region gets the request: the home region while its
health checks pass, else the first healthy region in the agent's preference order.
Every ``health_interval_s`` the router probes each region across the clients' link
(a round trip of sampled link latency; a probe fails if the region is down, paused,
cut off by a partition, or slower than ``health_timeout_ms``). After
``unhealthy_threshold`` consecutive failures a region is taken out of rotation
(``route.down``); after ``healthy_threshold`` consecutive successes it is put back
(``route.up``). The RTO of a region loss is therefore detection (interval x threshold,
plus the probe timeout) + the switch + the first success elsewhere, and it responds
to those parameters.
"""

from __future__ import annotations

from .rng import sample
from .topology import CLIENTS


class Router:
    def __init__(self, world) -> None:
        self.world = world
        cfg = world.scenario.data["routing"]
        self.interval_s = float(cfg["health_interval_s"])
        self.timeout_s = float(cfg["health_timeout_ms"]) / 1000.0
        self.down_after = int(cfg["unhealthy_threshold"])
        self.up_after = int(cfg["healthy_threshold"])
        self.healthy = {rid: True for rid in world.region_ids}
        self._fails = {rid: 0 for rid in world.region_ids}
        self._oks = {rid: 0 for rid in world.region_ids}
        self.rng = world.streams.get("routing")

    def resolve(self, preference: list[str]) -> str:
        """The region that gets a request from an agent preferring regions in this order."""
        for region in preference:
            if self.healthy[region]:
                return region
        return preference[0]

    def _probe(self, region_id: str) -> tuple[bool, float]:
        """One health check: (passed, seconds it took)."""
        region, net = self.world.regions[region_id], self.world.net
        spec = net.link(CLIENTS, region_id)
        rtt = 2 * sample(spec.latency_ms, self.rng, 1.0) / 1000.0
        reachable = region.up and not region.paused and not net.is_blocked(CLIENTS, region_id) \
            and not net.is_blocked(region_id, CLIENTS)
        if not reachable or rtt > self.timeout_s:
            return False, self.timeout_s
        return True, rtt

    def _record(self, region_id: str, passed: bool) -> None:
        now = self.world.env.now
        if passed:
            self._fails[region_id], self._oks[region_id] = 0, self._oks[region_id] + 1
            if not self.healthy[region_id] and self._oks[region_id] >= self.up_after:
                self.healthy[region_id] = True
                self.world.history.record(now, "route.up", region=region_id)
        else:
            self._oks[region_id], self._fails[region_id] = 0, self._fails[region_id] + 1
            if self.healthy[region_id] and self._fails[region_id] >= self.down_after:
                self.healthy[region_id] = False
                self.world.history.record(now, "route.down", region=region_id)

    def run(self, region_id: str):
        """Health-check one region forever."""
        env = self.world.env
        while True:
            yield env.timeout(self.interval_s)
            passed, took = self._probe(region_id)
            yield env.timeout(took)
            self._record(region_id, passed)
