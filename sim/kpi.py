"""Buyer KPIs measured against the workload's ground truth.

Why this module exists: a deployment can only *estimate* how much untrustworthy
work it contained (it cannot know which of its accepts were bad). In the
simulator every submission's kind is known (:mod:`flk.sim.workload`:
``valid``/``dup`` are trustworthy; ``bad_sig``, ``tampered``, ``forged``,
``conflict`` and ``out_of_policy`` are not), so the lab measures the KPIs exactly,
per tenant, and shows the gap to what the server's own metrics estimate
(``flk_kpi_rejected_untrusted_ratio``, ``flk_kpi_escalation_ratio``).

Definitions (spec/KPI.md, checked against :data:`COST_DEFAULTS` by a test):

* **containment rate** = untrustworthy submissions no region ever answered 200 /
  untrustworthy submissions (escalated 202 counts as contained: a human reviews it);
* **false escalation rate** = trustworthy submissions whose final answer was 202,
  400, 401 or 409 / trustworthy submissions with a final answer (5xx, timeouts
  and giving up are availability, not escalation);
* **escalation rate** = final 202 / final 200 or 202 (the seed's SLO: <= 2%);
* **cost per trusted task** = (compute + storage + network + anchoring) / trusted
  tasks (trustworthy submissions finally answered 200), from the cost model.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .metrics import BAD_SIG_KINDS

TRUSTED_KINDS = ("valid", "dup")
UNTRUSTED_KINDS = (*BAD_SIG_KINDS, "conflict", "out_of_policy")
FALSE_ESCALATION = (202, 400, 401, 409)

# the cost model's defaults (USD; spec/KPI.md "Cost model" lists the same numbers)
COST_DEFAULTS: dict[str, float] = {
    "compute_per_request": 0.000002,  # one delivery through admission, WAL, verification, dedup
    "record_bytes": 1024.0,  # stored bytes per accepted record (WAL + dedup + object store copy)
    "hot_gb_month": 0.10,  # hot tier (dedup store, WAL), per GB-month
    "cold_gb_month": 0.01,  # cold tier (object store), per GB-month
    "retention_months": 12.0,  # how long an accepted record is kept
    "inter_region_gb": 0.02,  # replication traffic, per GB
    "anchor_per_batch": 0.01,  # one anchoring of the audit log (TSA / external ledger)
    "anchor_every": 1000.0,  # accepted records per anchoring batch
}
SLOS = {"containment_rate": (">=", 0.98), "false_escalation_rate": ("<=", 0.01), "escalation_rate": ("<=", 0.02)}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _cost(t: dict, cost: dict, regions: int) -> dict:
    gb = t["stored"] * cost["record_bytes"] / 1e9
    storage = gb * cost["retention_months"] * (cost["hot_gb_month"] + cost["cold_gb_month"])
    compute = t["deliveries"] * cost["compute_per_request"]
    network = gb * max(0, regions - 1) * cost["inter_region_gb"]
    anchoring = math.ceil(t["stored"] / cost["anchor_every"]) * cost["anchor_per_batch"] if t["stored"] else 0.0
    total = compute + storage + network + anchoring
    return {"compute_usd": compute, "storage_usd": storage, "network_usd": network, "anchoring_usd": anchoring,
            "total_usd": total, "cost_per_trusted_task_usd": _ratio(total, t["trusted_tasks"])}


def _figures(t: dict, cost: dict, regions: int) -> dict:
    out = {
        "submissions": t["trusted"] + t["untrusted"], "trustworthy": t["trusted"], "untrustworthy": t["untrusted"],
        "untrusted_accepted": t["leaked"], "containment_rate": _ratio(t["untrusted"] - t["leaked"], t["untrusted"]),
        "false_escalations": t["false_esc"], "false_escalation_rate": _ratio(t["false_esc"], t["trusted_answered"]),
        "escalation_rate": _ratio(t["escalated"], t["accepted"] + t["escalated"]),
        "server_refused_share": _ratio(t["refused"], t["refused"] + t["accepted"] + t["escalated"]),
        "trusted_tasks": t["trusted_tasks"], "by_kind": dict(sorted(t["by_kind"].items())),
        **_cost(t, cost, regions),
    }
    out["slos"] = {k: {"op": op, "target": v, "value": out[k],  # ok None: nothing to measure (not exercised)
                       "ok": None if out[k] is None else (out[k] >= v if op == ">=" else out[k] <= v)}
                   for k, (op, v) in SLOS.items()}
    return out


def _tally(events: list[dict]) -> dict[str, dict]:
    kind: dict[int, str] = {}
    tenant: dict[int, str] = {}
    final: dict[int, int] = {}
    accepted_somewhere: set[int] = set()
    deliveries: dict[str, int] = defaultdict(int)
    for e in events:
        t = e["type"]
        if t == "client.send":
            kind.setdefault(e["req"], e["kind"])
            tenant.setdefault(e["req"], e["tenant"])
        elif t == "client.recv":
            final[e["req"]] = e["status"]
        elif t == "srv.recv":
            deliveries[e.get("tenant") or "_none"] += 1
        elif t == "srv.respond" and e["status"] == 200 and not e.get("replay"):
            accepted_somewhere.add(e["req"])
    out: dict[str, dict] = defaultdict(lambda: {"trusted": 0, "untrusted": 0, "leaked": 0, "false_esc": 0,
                                                "trusted_answered": 0, "escalated": 0, "accepted": 0,
                                                "refused": 0, "trusted_tasks": 0, "stored": 0, "deliveries": 0,
                                                "by_kind": defaultdict(lambda: defaultdict(int))})
    for req, k in kind.items():
        t = out[tenant[req]]
        status = final.get(req)
        t["by_kind"][k][str(status)] += 1
        if k in UNTRUSTED_KINDS:
            t["untrusted"] += 1
            t["leaked"] += req in accepted_somewhere
        else:
            t["trusted"] += 1
            if status is not None and status < 500:
                t["trusted_answered"] += 1
                t["false_esc"] += status in FALSE_ESCALATION
            t["trusted_tasks"] += status == 200
        t["escalated"] += status == 202
        t["accepted"] += status == 200
        t["refused"] += status in (401, 409)
        t["stored"] += req in accepted_somewhere
    for ten, n in deliveries.items():
        out[ten]["deliveries"] += n
    for t in out.values():
        t["by_kind"] = {k: dict(v) for k, v in t["by_kind"].items()}
    return dict(out)


def measure(events: list[dict], scenario: dict, cost: dict | None = None) -> dict:
    """``{"total": figures, "tenants": {tenant: figures}, "cost_model": ...}`` of a run's history."""
    cost = {**COST_DEFAULTS, **(cost or {})}
    regions = len(scenario.get("regions") or [1])
    per = _tally(events)
    total: dict = {"trusted": 0, "untrusted": 0, "leaked": 0, "false_esc": 0, "trusted_answered": 0,
                   "escalated": 0, "accepted": 0, "refused": 0, "trusted_tasks": 0, "stored": 0, "deliveries": 0,
                   "by_kind": defaultdict(lambda: defaultdict(int))}
    for t in per.values():
        for k, v in t.items():
            if k == "by_kind":
                for kind, statuses in v.items():
                    for s, n in statuses.items():
                        total["by_kind"][kind][s] += n
            else:
                total[k] += v
    total["by_kind"] = {k: dict(v) for k, v in total["by_kind"].items()}
    return {"total": _figures(total, cost, regions),
            "tenants": {ten: _figures(t, cost, regions) for ten, t in sorted(per.items())},
            "cost_model": cost, "slos": {k: {"op": op, "target": v} for k, (op, v) in SLOS.items()}}
