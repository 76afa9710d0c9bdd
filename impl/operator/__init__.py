"""The operator: policies as data, a sans-I/O controller with health gates and auto-rollback.

Modules:

* :mod:`.policy`     -- the one schema of ShardMigration, CRRPolicy and TieringPolicy documents (TOML)
* :mod:`.table`      -- the state machines as tables (phases, ensure actions, guarded rows); the docs are drawn from them
* :mod:`.gates`      -- health gates over a window of samples: ok / breach / unknown
* :mod:`.controller` -- ``reconcile(policy, status, observed, now) -> Result(actions, status, audit)``
* :mod:`.driver`     -- one controller step in the kill-safe order (observe, reconcile, save, audit, act)
* :mod:`.migration`  -- the deployment side of a ShardMigration: the controller's actions on a migration state
* :mod:`.crr`        -- the deployment side of a CRRPolicy: what a region reads under a spec, applied to a reader
* :mod:`.records`    -- the persisted status per policy and the audit-log entries of transitions
* :mod:`.observe`    -- a health sample from two scrapes of ``/metrics``
* :mod:`.forecast`   -- access forecasts: exponential smoothing, additive Holt-Winters
* :mod:`.tiering`    -- predictive pre-warming under a budget, the tier cost model

No module here imports asyncio, threads, sockets or reads the wall clock: the
drivers (``flk operator run``, the simulator's :mod:`flk.sim.operator`, the
server's operator routes) pass time and observations in and carry actions out.
"""

from __future__ import annotations

from .controller import Result, reconcile
from .policy import Policy, PolicyError, check_policy, load_policy, parse_policy

__all__ = ["Policy", "PolicyError", "Result", "check_policy", "load_policy", "parse_policy", "reconcile"]
