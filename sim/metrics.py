"""SLO metrics computed from a history, and the per-second time series.

Definitions (all from the client's point of view unless stated):

* ``requests`` -- distinct logical submissions (``client.send`` with attempt 1);
* ``error_rate`` -- share of submissions whose final outcome is an error that the
  workload did not ask for: 5xx, a timeout, or giving up (401 for a bad
  signature, and 409 for a pcs_id the workload deliberately sent two payloads
  for -- whichever arrived second -- are expected, not errors);
* ``latency_p50/p95/p99_ms`` -- first send to final answer of submissions that
  ended in 200/202/409/401;
* ``rate_429`` -- share of attempts answered 429;
* ``throughput_per_s`` -- final answers per simulated second of workload;
* ``retries`` -- attempts beyond the first.
"""

from __future__ import annotations

import math
from collections import defaultdict

BAD_SIG_KINDS = ("bad_sig", "tampered", "forged")  # submission kinds (flk.sim.workload) answered 401

METRICS: dict[str, str] = {
    "requests": "distinct logical submissions",
    "attempts": "submission attempts, retries included",
    "retries": "attempts beyond the first",
    "skipped_arrivals": "arrivals the load generator did not send: workload.max_in_flight submissions were open "
                        "(the offered load was cut; the simulator and the cluster runner skip at the same cap)",
    "errors": "submissions whose final outcome is an unexpected error (5xx, timeout, gave up)",
    "error_rate": "errors / requests (end to end: after all retries)",
    "rate_429": "share of attempts answered 429 (per attempt)",
    "latency_p50_ms": "end-to-end latency p50: first send to final answer, across retries, ms",
    "latency_p95_ms": "end-to-end latency p95, ms",
    "latency_p99_ms": "end-to-end latency p99, ms",
    "throughput_per_s": "final answers per simulated second of workload",
    "replication_lag_p95_s": "p95 of the per-second replication lag: age of the oldest acked record not yet "
                             "in every other region's object store, s",
    "replication_lag_max_s": "max of that lag, s",
    "divergence_max": "max difference in key counts between regions",
    "divergence_last": "difference in key counts between regions at the last sample (what stayed apart)",
    "divergence_flagged": "geo-divergence checks (one per region and period) whose worst peer comparison was "
                          "warning or critical",
    "conflicts": "pcs_ids acked with different payloads in different regions (split brain: each side "
                 "accepted its own version)",
    "conflicts_flagged": "pcs_ids the reconcilers flagged as conflicting (a record its home region "
                         "answered 409 is replayed as that rejection, not as a new write)",
    "conflicts_won_by_later_write": "split-brain conflicts whose authoritative outcome (the merge: the earliest "
                                    "first_seen stamp wins) is not the write stored first in simulated time -- a "
                                    "region whose clock is behind wins conflicts it lost in time (spec/SPEC.md "
                                    "11.9)",
    "copy_lag_p95_s": "p95 age of a shipped segment's oldest record when its copy lands in another region, s",
    "copy_lag_max_s": "max of that age, s",
    "convergence_time_s": "heal -> the last replicated record applied, s; null when the run ended unconverged "
                          "(INV-CONVERGENCE failed: some region lacks a key or regions disagree), and then an SLO "
                          "on it fails",
    "rpo_s": "at a region loss: age of the oldest acked record not yet copied to another region, s",
    "rto_s": "after a region loss: until a request first sent to the lost region succeeds (elsewhere, or "
             "there after a restart), s; with [routing]: health-check detection + switch + first success",
    "failover_detection_s": "with [routing]: region loss -> the router takes it out of rotation, s",
    "shard_collateral_503": "with a sharded dedup store: 503 answers to keys whose shard (during a migration: "
                            "whose shard in either ring) was up while another shard of the region was down "
                            "(SPEC 13.1: a down shard's keys fail closed, every other key is served -- also "
                            "when it shares a batch with a key of the down shard)",
    "cold_collateral_503": "with a cold_down fault: 503 answers, while the region's cold tier was down, to keys "
                           "first answered there after it went down (new keys: never cold-only; the tiered "
                           "store's cold outage fails cold-only keys alone, also in a batch)",
    "operator_completed": "with [[policies]]: policies the operator brought to Completed",
    "operator_rollbacks": "with [[policies]]: transitions into RollingBack (a gate breach or a dirty verify)",
    "operator_done_s": "with [[policies]]: time from the first to the last policy reaching a terminal phase "
                       "(Completed or RolledBack), simulated s; null if one never did",
    "crr_parked_max": "with replication: most replicated records a region's reader held parked at once (a "
                      "partial dedup store answer, one shard down, refused them; retried with a backoff while the "
                      "others are applied: SPEC 11.2)",
    "crr_apply_lag_max_s": "with replication: the largest apply lag (the reading region's clock at the apply "
                           "minus the record's received_at) of a replicated record applied when first read -- a "
                           "parked record's is not counted: only keys whose part of the store answered, s",
    "crr_filtered_records": "with a CRRPolicy: peer records the regions' readers skipped because the applied "
                            "selection excluded their tenant (or region)",
    "crr_outside_selection": "with a CRRPolicy: peer records a region replayed although its applied selection "
                             "excluded them (INV-CRR-SELECTIVE: must be 0)",
}
SERIES: dict[str, str] = {
    "t_s": "start of the one-second bin, simulated s",
    "sent": "attempts sent in the bin",
    "answered": "attempts answered in the bin",
    "ok": "attempts answered 200/202",
    "attempt_errors": "attempts answered 5xx (per attempt: a retried 503 counts here, not in error_rate)",
    "attempt_rate_429": "share of the bin's answers that were 429 (empty: no answers in the bin)",
    "attempt_429": "attempts answered 429 (overload: the admission limit) in the bin",
    "attempt_p95_ms": "p95 of single attempts answered in the bin (a fast 503 is a short attempt; empty: no "
                      "answers in the bin -- plots draw a gap, never a zero)",
    "faults_active": "faults active at the end of the bin",
    "e2e_p95_ms": "p95 end-to-end latency (first send -> final answer, across retries) of submissions "
                  "finished in the bin (empty: none finished)",
    "e2e_errors": "submissions whose final outcome (in the bin) was a 5xx or giving up",
    "replication_lag_s": "with replication: the replication lag sampled in the bin, worst region (the metric "
                         "replication_lag_p95_s/max_s summarise it), simulated s",
    "replication_lag_s@<region>": "with replication: the same for one region's stream: age of the oldest record "
                                  "that region acked and no other region's store holds yet (it keeps growing "
                                  "while the region is down), s",
    "divergence": "with replication: key-count difference between regions (the metric divergence_max is its "
                  "maximum)",
    "<series>@<region>": "with several regions: sent, answered, ok, attempt_errors, attempt_429 and "
                         "attempt_p95_ms of the attempts sent to that region (the columns without a region "
                         "are the aggregate)",
}
REGION_SERIES = ("sent", "answered", "ok", "attempt_errors", "attempt_429", "attempt_p95_ms")

REPLICATION_METRICS = ("replication_lag_p95_s", "replication_lag_max_s", "copy_lag_p95_s", "copy_lag_max_s",
                       "divergence_max", "divergence_last", "divergence_flagged", "conflicts", "conflicts_flagged",
                       "conflicts_won_by_later_write", "convergence_time_s", "rpo_s", "rto_s", "failover_detection_s",
                       "crr_parked_max", "crr_apply_lag_max_s")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(events: list[dict], duration_s: float, converged: bool | None = None) -> dict:
    """The summary metrics; ``converged`` is INV-CONVERGENCE's verdict on the final state
    (False: ``convergence_time_s`` is None -- the run ended before every region held every key,
    so no convergence time exists and an SLO on it fails with the invariant)."""
    first_send: dict[int, int] = {}
    kind_of: dict[int, str] = {}
    pcs_of: dict[int, tuple] = {}
    conflicted: set[tuple] = set()  # pcs_ids the workload deliberately sent two payloads for
    attempts = skipped = 0
    for e in events:
        if e["type"] == "client.skip":
            skipped += 1
        elif e["type"] == "client.send":
            attempts += 1
            first_send.setdefault(e["req"], e["t_us"])
            kind_of.setdefault(e["req"], e["kind"])
            pcs_of.setdefault(e["req"], (e["tenant"], e["pcs_id"]))
            if e["kind"] == "conflict":
                conflicted.add((e["tenant"], e["pcs_id"]))
    final: dict[int, dict] = {}
    n429 = 0
    for e in events:
        if e["type"] == "client.recv":
            if e["status"] == 429:
                n429 += 1
            final[e["req"]] = e
        elif e["type"] == "client.give_up":
            final[e["req"]] = {"status": None, "t_us": e["t_us"], "reason": e.get("reason")}
    lat = []
    errors = 0
    by_status: dict[str, int] = defaultdict(int)
    for req, t0 in first_send.items():
        f = final.get(req)
        status = f["status"] if f else None
        by_status[str(status)] += 1
        expected_reject = (status == 401 and kind_of[req] in BAD_SIG_KINDS) or (status == 409 and pcs_of[req] in conflicted)
        if status in (200, 202) or expected_reject:
            lat.append((f["t_us"] - t0) / 1000.0)
        else:
            errors += 1
    lat.sort()
    n = len(first_send)
    repl = _replication(events, first_send)
    if repl and converged is False:
        repl["convergence_time_s"] = None
    return {**repl,
        "requests": n,
        "attempts": attempts,
        "retries": attempts - n,
        "skipped_arrivals": skipped,
        "error_rate": errors / n if n else 0.0,
        "errors": errors,
        "rate_429": n429 / attempts if attempts else 0.0,
        "latency_p50_ms": percentile(lat, 50),
        "latency_p95_ms": percentile(lat, 95),
        "latency_p99_ms": percentile(lat, 99),
        "throughput_per_s": len(final) / duration_s if duration_s > 0 else 0.0,
        "by_status": dict(sorted(by_status.items())),
    }


def _end_to_end_bins(events: list[dict], width_us: int) -> dict[int, dict]:
    """Per bin of a submission's final answer: end-to-end latencies (first send -> final
    200/202/4xx answer) and end-to-end errors (final 5xx or gave up)."""
    first: dict[int, int] = {}
    final: dict[int, tuple[int, int | None]] = {}
    for e in events:
        if e["type"] == "client.send":
            first.setdefault(e["req"], e["t_us"])
        elif e["type"] == "client.recv":
            final[e["req"]] = (e["t_us"], e["status"])
        elif e["type"] == "client.give_up":
            final[e["req"]] = (e["t_us"], None)
    out: dict[int, dict] = defaultdict(lambda: {"lat": [], "errors": 0})
    for req, (t_us, status) in final.items():
        row = out[t_us // width_us]
        if status is None or status >= 500:
            row["errors"] += 1
        elif req in first:
            row["lat"].append((t_us - first[req]) / 1000.0)
    return out


def _region_bins(events: list[dict], width_us: int) -> dict[str, dict[int, dict]]:
    """Per region (of the attempt's send) and bin: sent, answered, ok, 5xx, 429 and attempt
    latencies; empty with a single region (the aggregate columns say it all)."""
    sent: dict[tuple, tuple[int, str]] = {}
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    blank = {"sent": 0, "answered": 0, "ok": 0, "attempt_errors": 0, "attempt_429": 0, "lat": []}
    for e in events:
        if e["type"] == "client.send":
            sent[(e["req"], e["attempt"])] = (e["t_us"], e.get("region", ""))
            out[e.get("region", "")].setdefault(e["t_us"] // width_us, {**blank, "lat": []})["sent"] += 1
        elif e["type"] == "client.recv" and (e["req"], e["attempt"]) in sent:
            t0, region = sent[(e["req"], e["attempt"])]
            row = out[region].setdefault(e["t_us"] // width_us, {**blank, "lat": []})
            row["answered"] += 1
            row["ok"] += e["status"] in (200, 202)
            row["attempt_errors"] += e["status"] >= 500
            row["attempt_429"] += e["status"] == 429
            row["lat"].append((e["t_us"] - t0) / 1000.0)
    return dict(sorted(out.items())) if len(out) > 1 else {}


def _region_row(region: str, counts: dict | None) -> dict:
    counts = counts or {"lat": []}
    row = {f"{name}@{region}": counts.get(name, 0) for name in REGION_SERIES if name != "attempt_p95_ms"}
    row[f"attempt_p95_ms@{region}"] = percentile(sorted(counts["lat"]), 95) if counts["lat"] else None
    return row


def timeseries(events: list[dict], bin_s: float = 1.0) -> list[dict]:
    """Per-bin rows: t_s, sent, answered, ok, attempt_errors (5xx answers), attempt_rate_429,
    attempt_p95_ms (per attempt: a fast 503 counts as a short attempt), faults_active, and with
    replication replication_lag_s and divergence."""
    bins: dict[int, dict] = defaultdict(lambda: {"sent": 0, "answered": 0, "ok": 0, "errors": 0, "n429": 0, "lat": []})
    sent_at: dict[tuple, int] = {}
    active = 0
    fault_at: dict[int, int] = {}
    crr_at: dict[int, tuple[float, int]] = {}
    width = int(bin_s * 1_000_000)
    for e in events:
        b = e["t_us"] // width
        t = e["type"]
        if t == "client.send":
            bins[b]["sent"] += 1
            sent_at[(e["req"], e["attempt"])] = e["t_us"]
        elif t == "client.recv":
            row = bins[b]
            row["answered"] += 1
            if e["status"] in (200, 202):
                row["ok"] += 1
            elif e["status"] >= 500:
                row["errors"] += 1
            if e["status"] == 429:
                row["n429"] += 1
            t0 = sent_at.get((e["req"], e["attempt"]))
            if t0 is not None:
                row["lat"].append((e["t_us"] - t0) / 1000.0)
        elif t == "fault.start":
            active += 1
            fault_at[b] = active
        elif t == "fault.end":
            active = max(0, active - 1)
            fault_at[b] = active
        elif t == "crr.sample":
            crr_at[b] = (e["lag_s"], e["divergence"], e.get("by_region") or {})
    rows = []
    last_active = 0
    lag_regions = sorted({r for v in crr_at.values() for r in v[2]})
    e2e = _end_to_end_bins(events, width)
    per_region = _region_bins(events, width)
    last_bin = max([*bins, events[-1]["t_us"] // width]) if bins and events else -1  # the whole run
    for b in range(0, last_bin + 1):
        row = bins.get(b, {"sent": 0, "answered": 0, "ok": 0, "errors": 0, "n429": 0, "lat": []})
        last_active = fault_at.get(b, last_active)
        lat = sorted(row["lat"])
        rows.append({
            "t_s": b * bin_s, "sent": row["sent"], "answered": row["answered"], "ok": row["ok"],
            "attempt_errors": row["errors"],
            "attempt_rate_429": row["n429"] / row["answered"] if row["answered"] else None,
            "attempt_429": row["n429"],
            "attempt_p95_ms": percentile(lat, 95) if lat else None, "faults_active": last_active,
            "e2e_p95_ms": percentile(sorted(e2e[b]["lat"]), 95) if b in e2e and e2e[b]["lat"] else None,
            "e2e_errors": e2e[b]["errors"] if b in e2e else 0,
        })
        for region, region_bins in per_region.items():
            rows[-1].update(_region_row(region, region_bins.get(b)))
        if crr_at:  # a bin without a sample has no value (a gap, not a zero)
            lag, div, by_region = crr_at.get(b, (None, None, {}))
            rows[-1]["replication_lag_s"] = lag
            rows[-1]["divergence"] = div
            for region in lag_regions:
                rows[-1][f"replication_lag_s@{region}"] = by_region.get(region)
    return rows


def check_slos(metrics: dict, slos: list[dict]) -> list[dict]:
    ops = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
           ">": lambda a, b: a > b, "==": lambda a, b: a == b}
    out = []
    for s in slos:
        value = metrics.get(s["metric"])
        ok = value is not None and ops[s["op"]](value, s["value"])
        out.append({"metric": s["metric"], "op": s["op"], "target": s["value"], "value": value, "ok": bool(ok)})
    return out


def shard_collateral(events: list[dict], owners: dict) -> int:
    """``shard_collateral_503``: ``owners`` maps a region with a sharded dedup store to
    ``(tenant, pcs_id) -> the shards the key may touch`` (during a migration, its owner in
    each ring); a 503 counts when none of them was down."""
    down: dict[str, set] = defaultdict(set)
    n = 0
    for e in events:
        kind = e["type"]
        if kind in ("fault.start", "fault.end") and e.get("kind") == "shard_down":
            region, _, shard = e["target"].partition("/")
            (down[region].add if kind == "fault.start" else down[region].discard)(shard)
        elif kind == "srv.respond" and e["status"] == 503 and e.get("key") and down[e["region"]]:
            owner = owners.get(e["region"])
            if owner is not None and down[e["region"]].isdisjoint(owner(*e["key"])):
                n += 1
    return n


def cold_collateral(events: list[dict]) -> int:
    """``cold_collateral_503`` (0 without a ``cold_down`` fault)."""
    down_since: dict[str, int] = {}
    first: dict[tuple, int] = {}
    n = 0
    for e in events:
        kind = e["type"]
        if kind in ("fault.start", "fault.end") and e.get("kind") == "cold_down":
            if kind == "fault.start":
                down_since[e["target"]] = e["t_us"]
            else:
                down_since.pop(e["target"], None)
        elif kind == "srv.respond" and e.get("key"):
            region = e["region"]
            key = (region, *e["key"])
            seen = first.setdefault(key, e["t_us"])
            since = down_since.get(region)
            if e["status"] == 503 and since is not None and seen >= since:
                n += 1
    return n


def split_brain_conflicts(events: list[dict]) -> int:
    """pcs_ids that two regions each stored (acked) with a different payload."""
    digests: dict[tuple, set[str]] = defaultdict(set)
    for e in events:
        if e["type"] == "srv.dedup_put" and e["stored"] and e["status"] in (200, 202):
            digests[(e["tenant"], e["pcs_id"])].add(e["digest"])
    return sum(1 for d in digests.values() if len(d) > 1)


def conflicts_won_by_later_write(events: list[dict]) -> int:
    """Keys acked with different payloads in different regions whose authoritative outcome
    (``final.auth``) is not the payload stored first in simulated time."""
    first: dict[tuple, tuple[int, str]] = {}
    digests: dict[tuple, set[str]] = defaultdict(set)
    auth: dict[tuple, str] = {}
    for e in events:
        if e["type"] == "srv.dedup_put" and e["stored"] and e["status"] in (200, 202):
            key = (e["tenant"], e["pcs_id"])
            digests[key].add(e["digest"])
            if key not in first or e["t_us"] < first[key][0]:
                first[key] = (e["t_us"], e["digest"])
        elif e["type"] == "final.auth":
            auth.setdefault((e["tenant"], e["pcs_id"]), e["digest"])
    return sum(1 for key, d in digests.items() if len(d) > 1 and key in auth and auth[key] != first[key][1])


def _rto(events: list[dict], crash: dict) -> float:
    """From a region's crash to the first success (in any region) of a request first sent to
    that region after it died: detection + switch + first success, or the restart if sooner."""
    t0, dead = crash["t_us"], crash["target"]
    first: dict[int, tuple[int, str]] = {}
    for e in events:
        if e["type"] == "client.send" and e["attempt"] == 1:
            first.setdefault(e["req"], (e["t_us"], e["region"]))
    hit = [e["t_us"] for e in events if e["type"] == "client.recv" and e["t_us"] >= t0 and e["status"] in (200, 202)
           and first.get(e["req"], (0, ""))[1] == dead and first[e["req"]][0] >= t0]
    return (min(hit) - t0) / 1e6 if hit else 0.0


def _detection(events: list[dict], crashes: list[dict]) -> float:
    """Longest time from a region's crash to the router marking it down (0 without routing)."""
    downs = [e for e in events if e["type"] == "route.down"]
    worst = 0.0
    for crash in crashes:
        later = [e["t_us"] for e in downs if e["region"] == crash["target"] and e["t_us"] >= crash["t_us"]]
        if later:
            worst = max(worst, (min(later) - crash["t_us"]) / 1e6)
    return worst


def _replication(events: list[dict], first_send: dict[int, int]) -> dict:
    """Replication figures: lag, divergence, RPO at crashes, RTO of failovers, convergence time."""
    samples = [e for e in events if e["type"] == "crr.sample"]
    if not samples:
        return {}
    lags = sorted(e["lag_s"] for e in samples)
    copies = sorted(e["age_s"] for e in events if e["type"] == "crr.copied")
    heal_t = next((e["t_us"] for e in events if e["type"] == "phase" and e["name"] == "heal"), None)
    applied = [e["t_us"] for e in events if e["type"] == "crr.applied"]
    conv = max(0.0, (max(applied) - heal_t) / 1e6) if applied and heal_t is not None else 0.0
    crashes = [e for e in events if e["type"] == "fault.start" and e["kind"] == "crash"]
    rpo = max((e.get("rpo_s", 0.0) for e in crashes), default=0.0)
    rto = max((_rto(events, crash) for crash in crashes), default=0.0)
    return {
        "replication_lag_p95_s": percentile(lags, 95),
        "replication_lag_max_s": lags[-1],
        "divergence_max": max(e["divergence"] for e in samples),
        "divergence_last": samples[-1]["divergence"],
        "divergence_flagged": sum(1 for e in events if e["type"] == "crr.divergence" and e["worst"] != "ok"),
        "conflicts": split_brain_conflicts(events),
        "conflicts_flagged": samples[-1]["conflicts"],
        "conflicts_won_by_later_write": conflicts_won_by_later_write(events),
        "copy_lag_p95_s": percentile(copies, 95),
        "copy_lag_max_s": copies[-1] if copies else 0.0,
        "convergence_time_s": conv,
        "rpo_s": rpo,
        "rto_s": rto,
        "failover_detection_s": _detection(events, crashes),
        "crr_parked_max": max((e["parked"] for e in events if e["type"] == "crr.parked"), default=0),
    }


def reference_markdown() -> str:
    """``sim/METRICS.md``: every summary metric and time-series column, one definition each."""
    out = ["# Simulator metrics", "",
           "Generated from `flk.sim.metrics` (`flk sim reference --metrics`); a test checks it is current.", "",
           "## Summary (`results.json` \"metrics\", SLO `metric`, study `headline`)", "",
           "End to end = from a submission's first send to its final answer, across retries and failovers; "
           "per attempt = one request/answer exchange.", "", "| metric | definition |", "|---|---|"]
    out += [f"| `{name}` | {doc} |" for name, doc in METRICS.items()]
    out += ["", "## Time series (`metrics.csv`, one row per simulated second)", "", "| column | definition |",
            "|---|---|"]
    out += [f"| `{name}` | {doc} |" for name, doc in SERIES.items()]
    return "\n".join(out) + "\n"
