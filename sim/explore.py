"""``flk sim explore``: search for bugs until a budget is spent (swarm testing).

Why this module exists: the catalog finds bugs only where someone wrote a scenario for them.
Exploration runs seed after seed until a wall-clock budget (or a run count) is spent; in
*swarm* mode every seed draws its own scenario from the declared space :data:`SPACE`
(topology size, which fault kinds are on and how many of each, when and how long, the
workload mix, tenants and rates), so most runs exercise a few fault kinds hard instead of
every kind a little (swarm testing: Groce et al., TigerBeetle's VOPR).

A drawn scenario is data: the catalog scenario :data:`BASE` plus ``key=value`` overrides
(:func:`draw`), so ``flk sim run nemesis-random --seed S --set ...`` replays it exactly and
a failing run's folder holds the ``scenario.toml`` that ran. The draw uses its own RNG
stream (:func:`flk.sim.rng.derive_seed` of the seed and ``"swarm"``): the same seed and code
give the same scenario in any process.

Modes (:data:`MODES`):

* ``safety`` -- faults keep coming for the whole workload phase (the drawn faults plus a
  seeded nemesis at a high rate, no count limit); only ``always`` invariants are judged.
* ``liveness`` -- the drawn faults all end before the workload does; the cluster heals and
  must converge and deliver (``eventually`` invariants judged too) within a quiescence bound
  scaled from the scenario's parameters (:func:`liveness_bound`). Its agents keep an outbox
  (``workload.outbox``): delivery is what the outbox promises (INV-AT-LEAST-ONCE), and a
  record the client gave up on during the faults is sent again by the next drain
  (``workload.outbox_drain_s``). Without one, a give-up during the faults (seeds 27000238,
  27000484 and 27000491: 11 to 14 of 14 attempts refused while the regions were down -- in under
  0.4 s where two or three regions were tried in turn -- the last answer a 429 in two of them)
  was the abandonment of a record nothing kept, not a delivery the healed cluster failed.

A "sometimes" check that fails is never a bug here (the drawn mix did not reach that
situation): it is a coverage miss (:mod:`flk.sim.coverage`).

Every failure is shrunk (:func:`flk.sim.api.shrink`, the existing ``flk sim shrink``) and
deduplicated by its signature: the failed check plus the fault kinds of the minimal case.
Runs go to a process pool or a Dask scheduler (:func:`execute`); nothing here reads the
wall clock except the budget and the throughput figures in the summary.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..impl.core import textdata
from .rng import derive_seed
from .sweep import dask_client, process_pool

BASE = "nemesis-random"  # the catalog scenario every drawn scenario overrides
MODES = ("safety", "liveness")
JUDGED = {"safety": ("always",), "liveness": ("always", "eventually")}
DEFAULT_SHRINK_RUNS = 60

# -- the declared swarm space -------------------------------------------------------------------
# every dimension a seed draws, with its choices (a tuple: uniform) or range (lo, hi)
SPACE: dict[str, dict] = {
    "regions": {"choices": (1, 1, 2, 3), "doc": "regions r1..rN (two or more: replication on)"},
    "dedup": {"choices": ("memory", "memory", "sharded", "migrating"), "doc": "every region's dedup store kind"},
    "tenants": {"choices": (1, 2, 3, 4, 5), "doc": "tenants t0..tN-1"},
    "agents": {"range": (2, 8), "doc": "agents"},
    "rate_per_s": {"range": (40, 160), "doc": "submissions per simulated second"},
    "duration_s": {"range": (6, 12), "doc": "workload (fault) phase, s"},
    "dup_rate": {"choices": (0.0, 0.05, 0.15, 0.3), "doc": "share of duplicates"},
    "conflict_rate": {"choices": (0.0, 0.0, 0.02), "doc": "share of same-region conflicts"},
    "bad_sig_rate": {"choices": (0.0, 0.0, 0.02), "doc": "share of bad signatures"},
    "cross_region_conflict_rate": {"choices": (0.0, 0.05), "doc": "replicated: cross-region conflicts"},
    "fault_p": {"range": (0.2, 0.6), "doc": "probability each applicable fault kind is on"},
    "faults_per_kind": {"range": (1, 3), "doc": "faults of each enabled kind"},
    "fault_duration_s": {"range": (0.3, 4.0), "doc": "each fault's length, s"},
    "nemesis_rate_per_min": {"range": (10, 40), "doc": "safety mode: the nemesis's mean faults per minute"},
}
# fault kinds the swarm may enable; the predicate says when a kind applies to the drawn topology
FAULT_KINDS: dict[str, Callable[[dict], bool]] = {
    "crash": lambda t: True,
    "pause": lambda t: True,
    "partition": lambda t: True,
    "store_down": lambda t: True,
    "store_latency": lambda t: True,
    "disk_slow": lambda t: True,
    "clock_skew": lambda t: True,
    "rotate_key": lambda t: True,
    "agent_crash": lambda t: True,
    "shard_down": lambda t: t["dedup"] in ("sharded", "migrating"),
    "migrate": lambda t: t["dedup"] == "migrating",
    "ship_stop": lambda t: t["regions"] > 1,
    "objstore_down": lambda t: t["regions"] > 1,
    "reader_rewind": lambda t: t["regions"] > 1,
    "bitflip_shipped": lambda t: t["regions"] > 1,
}
ONCE = ("migrate",)  # a region's 3 -> 4 shard migration runs once (a second one has nothing to migrate to)
NEMESIS_SAFE = ("crash", "pause", "partition", "store_down", "store_latency", "disk_slow", "clock_skew")


def _pick(rng, dim: str):
    spec = SPACE[dim]
    if "choices" in spec:
        return spec["choices"][rng.randrange(len(spec["choices"]))]
    lo, hi = spec["range"]
    if isinstance(lo, int) and isinstance(hi, int):
        return rng.randint(lo, hi)
    return round(rng.uniform(lo, hi), 2)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _fault(rng, kind: str, at: float, dur: float, regions: list[str], tenants: int, dedup: str = "memory") -> dict:
    target = regions[rng.randrange(len(regions))]
    f: dict = {"kind": kind, "at_s": at}
    if kind in ("rotate_key",):
        if rng.random() < 0.5:
            f["tenant"] = f"t{rng.randrange(tenants)}"
        return f
    f["duration_s"] = dur
    if kind == "agent_crash":
        return f
    if kind == "migrate":
        f["target"] = target
        del f["duration_s"]
        return f
    if kind == "partition":
        others = [r for r in regions if r != target]
        if others and rng.random() < 0.6:
            f["a"], f["b"] = [target], others  # cuts replication
        else:
            f["a"], f["b"] = [target], ["clients"]
        return f
    f["target"] = target
    if kind == "clock_skew":
        f["skew_s"] = rng.choice((-60.0, -20.0, -5.0, 5.0, 20.0, 60.0))
    elif kind == "shard_down":  # a migrating store's new shard s3 (the one a migration fills) more often
        f["shard"] = rng.choice(("s0", "s1", "s2", "s3", "s3", "s3")) if dedup == "migrating" else f"s{rng.randrange(3)}"
    elif kind == "store_latency":
        f["ms"] = rng.choice((20.0, 100.0, 400.0))
    elif kind == "store_down":  # refused at once, or frozen (each call waits the store timeout)
        f["mode"] = rng.choice(("refuse", "hang"))
    elif kind == "disk_slow":
        f["factor"] = rng.choice((5.0, 20.0, 100.0))
    return f


@functools.lru_cache(maxsize=8)  # a pure function of max_inflight: built once, not per drawn seed
def longest_retry_after_wait(max_inflight: int = 256) -> float:
    """The longest wait a simulated client can be told to make after one refusal once the
    cluster has healed, from the shipped policies themselves: the AIMD limit's Retry-After at
    its floor (a limit collapsed by the outage's 503s and slow answers:
    ``ceil(target latency * min(max_inflight, 256) / min_inflight)``, 8 s with the server's defaults) or
    the dedup breaker's (``open_s``), whichever is longer, stretched by the client's Retry-After
    jitter to up to twice that (:func:`flk.impl.agent.client.retry_after_wait`, capped by the
    simulated agents' ``max_retry_after``)."""
    import math

    from flk.impl.agent.client import RetryPolicy, retry_after_wait
    from flk.impl.verifier.admission import AdmissionSettings, build_admission

    from .workload import MAX_RETRY_AFTER_S

    adm = build_admission(AdmissionSettings.from_mapping({"max_inflight": int(max_inflight)}))
    adm.limiter.limit = float(adm.limiter.min_limit)  # collapsed to its floor
    told = max(adm.limiter.retry_after(), math.ceil(adm.breaker.open_s))
    return retry_after_wait(RetryPolicy(max_retry_after=MAX_RETRY_AFTER_S), float(told), 1.0)


def liveness_bound(duration_s: float, regions: int, faults: list[dict], backoff_cap_ms: float = 2000.0,
                   max_inflight: int = 256) -> float:
    """The quiescence a liveness run gets to heal, deliver and converge, scaled from the scenario:
    a base of 6 s, twice the client backoff cap, the longest Retry-After wait a refused client
    may draw (:func:`longest_retry_after_wait`: a herd refused 429 right after the heal -- the
    paused queue, an outbox's resubmissions after an agent restart -- comes back spread over
    up to twice the server's Retry-After, 16 s with the defaults), with replication four
    ship/read rounds plus two divergence periods; plus the longest fault (its effects drain
    after its heal). Without the Retry-After term, requests refused at the heal with the
    floor's 8 s Retry-After drew waits that ended after the run (liveness seeds 1000051 and
    1000007, shrunk: ``sim/scenarios/regressions/liveness-bound-retry-after.toml``)."""
    longest = max((float(f.get("duration_s", 0.0)) for f in faults), default=0.0)
    repl = (4 * 1.0 + 2 * 2.0) if regions > 1 else 0.0
    return round(6.0 + 2 * backoff_cap_ms / 1000.0 + longest_retry_after_wait(max_inflight) + repl + longest, 1)


# -- the modes' validity rule: one owner for the generator (draw) and the shrinker ---------------
HEAL_MARGIN_S = 0.1  # liveness: a fault ends at least this long before the workload phase does


def fit_to_mode(faults: list[dict], duration_s: float, mode: str) -> None:
    """Make drawn ``faults`` keep ``mode``'s rule (in place): in liveness every fault with a
    duration is cut to end :data:`HEAL_MARGIN_S` before the workload does (never below 0.1 s)."""
    if mode == "liveness":
        for f in faults:
            if "duration_s" in f:
                f["duration_s"] = round(max(0.1, min(f["duration_s"], duration_s - f["at_s"] - HEAL_MARGIN_S)), 1)


def mode_violations(data: dict, mode: str | None) -> list[str]:
    """What in scenario ``data`` breaks ``mode``'s rule (empty: valid). Liveness: the cluster must
    heal inside the workload phase -- every fault with a duration ends :data:`HEAL_MARGIN_S`
    before ``scenario.duration_s`` and no nemesis runs. Safety (or no mode) has no rule.
    :func:`draw` produces only valid scenarios; the shrinker (:mod:`flk.sim.shrink`) keeps only
    valid candidates, so a shrunk liveness case is still a liveness case."""
    if mode != "liveness":
        return []
    end = float(data["scenario"]["duration_s"]) - HEAL_MARGIN_S
    out = [f"fault {i} ({f.get('kind')}) ends at {float(f['at_s']) + float(f['duration_s']):.1f} s, after "
           f"{end:.1f} s (the workload phase less {HEAL_MARGIN_S} s)"
           for i, f in enumerate(data.get("faults", []))
           if f.get("duration_s") is not None and float(f["at_s"]) + float(f["duration_s"]) > end + 1e-6]
    if (data.get("nemesis") or {}).get("enabled"):
        out.append("a nemesis runs (its faults may not heal inside the workload)")
    return out


def mode_of(data: dict) -> str | None:
    """The mode a swarm scenario was drawn in (:func:`draw` names it ``swarm-<mode>``), else None."""
    name = str((data.get("scenario") or {}).get("name", ""))
    mode = name.removeprefix("swarm-")
    return mode if name.startswith("swarm-") and mode in MODES else None


@dataclass
class Drawn:
    """One seed's scenario: the overrides of :data:`BASE` and what was drawn."""

    seed: int
    mode: str
    overrides: list[str]
    choices: dict
    faults: list[dict] = field(default_factory=list)

    def replay_command(self, plant: str | None = None) -> str:
        sets = " ".join(f"--set {shlex.quote(o)}" for o in self.overrides)
        return f"flk sim run {BASE} --seed {self.seed} {sets}" + (f" --plant {plant}" if plant else "")


def draw(seed: int, mode: str = "safety") -> Drawn:
    """The scenario seed ``seed`` explores in ``mode`` (same seed, same code: same scenario)."""
    import random

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rng = random.Random(derive_seed(seed, "swarm"))
    c = {dim: _pick(rng, dim) for dim in SPACE}
    regions = [f"r{i + 1}" for i in range(c["regions"])]
    replicated = c["regions"] > 1
    duration = float(c["duration_s"])
    kinds = [k for k, applies in FAULT_KINDS.items() if applies(c) and rng.random() < c["fault_p"]]
    faults = []
    for kind in kinds:
        for _ in range(1 if kind in ONCE else int(c["faults_per_kind"])):
            dur = round(rng.uniform(0.3, float(c["fault_duration_s"])), 1)
            latest = duration - (dur if mode == "liveness" else 0.0) - 0.2
            if kind in ONCE:  # in the first half: later faults can land inside it
                latest = duration / 2
            at = round(rng.uniform(0.5, max(0.6, latest)), 1)
            faults.append(_fault(rng, kind, at, dur, regions, int(c["tenants"]), str(c["dedup"])))
    fit_to_mode(faults, duration, mode)
    faults.sort(key=lambda f: (f["at_s"], f["kind"]))
    c["kinds"] = kinds
    quiescence = liveness_bound(duration, c["regions"], faults) if mode == "liveness" else 4.0
    nemesis_kinds = [k for k in kinds if k in NEMESIS_SAFE]
    o = [
        f"scenario.name={_toml(f'swarm-{mode}')}",
        f"scenario.description={_toml('drawn by flk sim explore --swarm')}",
        f"scenario.duration_s={duration}",
        f"scenario.quiescence_s={quiescence}",
        f"regions={_toml([{'id': r, 'dedup': c['dedup']} for r in regions])}",
        f"replication.enabled={_toml(replicated)}",
        f"workload.agents={c['agents']}",
        f"workload.rate_per_s={float(c['rate_per_s'])}",
        f"workload.tenants={c['tenants']}",
        f"workload.dup_rate={c['dup_rate']}",
        f"workload.conflict_rate={c['conflict_rate']}",
        f"workload.bad_sig_rate={c['bad_sig_rate']}",
        f"workload.cross_region_conflict_rate={c['cross_region_conflict_rate'] if replicated else 0.0}",
        f"workload.cross_region_conflict_age_s={3.0 if replicated else 0.0}",
        f"nemesis.enabled={_toml(mode == 'safety' and bool(nemesis_kinds))}",
        f"nemesis.kinds={_toml(nemesis_kinds or ['crash'])}",
        f"nemesis.rate_per_min={float(c['nemesis_rate_per_min'])}",
        "nemesis.min_gap_s=0.0",
        f"nemesis.duration_s={float(c['fault_duration_s'])}",
        f"faults={_toml(faults)}",
        "slo=[]",
        "alerts.silent=[]",
    ]
    if mode == "liveness":  # delivery is the outbox's promise (INV-AT-LEAST-ONCE): a client without one
        o.append("workload.outbox=true")  # that gave up during the faults abandoned its record for good
    return Drawn(seed, mode, o, c, faults)


# -- one run ------------------------------------------------------------------------------------
def judged_failures(results: dict, mode: str) -> list[str]:
    """The checks whose failure counts as a bug in ``mode`` (sometimes checks never do)."""
    kinds = JUDGED[mode]
    return [c["id"] for c in results.get("invariants", []) if not c.get("ok", True) and c.get("kind") in kinds]


def run_seed(job: tuple) -> dict:
    """One exploration run -> one record (picklable both ways: for a process pool or Dask).
    ``job``: (seed, mode, scenario or None for swarm, plant, runs_root or None)."""
    from . import api, coverage

    seed, mode, scenario, plant, runs_root = job
    drawn = draw(seed, mode) if scenario is None else None
    name, overrides = (BASE, drawn.overrides) if drawn is not None else (scenario, [])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    replay = drawn.replay_command(plant) if drawn is not None else \
        f"flk sim run {shlex.quote(scenario)} --seed {seed}" + (f" --plant {plant}" if plant else "")
    try:
        res = api.run(name, seed=seed, overrides=overrides, plant=plant, plots=False)
    except Exception as exc:  # noqa: BLE001 -- the simulator itself failed: a finding, not the end of the search
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"seed": seed, "mode": mode, "scenario": f"swarm-{mode}" if drawn is not None else scenario,
                "plant": plant, "digest": None, "failed": [f"SIM-ERROR {type(exc).__name__}"],
                "error": f"{type(exc).__name__}: {str(exc)[:160]} at {Path(where.filename).name}:{where.lineno}",
                "sim_s": 0.0, "cpu_s": round(time.process_time() - cpu0, 4),
                "wall_s": round(time.perf_counter() - wall0, 4), "events": 0,
                "fault_kinds": sorted({f["kind"] for f in (drawn.faults if drawn is not None else [])}),
                "coverage": {"faults": [], "invariants": [], "situations": []}, "replay": replay, "run_dir": None}
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    failed = judged_failures(res.results, mode)
    sc = res.scenario.data["scenario"]
    rec = {"seed": seed, "mode": mode, "scenario": res.scenario.name, "plant": plant, "digest": res.digest,
           "failed": failed, "sim_s": float(sc["duration_s"]) + float(sc["quiescence_s"]), "cpu_s": round(cpu, 4),
           "wall_s": round(wall, 4), "events": res.results["events"],
           "fault_kinds": sorted({f["kind"] for f in res.results["fault_schedule"]}),
           "coverage": coverage.of_run(res.history.events, res.results, res.scenario.data),
           "replay": replay, "run_dir": None}
    if failed and runs_root is not None:
        rec["run_dir"] = str(api.save(res, Path(runs_root), plots=False, force=True))
    return rec


def _jobs(seeds, mode: str, scenario: str | None, plant: str | None, runs_root: str | None) -> Iterator:
    for seed in seeds:
        yield (seed, mode, scenario, plant, runs_root)


def execute(jobs: Iterator, until: Callable[[int], bool], workers: int, scheduler: str | None,
            on_record: Callable[[dict], None]) -> None:
    """Run jobs from ``jobs`` (in order) until ``until(runs started)`` says stop; a sliding window
    of ``2 x workers`` runs in flight on a Dask cluster, a process pool, or one at a time here."""
    started = 0
    if scheduler:
        from flk.impl.core.optional import require

        distributed = require("dask.distributed")
        with dask_client(scheduler) as client:
            width = max(2, 2 * sum(w for w in client.nthreads().values()))
            first = []
            while started < width and not until(started):
                first.append(client.submit(run_seed, next(jobs), pure=False))
                started += 1
            pending = distributed.as_completed(first)
            for future in pending:
                on_record(future.result())
                if not until(started):
                    pending.add(client.submit(run_seed, next(jobs), pure=False))
                    started += 1
        return
    if workers > 1:
        from concurrent.futures import FIRST_COMPLETED, wait

        with process_pool(workers) as pool:
            inflight = set()
            while True:
                while len(inflight) < 2 * workers and not until(started):
                    inflight.add(pool.submit(run_seed, next(jobs)))
                    started += 1
                if not inflight:
                    return
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    on_record(future.result())
    while not until(started):
        on_record(run_seed(next(jobs)))
        started += 1


# -- the search ---------------------------------------------------------------------------------
@dataclass
class Failure:
    """One distinct failure: its signature, every seed that showed it, the shrunk case."""

    check: str
    fault_kinds: tuple[str, ...]
    seeds: list[int]
    replay: str
    run_dir: str | None
    candidate: str | None = None
    shrink_runs: int = 0
    shrunk: bool = False
    found_after_runs: int = 0
    found_after_s: float = 0.0
    found_after_cpu_s: float = 0.0
    error: str | None = None  # a simulator error (SIM-ERROR): where it was raised
    common_kinds: list[str] = field(default_factory=list)  # SIM-ERROR: fault kinds every seed showing it had
    checks: list[str] = field(default_factory=list)  # every judged check the first run failed

    @property
    def signature(self) -> str:
        if self.error:
            return f"{self.check} | faults in every such run: {'+'.join(self.common_kinds) or 'none'}"
        return f"{self.check} | {'+'.join(self.fault_kinds) or 'no fault'}"

    def as_dict(self) -> dict:
        return {"signature": self.signature, "check": self.check, "checks": self.checks or [self.check],
                "fault_kinds": list(self.fault_kinds),
                "seeds": self.seeds, "first_seed": self.seeds[0], "replay": self.replay, "run_dir": self.run_dir,
                "regression_candidate": self.candidate, "shrink_runs": self.shrink_runs, "shrunk": self.shrunk,
                "found_after_runs": self.found_after_runs, "found_after_s": round(self.found_after_s, 2),
                "found_after_cpu_s": round(self.found_after_cpu_s, 2), "error": self.error,
                "common_fault_kinds": self.common_kinds}


def parse_budget(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``1h30m`` or plain seconds -> seconds (ValueError otherwise)."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"budget {text!r}: use e.g. 90s, 15m, 1h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _shrink(rec: dict, check: str, max_runs: int, log) -> tuple[tuple[str, ...], str | None, int, bool]:
    """Shrink a failing run (``flk sim shrink``): the minimal fault kinds, the candidate's path,
    runs used, whether it was confirmed."""
    from . import api
    from .scenario import ScenarioError
    from .shrink import ShrinkError

    try:
        shrunk = api.shrink(Path(rec["run_dir"]), invariant=check, max_runs=max_runs)
    except (ShrinkError, ScenarioError) as exc:  # a shrink that cannot run keeps the unshrunk signature
        log(f"explore: shrink of seed {rec['seed']} failed: {exc}")
        return tuple(rec["fault_kinds"]), None, 0, False
    except Exception as exc:  # noqa: BLE001 -- nothing a shrink raises may end the exploration
        log(f"explore: shrink of seed {rec['seed']} stopped: {type(exc).__name__}: {exc}")
        return tuple(rec["fault_kinds"]), None, 0, False
    kinds = tuple(sorted({f["kind"] for f in shrunk.minimal["faults"]}))
    if shrunk.minimal["nemesis"]["enabled"]:
        kinds = tuple(sorted(set(kinds) | {f"nemesis:{k}" for k in shrunk.minimal["nemesis"]["kinds"]}))
    return kinds, str(shrunk.path), shrunk.runs, bool(shrunk.confirmed)


class _Findings:
    """The failures of an exploration, deduplicated as runs come in: a simulator error once per
    place it is raised (with the fault kinds every such seed shares); a failed check once per
    (check, fault kinds), shrunk the first time, then by its minimal fault kinds."""

    def __init__(self, shrink_runs: int, log, t0: float) -> None:
        self.shrink_runs, self.log, self.t0 = shrink_runs, log, t0
        self.records: list[dict] = []
        self.by_signature: dict[tuple, Failure] = {}
        self.seen_raw: dict[tuple, Failure] = {}

    def _found(self) -> dict:
        return {"found_after_runs": len(self.records), "found_after_s": time.perf_counter() - self.t0,
                "found_after_cpu_s": sum(r["cpu_s"] for r in self.records)}

    def _new(self, key: tuple, fail: Failure, seed: int) -> None:
        self.by_signature[key] = fail
        self.log(f"explore: new failure {fail.signature} at seed {seed} (run {len(self.records)})")

    def on_record(self, rec: dict) -> None:
        self.records.append(rec)
        if not rec["failed"]:
            return
        if rec.get("error"):
            self._sim_error(rec)
        else:
            self._check_failure(rec)

    def _sim_error(self, rec: dict) -> None:
        check = f"{rec['failed'][0]} at {rec['error'].rsplit(' at ', 1)[-1]}"
        known = self.by_signature.get((check, ()))
        if known is not None:
            known.seeds.append(rec["seed"])
            known.common_kinds = sorted(set(known.common_kinds) & set(rec["fault_kinds"]))
            return
        self._new((check, ()), Failure(check, (), [rec["seed"]], rec["replay"], None, **self._found(),
                                       error=rec["error"], common_kinds=list(rec["fault_kinds"])), rec["seed"])

    def _check_failure(self, rec: dict) -> None:
        check = rec["failed"][0]
        raw = (check, tuple(rec["fault_kinds"]))
        if raw in self.seen_raw:  # the same check with the same fault kinds: counted, not shrunk again
            self.seen_raw[raw].seeds.append(rec["seed"])
            return
        fail = Failure(check, tuple(rec["fault_kinds"]), [rec["seed"]], rec["replay"], rec["run_dir"],
                       **self._found(), error=rec.get("error"), checks=list(rec["failed"]))
        self.seen_raw[raw] = fail
        if rec["run_dir"] and self.shrink_runs > 0:
            kinds, cand, used, ok = _shrink(rec, check, self.shrink_runs, self.log)
            fail.fault_kinds, fail.candidate, fail.shrink_runs, fail.shrunk = kinds, cand, used, ok
        key = (fail.check, fail.fault_kinds)
        if key in self.by_signature:
            self.by_signature[key].seeds.append(rec["seed"])
            self.seen_raw[raw] = self.by_signature[key]
        else:
            self._new(key, fail, rec["seed"])


def explore(budget_s: float | None = 60.0, runs: int | None = None, mode: str = "safety",
            scenario: str | None = None, workers: int = 1, scheduler: str | None = None, out: Path | None = None,
            plant: str | None = None, first_seed: int = 1, seeds: list[int] | None = None,
            shrink_runs: int = DEFAULT_SHRINK_RUNS,
            stop_after: int | None = None, stop_on: tuple[str, ...] = (), determinism_sample: int = 0,
            log=None) -> dict:
    """Explore until ``budget_s`` wall seconds or ``runs`` runs (whichever comes first) or
    ``stop_after`` distinct failures (of a check in ``stop_on`` when given); ``scenario`` None: swarm.
    Seeds ``first_seed``, +1, ... or exactly ``seeds`` (then ``runs`` defaults to their count). Returns the summary (also written
    to ``out/summary.json`` with ``runs.jsonl``, the coverage files and the failures)."""
    import itertools

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if seeds is not None:
        runs = len(seeds) if runs is None else min(runs, len(seeds))
    if budget_s is None and runs is None:
        raise ValueError("give a budget or a run count")
    out = Path(out) if out is not None else None
    runs_root = str(out.resolve() / "runs") if out is not None else None  # absolute: Dask workers write there
    t0 = time.perf_counter()
    found = _Findings(shrink_runs, log or (lambda _m: None), t0)

    def until(started: int) -> bool:
        if runs is not None and started >= runs:
            return True
        wanted = [f for f in found.by_signature.values() if not stop_on or set(f.checks) & set(stop_on)]
        if stop_after is not None and len(wanted) >= stop_after:
            return True
        return budget_s is not None and time.perf_counter() - t0 >= budget_s

    order = iter(seeds) if seeds is not None else itertools.count(first_seed)
    execute(_jobs(order, mode, scenario, plant, runs_root), until, workers, scheduler, found.on_record)
    summary = _summary(found, time.perf_counter() - t0, mode, scenario, plant, workers, scheduler, budget_s, runs)
    if determinism_sample:
        summary["determinism"] = determinism_check(found.records, determinism_sample)
    if out is not None:
        _write(out, found.records, summary)
    return summary


def _summary(found: _Findings, wall: float, mode: str, scenario: str | None, plant: str | None, workers: int,
             scheduler: str | None, budget_s: float | None, runs: int | None) -> dict:
    records = found.records
    records.sort(key=lambda r: r["seed"])
    cpu = sum(r["cpu_s"] for r in records)
    sim_s = sum(r["sim_s"] for r in records)
    return {
        "mode": mode, "swarm": scenario is None, "scenario": scenario or BASE, "plant": plant,
        "runs": len(records), "failing_runs": sum(1 for r in records if r["failed"]),
        "distinct_failures": [f.as_dict() for f in found.by_signature.values()],
        "seeds": [records[0]["seed"], records[-1]["seed"]] if records else [],
        "simulated_s": round(sim_s, 1), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "runs_per_core_hour": round(len(records) * 3600 / cpu, 1) if cpu else None,
        "sim_s_per_wall_s": round(sim_s / wall, 2) if wall else None,
        "sim_s_per_cpu_s": round(sim_s / cpu, 2) if cpu else None,
        "workers": workers if not scheduler else "dask", "scheduler": scheduler,
        "cores_used": max(1, workers) if not scheduler else None,
        "budget_s": budget_s, "max_runs": runs,
    }


def _write(out: Path, records: list[dict], summary: dict) -> None:
    """``runs.jsonl``, the coverage files and ``summary.json`` (with the coverage added)."""
    from . import coverage

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    cov = coverage.aggregate([r["coverage"] for r in records])
    summary["coverage"] = coverage.write(cov, out, commit_root=out.parent)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# -- determinism at scale -----------------------------------------------------------------------
def sample_seeds(records: list[dict], k: int) -> list[dict]:
    """``k`` records evenly spread over the explored seeds (deterministic: no RNG)."""
    if k <= 0 or not records:
        return []
    step = max(1, len(records) // k)
    return records[::step][:k]


def digests_of(jobs: list[list]) -> list[str]:
    """History digests of ``[seed, mode, scenario, plant]`` jobs, run here one after another."""
    from . import api

    out = []
    for seed, mode, scenario, plant in jobs:
        name, overrides = (BASE, draw(seed, mode).overrides) if scenario is None else (scenario, [])
        out.append(api.run(name, seed=seed, overrides=overrides, plant=plant, plots=False).digest)
    return out


def _digest_worker() -> None:  # python -c entry point of determinism_check's subprocesses
    jobs = textdata.json_loads(sys.stdin.read())
    print(json.dumps(digests_of(jobs)))


def determinism_check(records: list[dict], k: int, hash_seeds: tuple[str, str] = ("1", "2")) -> dict:
    """Run a sample of explored seeds again in two fresh processes with different
    ``PYTHONHASHSEED`` values; every digest must equal the explored one. Returns counts."""
    chosen = sample_seeds([r for r in records if r["digest"] is not None], k)
    jobs = [[r["seed"], r["mode"], None if r["scenario"].startswith("swarm-") else r["scenario"], r["plant"]]
            for r in chosen]
    procs = []
    for hs in hash_seeds:
        env = {**os.environ, "PYTHONHASHSEED": hs}
        procs.append(subprocess.Popen([sys.executable, "-c", "from flk.sim.explore import _digest_worker as w; w()"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True))
    outs = []
    for p in procs:
        stdout, _ = p.communicate(json.dumps(jobs))
        outs.append(textdata.json_loads(stdout) if p.returncode == 0 else [None] * len(jobs))
    mismatches = [{"seed": r["seed"], "explored": r["digest"], "runs": [o[i] for o in outs]}
                  for i, r in enumerate(chosen) if any(o[i] != r["digest"] for o in outs)]
    return {"sampled": len(chosen), "processes": len(hash_seeds), "pythonhashseeds": list(hash_seeds),
            "mismatches": len(mismatches), "examples": mismatches[:5]}
