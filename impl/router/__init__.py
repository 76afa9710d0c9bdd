"""The health-checked router: the load balancer between clients and regions (``[routing] enabled``).

One sans-I/O core, two drivers. :class:`flk.impl.router.health.HealthTable` owns every routing
decision (a probe's outcome counted, a region in or out of rotation, the region a request goes
to); the simulator's router (:mod:`flk.sim.routing`, SimPy probes over the simulated network) and
the real proxy (:mod:`.proxy`, asyncio probes and forwarding over real sockets) only carry probes
and requests and hand the table what they saw. Nothing of the rules is written twice.

Modules:

* :mod:`.health` -- the rotation table: thresholds, consecutive counts, up/down, the preference rule (sans I/O)
* :mod:`.wire`   -- the proxy's HTTP/1.1 request-head and chunk parsing and its problem answers (sans I/O)
* :mod:`.proxy`  -- the asyncio driver: probes ``GET /ready``, forwards requests (``python -m flk.impl.router.proxy``)
"""
