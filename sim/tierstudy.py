"""The tiering study: TTL-only vs predictive tiering on the same seeded workloads.

Why this module exists: the seeds claim predictive promotion cuts storage cost
by 50-70 %. This study runs the real :class:`~flk.impl.dedup.tiered.TieredStore`
(memory hot and warm tiers, an in-memory object store as cold) under simulated
time, reconciled by the real controller (:func:`flk.impl.operator.reconcile`
with a ``TieringPolicy``: ``tier.configure`` sets the TTLs, ``tier.prewarm``
pre-warms the keys :func:`flk.impl.operator.tiering.plan_prewarm` picks) and
prices it with the policy's cost model. It is a study driver of its own (the
store and controller are sans-I/O; no network is involved, so no SimPy world).

Workload (per tenant, seeded ``random.Random``): keys are written as a Poisson
stream; each key gets a Zipf popularity; reads (duplicate submissions /
re-reads) arrive with an access *pattern*:

* ``diurnal`` -- the read rate follows a 24-cycle sine (a phase per tenant),
  keys chosen by popularity (Zipf re-reads);
* ``bursty``  -- a steady rate plus a daily burst at a tenant's own hour, keys by popularity;
* ``zipf``    -- a steady rate, keys by popularity;
* ``none``    -- the counterfactual: a steady rate, keys uniformly at random (no
  pattern in time or in keys: prediction must not win).

Arms (:data:`ARMS`): ``ttl`` the TTL-only store at the lab's TTLs (hot 1 cycle,
warm 24 cycles); ``ttl-short`` TTL-only demoting after 2 cycles; ``ewma`` and
``holt-winters`` demote after 2 cycles and pre-warm under the budget.

Figures per run (:func:`run`): monthly storage cost and total cost (storage +
cold GETs + promotions) per million keys, read latency p95/p99 of reads of keys
older than 2 cycles ("cold-read latency": what demotion can slow), cold misses,
promotions and wasted promotions (pre-warmed and not read while hot).
:func:`study` runs arms x seeds and gives means with 95 % CIs (Student t).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

from flk.impl.dedup.base import StoredOutcome
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.tiered import TieredStore, TierTTL
from flk.impl.operator import reconcile
from flk.impl.operator.policy import check_policy
from flk.impl.operator.tiering import monthly_cost
from flk.impl.storage.objectstore import MemoryObjectStore

from ..impl.core import textdata

CYCLE_S = 3600.0
PATTERNS = ("diurnal", "bursty", "zipf", "none")
ARMS = {
    "ttl": {"forecaster": "none", "hot_s": 3600.0, "warm_s": 86400.0},
    "ttl-short": {"forecaster": "none", "hot_s": 3600.0, "warm_s": 7200.0},
    "ewma": {"forecaster": "ewma", "hot_s": 3600.0, "warm_s": 7200.0},
    "holt-winters": {"forecaster": "holt-winters", "hot_s": 3600.0, "warm_s": 7200.0},
}
T0 = 1_700_000_000.0
BODY = 360  # bytes of an outcome body (the verifier's JSON answer is about this size)


@dataclass(frozen=True)
class Workload:
    pattern: str = "diurnal"
    tenants: int = 3
    cycles: int = 96
    writes_per_cycle: float = 10.0
    reads_per_cycle: float = 30.0
    zipf_s: float = 1.1
    budget: int = 40


def _outcome(i: int, now: float, rng: random.Random) -> StoredOutcome:
    body = (f'{{"accepted":true,"pcs_id":"{i:064x}","pad":"' + "x" * (BODY - 110) + f'","r":{rng.random():.6f}}}')
    return StoredOutcome(f"{i:064x}", 200, body.encode(), now, "r1", "1.0.0")


def _rate(w: Workload, tenant: int, cycle_pos: float) -> float:
    """Reads per cycle of ``tenant`` at time ``cycle_pos`` (in cycles)."""
    base = w.reads_per_cycle
    if w.pattern == "diurnal":
        return base * max(0.0, 1.0 + 0.95 * math.sin(2 * math.pi * (cycle_pos + 7 * tenant) / 24.0))
    if w.pattern == "bursty":
        burst_hour = (5 + 8 * tenant) % 24
        return base * (0.4 + (7.0 if int(cycle_pos) % 24 == burst_hour else 0.0))
    return base


def _events(w: Workload, seed: int) -> list[tuple]:
    """Every write and read of the run, in time order: (t, kind, tenant, key index or None, u)."""
    rng = random.Random(f"tierstudy:{seed}:{w.pattern}")
    out = []
    for t in range(w.tenants):
        now = 0.0
        while True:
            now += rng.expovariate(w.writes_per_cycle / CYCLE_S)
            if now >= w.cycles * CYCLE_S:
                break
            out.append((now, 0, t, None, rng.random()))
        peak = max(_rate(w, t, c / 10) for c in range(240))
        now = 0.0
        while True:  # thinning: a Poisson process with the pattern's rate
            now += rng.expovariate(peak / CYCLE_S)
            if now >= w.cycles * CYCLE_S:
                break
            if rng.random() * peak <= _rate(w, t, now / CYCLE_S):
                out.append((now, 1, t, None, rng.random()))
    out.sort(key=lambda e: (e[0], e[1], e[2], e[4]))
    return out


class _Run:
    def __init__(self, w: Workload, arm: str, seed: int) -> None:
        self.w, self.arm = w, arm
        self.rng = random.Random(f"tierstudy-run:{seed}")
        spec = {**ARMS[arm], "cycle_s": CYCLE_S, "max_promotions_per_cycle": w.budget, "season_bins": 24}
        self.policy = check_policy({"kind": "TieringPolicy", "name": arm, "spec": spec})
        self.cost = self.policy.spec["cost"]
        self.store = TieredStore(MemoryStore(), MemoryStore(), MemoryObjectStore(), ttl=TierTTL(3600.0, 86400.0))
        self.keys: list[list[tuple[str, float, float]]] = [[] for _ in range(w.tenants)]  # (pcs_id, written, pop)
        self.cum: list[list[float]] = [[] for _ in range(w.tenants)]  # running sums of popularity
        self.reads: dict[tuple[str, str], int] = {}
        self.history = {f"t{t}": [] for t in range(w.tenants)}
        self.cycle_cold = [0] * w.tenants
        self.status, self.generation = None, None
        self.prewarmed: dict[tuple[str, str], float] = {}  # key -> hot until
        self.f = {"reads": 0, "old_reads": 0, "cold_misses": 0, "promotions": 0, "wasted": 0, "useful": 0,
                  "cold_gets": 0, "hot_bs": 0.0, "warm_bs": 0.0, "cold_bs": 0.0, "keys": 0}
        self.old_lat: list[float] = []

    def write(self, now: float, t: int, u: float) -> None:
        i = self.f["keys"]
        self.f["keys"] += 1
        pid = f"{i:064x}"
        o = _outcome(i, T0 + now, self.rng)
        self.store.put_if_absent(f"t{t}", pid, o, T0 + now)
        self.f["hot_bs"] += len(o.body) * self.store.ttl.hot_s
        pop = (1.0 - u) ** (-1.0 / self.w.zipf_s) if self.w.pattern != "none" else 1.0  # Pareto ~ Zipf weights
        self.keys[t].append((pid, now, pop))
        self.cum[t].append((self.cum[t][-1] if self.cum[t] else 0.0) + pop)

    def read(self, now: float, t: int, u: float) -> None:
        keys = self.keys[t]
        if not keys:
            return
        if self.w.pattern == "none":
            pid, written, _ = keys[min(len(keys) - 1, int(u * len(keys)))]
        else:
            cum = self.cum[t]
            pid, written, _ = keys[min(len(keys) - 1, bisect.bisect_left(cum, u * cum[-1]))]
        tenant, at = f"t{t}", T0 + now
        tier = self.store.tier_of(tenant, pid, at)
        self.store.get(tenant, pid, at)
        lat = {"hot": self.cost["hot_read_ms"], "warm": self.cost["warm_read_ms"]}.get(tier, self.cost["cold_read_ms"])
        self.f["reads"] += 1
        key = (tenant, pid)
        self.reads[key] = self.reads.get(key, 0) + 1
        if key in self.prewarmed and tier == "hot" and at <= self.prewarmed[key]:
            self.f["useful"] += 1
            del self.prewarmed[key]
        if tier == "cold":
            self.f["cold_misses"] += 1
            self.f["cold_gets"] += 1
            self.f["hot_bs"] += BODY * self.store.ttl.hot_s
        if now - written >= 7200.0:
            self.f["old_reads"] += 1
            self.old_lat.append(lat)
            self.cycle_cold[t] += 1

    def cycle(self, now: float) -> None:
        at = T0 + now
        self.store.demote_step(at, max_items=100_000)
        for t in range(self.w.tenants):
            self.history[f"t{t}"].append(float(self.cycle_cold[t]))
            self.cycle_cold[t] = 0
        self._expire_prewarmed(at)
        self._sample_bytes(at)
        tier = {"generation": self.generation, "history": self.history, "candidates": self._candidates(now)}
        res = reconcile(self.policy, self.status, {"tier": tier}, at)
        self.status = res.status
        for a in res.actions:
            if a["op"] == "tier.configure":
                self.store.ttl = TierTTL(a["hot_s"], a["warm_s"])
                self.generation = a["generation"]
            elif a["op"] == "tier.prewarm":
                for tenant, pid in a["keys"]:
                    if self.store.prewarm(tenant, pid, at):
                        if (tenant, pid) in self.prewarmed:  # its last pre-warm was never read
                            self.f["wasted"] += 1
                        self.f["promotions"] += 1
                        self.f["cold_gets"] += 1
                        self.f["hot_bs"] += BODY * self.store.ttl.hot_s
                        self.prewarmed[(tenant, pid)] = at + self.store.ttl.hot_s

    def _candidates(self, now: float) -> list[list]:
        """Keys old enough to be cold, weighted by the reads the store saw (+1)."""
        out = []
        limit = now - self.store.ttl.warm_s
        for t, keys in enumerate(self.keys):
            tenant = f"t{t}"
            out += [[tenant, pid, self.reads.get((tenant, pid), 0) + 1] for pid, written, _ in keys if written <= limit]
        return out

    def _expire_prewarmed(self, at: float) -> None:
        for key in [k for k, until in self.prewarmed.items() if until <= at]:
            self.f["wasted"] += 1
            del self.prewarmed[key]

    def _sample_bytes(self, at: float) -> None:
        warm = sum(len(o.body) + 96 for _t, _p, o in self.store.warm._unsorted_live(at))
        cold = sum(len(d) for d, _m in self.store.cold._objects.values())
        self.f["warm_bs"] += warm * CYCLE_S
        self.f["cold_bs"] += cold * CYCLE_S


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100.0 * len(s)))]


def run(w: Workload, arm: str, seed: int) -> dict:
    """One arm on one seeded workload: the figures of the module docstring."""
    r = _Run(w, arm, seed)
    events = _events(w, seed)
    nxt = 0.0
    for now, kind, t, _k, u in events:
        while now >= nxt:
            r.cycle(nxt)
            nxt += CYCLE_S
        (r.write if kind == 0 else r.read)(now, t, u)
    span = w.cycles * CYCLE_S
    r._expire_prewarmed(T0 + span + 1e9)
    f = r.f
    cost = monthly_cost(r.cost, {"hot": f["hot_bs"], "warm": f["warm_bs"], "cold": f["cold_bs"]}, span,
                        f["cold_gets"], f["promotions"])
    per_m = 1e6 / max(1, f["keys"])
    return {"arm": arm, "pattern": w.pattern, "seed": seed, "keys": f["keys"], "reads": f["reads"],
            "storage_cost": cost["storage"] * per_m, "total_cost": cost["total"] * per_m,
            "below_hot_cost": (cost["by_tier"]["warm"] + cost["by_tier"]["cold"]) * per_m,
            "hot_cost": cost["by_tier"]["hot"] * per_m,
            "old_read_p95_ms": _pct(r.old_lat, 95), "old_read_p99_ms": _pct(r.old_lat, 99),
            "old_read_mean_ms": sum(r.old_lat) / len(r.old_lat) if r.old_lat else 0.0,
            "old_miss_share": f["cold_misses"] / f["old_reads"] if f["old_reads"] else 0.0,
            "cold_misses": f["cold_misses"], "promotions": f["promotions"], "wasted": f["wasted"],
            "useful": f["useful"], "waste_share": f["wasted"] / f["promotions"] if f["promotions"] else 0.0}


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student t)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


FIGURES = ("storage_cost", "below_hot_cost", "hot_cost", "total_cost", "old_read_p95_ms", "old_read_p99_ms", "old_read_mean_ms", "old_miss_share",
           "cold_misses", "promotions", "wasted", "waste_share")


def study(patterns=("diurnal", "none"), seeds=range(1, 11), arms=tuple(ARMS), **workload) -> list[dict]:
    """Rows per (pattern, arm): mean and 95 % CI half-width of every figure over the seeds,
    plus the storage saving against the ``ttl`` arm of the same seeds."""
    rows = []
    for pattern in patterns:
        w = Workload(pattern=pattern, **workload)
        runs = {arm: [run(w, arm, s) for s in seeds] for arm in arms}
        base = runs.get("ttl")
        for arm in arms:
            row = {"pattern": pattern, "arm": arm, "seeds": len(runs[arm])}
            for fig in FIGURES:
                row[fig], row[fig + "_ci"] = ci95([x[fig] for x in runs[arm]])
            if base:
                for fig in ("storage_cost", "below_hot_cost"):
                    saving = [1 - x[fig] / b[fig] for x, b in zip(runs[arm], base, strict=True)]
                    row[f"{fig}_saving"], row[f"{fig}_saving_ci"] = ci95(saving)
            rows.append(row)
    return rows


def load_study(path: str) -> dict:
    """A tiering study file (``sim/studies/*.toml``): ``[workload]`` (the fields of :class:`Workload`
    but ``pattern``) and ``[study]`` (patterns, arms, seeds), checked against one schema."""
    import tomllib

    from .schema import Context, Field, ScenarioError, check_table

    with open(path, "rb") as fh:
        try:
            doc = textdata.toml_load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError("toml", f"not valid TOML: {exc}", source=path) from None
    wl = (Field("tenants", "int", 3, "tenants", minimum=1), Field("cycles", "int", 96, "cycles", minimum=25),
          Field("writes_per_cycle", "number", 10.0, "writes per tenant and cycle", minimum=0.001),
          Field("reads_per_cycle", "number", 30.0, "reads per tenant and cycle", minimum=0.001),
          Field("zipf_s", "number", 1.1, "popularity skew", minimum=0.01),
          Field("budget", "int", 40, "pre-warm budget per cycle", minimum=0))
    st = (Field("patterns", "str_list", ["diurnal", "none"], "access patterns", choices=PATTERNS),
          Field("arms", "str_list", list(ARMS), "arms", choices=tuple(ARMS)),
          Field("seeds", "int", 10, "seeds 1..N", minimum=2),
          Field("description", "str", "", "what the study asks"))
    for name, fields in (("workload", wl), ("study", st)):
        try:
            check_table(doc.get(name, {}), fields, name, Context())
        except ScenarioError as exc:
            raise ScenarioError(exc.key, exc.reason, source=path) from None
    extra = sorted(set(doc) - {"workload", "study"})
    if extra:
        raise ScenarioError(extra[0], "unknown section (known: study, workload)", source=path)
    return {"workload": dict(doc.get("workload", {})), "patterns": doc.get("study", {}).get("patterns", ["diurnal", "none"]),
            "arms": doc.get("study", {}).get("arms", list(ARMS)), "seeds": int(doc.get("study", {}).get("seeds", 10))}


def study_path(name: str) -> str:
    """The path of a shipped study file (``sim/studies/<name>.toml``), or ``name`` if it is a path."""
    from importlib import resources

    return name if name.endswith(".toml") else str(resources.files("flk.sim") / "studies" / f"{name}.toml")


def study_file(name: str, seeds: int | None = None, patterns=None) -> list[dict]:
    """:func:`study` with a study file's parameters (``seeds``/``patterns`` override the file's)."""
    cfg = load_study(study_path(name))
    return study(tuple(patterns or cfg["patterns"]), range(1, (seeds or cfg["seeds"]) + 1), tuple(cfg["arms"]),
                 **cfg["workload"])
