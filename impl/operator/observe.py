"""A health sample from two scrapes of a server's ``/metrics`` (Prometheus text).

Why this module exists: the deployed controller sees only what a server
exposes. Between two scrapes it takes the *deltas* of

* ``flk_http_latency_seconds`` buckets -> the p95 of the submits answered in
  between (the upper bound of the bucket holding the 95th percentile, ms;
  above the last finite bucket: that bound, marked ``latency_p95_capped``);
* ``flk_http_requests{route="/v1/pcs/submit"}`` by status -> ``error_rate``
  (5xx share);
* ``flk_dedup_hits`` / ``flk_ingest`` -> ``dedup_hit_ratio``.

and, a gauge read as it is (the largest over servers), ``flk_crr_replication_lag_seconds``
-> ``replication_lag_s`` (CRRPolicy's ``max_replication_lag_s`` gate).

Counters summed over label sets (tenants, workers as scraped). A delta with
no request gives None metrics (the gate sees no sample). Pure parsing: the
caller does the HTTP and passes ``now``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """``{"buckets": {le: count}, "requests": {status: count}, "hits": n, "ingest": n}``."""
    out = {"buckets": {}, "requests": {}, "hits": 0.0, "ingest": 0.0}
    for line in text.splitlines():
        mt = LINE.match(line)
        if not mt or line.startswith("#"):
            continue
        name, labels, raw = mt.group(1), dict(LABEL.findall(mt.group(2) or "")), mt.group(3)
        try:
            v = float(raw)
        except ValueError:
            continue
        if not math.isfinite(v):
            continue
        if name == "flk_http_latency_seconds_bucket" and "le" in labels:
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            out["buckets"][le] = out["buckets"].get(le, 0.0) + v
        elif name == "flk_http_requests_total" and labels.get("route") == "/v1/pcs/submit":
            out["requests"][labels.get("status", "")] = out["requests"].get(labels.get("status", ""), 0.0) + v
        elif name == "flk_dedup_hits_total":
            out["hits"] += v
        elif name == "flk_ingest_total":
            out["ingest"] += v
        elif name == "flk_crr_replication_lag_seconds":
            out["crr_lag"] = max(out.get("crr_lag", v), v)
    return out


def merge(parsed: list[dict]) -> dict:
    out = {"buckets": {}, "requests": {}, "hits": 0.0, "ingest": 0.0}
    for p in parsed:
        for k in ("buckets", "requests"):
            for key, v in p[k].items():
                out[k][key] = out[k].get(key, 0.0) + v
        out["hits"] += p["hits"]
        out["ingest"] += p["ingest"]
        if "crr_lag" in p:
            out["crr_lag"] = max(out.get("crr_lag", p["crr_lag"]), p["crr_lag"])
    return out


def sample(before: Mapping, after: Mapping, now: float) -> dict:
    """The health sample of the interval between two parsed scrapes."""
    les = sorted(after["buckets"])
    delta = [max(0.0, after["buckets"][le] - before["buckets"].get(le, 0.0)) for le in les]
    out: dict = {"t": now, "latency_p95_ms": None, "error_rate": None, "dedup_hit_ratio": None}
    if les and delta[-1] > 0:  # cumulative buckets: the last (+Inf) holds the total
        target = 0.95 * delta[-1]
        finite = [le for le in les if le != math.inf]
        for le, n in zip(les, delta, strict=True):
            if n >= target:
                capped = le == math.inf
                out["latency_p95_ms"] = (finite[-1] if capped and finite else le) * 1000.0
                out["latency_p95_capped"] = capped
                break
    req = {s: after["requests"][s] - before["requests"].get(s, 0.0) for s in after["requests"]}
    total = sum(v for v in req.values() if v > 0)
    if total > 0:
        out["error_rate"] = sum(v for s, v in req.items() if s.startswith("5") and v > 0) / total
        out["requests"] = total
    if "crr_lag" in after:
        out["replication_lag_s"] = after["crr_lag"]
    ing = after["ingest"] - before["ingest"]
    if ing > 0:
        out["dedup_hit_ratio"] = max(0.0, after["hits"] - before["hits"]) / ing
    return out
