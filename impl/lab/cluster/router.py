"""The cluster's launch point of the health-checked router (``[routing] enabled``).

The router itself ships in :mod:`flk.impl.router` (the rotation rules in
:class:`flk.impl.router.health.HealthTable`, driven here by the asyncio proxy
:mod:`flk.impl.router.proxy`, and in the simulator by :mod:`flk.sim.routing`). The cluster runner
starts it as ``python -m flk.impl.lab.cluster.router`` on the clients' bridge address; this module
only forwards to the proxy's entry point, so nothing of the router lives in the lab.
"""

from __future__ import annotations

from flk.impl.router.proxy import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m flk.impl.lab.cluster.router"))
