"""``flk bench model``: exhaustive model checking of the replication protocol model.

Figures: the default scope of ``flk check model`` explored completely, on the
full graph (safety, deadlock and liveness) and symmetry-reduced (safety):
distinct states, seconds (median of ``repeat``), states/s, and the reduction
factor; then (not with ``--quick``) the larger scope -- 3 regions, 2 tenants,
2 pcs_ids per tenant x 2 payloads, 2 writes (1 may carry a bad signature),
1 crash, 1 partition -- explored completely once with and once without
symmetry reduction (safety and deadlock; liveness is checked on the default
scope's full graph). The 1-minute load average is reported beside the
timings: the machine is shared.
"""

from __future__ import annotations

import os
import statistics

from ....model.checker import check
from ....model.explore import Scope

LARGER = Scope(regions=3, tenants=2, keys=2, payloads=2, writes=2, bad=1, crashes=1, partitions=1)


def _fig(prefix: str, runs: list) -> dict:
    r = runs[0]
    secs = statistics.median(x.seconds for x in runs)
    return {f"{prefix}_distinct_states": r.distinct_states, f"{prefix}_states_generated": r.states_generated,
            f"{prefix}_depth": r.depth, f"{prefix}_seconds": round(secs, 2),
            f"{prefix}_cpu_seconds": round(statistics.median(x.cpu_seconds for x in runs), 2),
            f"{prefix}_states_per_s": round(r.distinct_states / secs, 1) if secs else 0.0,
            f"{prefix}_complete": all(x.complete for x in runs),
            f"{prefix}_ok": all(x.ok for x in runs), f"{prefix}_peak_rss_mb": max(x.peak_rss_mb for x in runs)}


def run(repeat: int = 3, quick: bool = False) -> dict:
    default = Scope()
    out: dict = {"default_scope": default.to_json(), "load_1m_before": round(os.getloadavg()[0], 2)}
    full = [check(default, symmetry=False, liveness=True) for _ in range(repeat)]
    red = [check(default, symmetry=True) for _ in range(repeat)]
    out |= _fig("default_full", full) | _fig("default_reduced", red)
    out["default_liveness_holds"] = all(v is None for v in full[0].liveness.values())
    out["default_reduction_factor"] = round(full[0].distinct_states / red[0].distinct_states, 2)
    if not quick:
        out["larger_scope"] = LARGER.to_json()
        lr = check(LARGER, symmetry=True)
        out |= _fig("larger_reduced", [lr])
        lf = check(LARGER, symmetry=False, liveness=False)
        out |= _fig("larger_full", [lf])
        out["larger_reduction_factor"] = round(lf.distinct_states / lr.distinct_states, 2)
        out["larger_same_violations"] = sorted(lf.violated) == sorted(lr.violated)
    out["load_1m_after"] = round(os.getloadavg()[0], 2)
    return out
