"""The simulator's public Python API (what notebooks and the CLI call).

    from . import api
    res = api.run("crash-restart", seed=3, overrides=["workload.rate_per_s=200"])
    res.valid, res.digest, res.results["metrics"]
    res.history_df()      # pandas DataFrame of events
    res.metrics_df()      # per-second time series
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flk.impl.dedup.migrate import DualWriteStore
from flk.impl.dedup.sharded import ShardedStore

from . import alerts, artifacts, checkers, faults, kpi, metrics, operator
from .history import FORMATS, History, find_history, read_history
from .scenario import Scenario, ScenarioError, list_scenarios, load
from .world import World, collector_paused


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    history: History
    results: dict
    rows: list[dict]
    out_dir: Path | None
    scraper: alerts.Scraper | None = None  # the regions' scrapes (series.om, alerts.test.yml in save)
    history_format: str = "jsonl"  # the history file's format (history.FORMATS)

    @property
    def valid(self) -> bool:
        return bool(self.results["valid"])

    @property
    def digest(self) -> str:
        return self.history.digest

    def history_df(self):
        import pandas as pd

        return pd.DataFrame(self.history.events)

    def metrics_df(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def catalog() -> list[tuple[str, str]]:
    out = []
    for name in list_scenarios():
        sc = load(name)
        out.append((name, sc.data["scenario"]["description"]))
    return out


def reference() -> str:
    """The scenario file reference (what ``sim/SCENARIOS.md`` holds)."""
    from .scenario import reference_markdown

    return reference_markdown()


def metrics_reference() -> str:
    """The metrics reference (what ``sim/METRICS.md`` holds)."""
    return metrics.reference_markdown()


def draw_topology(name_or_path, out: Path, overrides=(), at_s: float | None = None) -> list[str]:
    """Draw a scenario's network graph (PNG) with the links its partitions cut marked; ``at_s``:
    only partitions active at that simulated second. Returns the cut links as ``u->v``."""
    import simpy

    from . import faults, topology
    from .net import Network

    topology.check_image_path(Path(out))
    sc = name_or_path if isinstance(name_or_path, Scenario) else load(name_or_path, list(overrides))
    graph = topology.build(sc.data)
    net = Network(simpy.Environment(), History(keep=False), lambda _name: None, graph=graph)
    for spec in sc.data["faults"]:
        fault = faults.create(spec)
        if not isinstance(fault, faults.Partition):
            continue
        end = spec["at_s"] + spec.get("duration_s", sc.data["scenario"]["duration_s"])
        if at_s is None or spec["at_s"] <= at_s < end:
            a, b = fault.sides([r["id"] for r in sc.data["regions"]])
            net.partition(a, b, symmetric=bool(fault.symmetric))
    topology.draw(graph, net.blocked, Path(out), sc.name)
    return sorted(f"{u}->{v}" for u, v in net.blocked)


def planted_world_kwargs(plant: str | None) -> dict:
    """The :class:`World` keyword arguments of a planted bug (``flk.impl.testing.planted``)."""
    if plant is None:
        return {}
    from flk.impl.testing import planted

    try:
        return planted.world_kwargs(plant)
    except KeyError as exc:
        raise ScenarioError("plant", exc.args[0]) from None


def _scenario_to_run(name_or_path, seed: int | None, overrides, history_format: str) -> tuple[Scenario, int]:
    """The scenario and seed :func:`run` runs; a :class:`ScenarioError` for a bad seed, history
    format, or a fault kind only real clusters apply (``faults.DiskFull``)."""
    if history_format not in FORMATS:
        raise ScenarioError("history format", f"must be one of {', '.join(FORMATS)}, got {history_format!r}")
    sc = name_or_path if isinstance(name_or_path, Scenario) else load(name_or_path, list(overrides))
    seed = sc.seed if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError("seed", f"must be a non-negative integer, got {seed!r}")
    for f in sc.data["faults"]:
        why = getattr(faults.REGISTRY[f["kind"]], "simulator_refuses", "")
        if why:
            raise ScenarioError("faults", f"{f['kind']!r}: {why}")
    return sc, seed


def _checks(sc: Scenario, world: World, events: list, scraper) -> tuple[list, dict | None]:
    """The run's checks: the in-sim checkers, the scenario's regression expectations, and its
    alert declarations evaluated over the regions' scrapes (with the evaluation)."""
    checks = checkers.check_all(events, sc.data)
    if sc.expect:
        checks.append(checkers.regression_expectations(events, sc.expect))
    alert_eval = alerts.evaluate(scraper, int(world.duration + world.quiescence)) if scraper else None
    checks.extend(alerts.checks(alert_eval, sc.data.get("alerts", {}), world.fault_log))
    return checks, alert_eval


@collector_paused()  # the run, then its checks, metrics and artifacts walking every event
def run(name_or_path, seed: int | None = None, overrides=(), out: Path | None = None, plots: bool = True,
        progress: bool = False, plant: str | None = None, force: bool = False, check_model: bool = False,
        history_format: str = "jsonl",
        **world_kwargs) -> RunResult:
    """Run a scenario (name, path or :class:`Scenario`); ``world_kwargs`` go to :class:`World`.
    With ``out`` the artifacts go to ``out/<scenario>/<seed>/`` (see :func:`save`); ``progress``
    shows a bar over simulated time on an interactive stderr; ``plant`` names a planted bug
    (``flk.impl.testing.planted``), recorded in the results so replay and shrink rerun it. A run
    folder holding a *different* run (other scenario content, overrides or planted bug) is never
    replaced unless ``force`` (:func:`check_run_dir`). ``check_model``: also judge the history by
    the black-box checker and the model (:func:`flk.sim.tracecheck.three_verdicts`, in
    ``results["verdicts"]``); a violation either finds makes the run invalid.
    ``history_format`` ``"jsonl.gz"`` streams the
    history to ``history.jsonl.gz`` in the run folder while the run goes (the compact format of
    long studies: :mod:`flk.sim.history`); the digest is the same either way."""
    from . import progress as progress_bars

    sc, seed = _scenario_to_run(name_or_path, seed, overrides, history_format)
    key = run_key(sc, seed, plant)
    if out is not None:
        check_run_dir(Path(out) / sc.name / str(seed), sc, key, force)
    world = World(sc, seed, **{**planted_world_kwargs(plant), **world_kwargs})
    scraper = alerts.Scraper(world) if alerts.declared(sc.data) else None  # reads only: same history
    if out is not None:  # the history goes to the run folder while the run goes (either format)
        run_dir = Path(out) / sc.name / str(seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        world.history.stream_to(run_dir / FORMATS[history_format])
    show = progress and progress_bars.wanted()
    with progress_bars.bar(world.duration + world.quiescence, f"{sc.name} seed {seed}", unit="sim s",
                           enabled=show) as sim_bar:
        if show:
            progress_bars.follow_world(world, sim_bar)
        history = world.run()
    history.close()
    events = history.events
    checks, alert_eval = _checks(sc, world, events, scraper)
    convergence = next((c for c in checks if c.id == "INV-CONVERGENCE" and c.exercised), None)
    m = metrics.summarize(events, world.duration, converged=None if convergence is None else convergence.ok)
    if sc.data.get("policies"):
        m.update(operator.metrics(events))
    m.update(_outage_metrics(sc, world, events))
    slos = metrics.check_slos(m, sc.data["slo"])
    results = {
        "scenario": sc.name,
        "seed": seed,
        "digest": history.digest,
        "events": history.count,
        "invariants": [c.as_dict() for c in checks],
        "slos": slos,
        "metrics": m,
        "valid": all(c.ok for c in checks) and all(s["ok"] for s in slos),
        "fault_schedule": world.fault_log,
        "parameters": {"overrides": list(overrides), **({"plant": plant} if plant else {})},
        **({"alerts": alert_eval} if alert_eval else {}),
        "kpi": kpi.measure(events, sc.data),
        "stamp": {**artifacts.stamp(seed, list(sc.overrides), source_identity(sc), plant=plant), "run_key": key},
    }
    if check_model:
        from .tracecheck import three_verdicts

        results["verdicts"] = three_verdicts(events, sc.data, results["invariants"])
        results["valid"] = results["valid"] and results["verdicts"]["ok"]
    res = RunResult(sc, seed, history, results, metrics.timeseries(events), None, scraper, history_format)
    if out is not None:
        save(res, Path(out), plots=plots, force=force)
    return res


def _outage_metrics(sc: Scenario, world: World, events: list[dict]) -> dict:
    """The figures of partial outages: ``crr_apply_lag_max_s`` (with replication),
    ``shard_collateral_503`` (a sharded store) and ``cold_collateral_503`` (a cold_down fault)."""
    m: dict = {}
    if world.repl:
        m["crr_apply_lag_max_s"] = round(max(rep.apply_lag_max_s for rep in world.repl.values()), 6)
    owners = _shard_owners(world)
    if owners:
        m["shard_collateral_503"] = metrics.shard_collateral(events, owners)
    if any(f.get("kind") == "cold_down" for f in sc.data.get("faults") or []):
        m["cold_collateral_503"] = metrics.cold_collateral(events)
    return m


def _shard_owners(world: World) -> dict:
    """Per region with a sharded dedup store: ``(tenant, pcs_id) -> the shards the key may
    touch`` (its owner; during a migration its owner in each ring) -- for ``shard_collateral_503``."""
    out = {}
    for rid, region in world.regions.items():
        store = region.topology.store
        if isinstance(store, ShardedStore):
            out[rid] = lambda t, p, s=store: (s.shard_for(t, p),)
        elif isinstance(store, DualWriteStore) and isinstance(store.old, ShardedStore) \
                and isinstance(store.new, ShardedStore):
            out[rid] = lambda t, p, s=store: (s.old.shard_for(t, p), s.new.shard_for(t, p))
    return out


def source_identity(sc: Scenario) -> str:
    """Which file a scenario came from (resolved path; a run directory's ``scenario.toml``
    stands for the run it records)."""
    return str(Path(sc.source).resolve()) if sc.source else sc.name


def run_key(sc: Scenario, seed: int, plant: str | None) -> str:
    """SHA-256 of everything that determines a run but the code: the scenario as run (file
    content with every override applied), the seed and the planted bug."""
    import hashlib

    data = {**sc.data, "scenario": {**sc.data["scenario"], "seed": seed}}
    doc = json.dumps({"scenario": data, "expect": sc.expect, "plant": plant}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def check_run_dir(out_dir: Path, sc: Scenario, key: str | None = None, force: bool = False) -> None:
    """Refuse to overwrite a run of a *different* scenario file that has the same
    ``scenario.name``, or (unless ``force``) a different run of the same one -- other file
    content, overrides or planted bug (:func:`run_key`); the same run again replaces itself."""
    try:
        earlier = artifacts.read_results(out_dir)
    except (OSError, ValueError):  # no run there (or a damaged one: replaced)
        return
    theirs_key = (earlier.get("stamp") or {}).get("run_key")
    if key is not None and theirs_key != key and not force:
        raise ScenarioError("--out", f"{out_dir} holds another run of {sc.name!r} seed {earlier.get('seed')} "
                            f"(overrides {(earlier.get('stamp') or {}).get('overrides', [])}, other scenario content "
                            "or planted bug); it is not replaced: choose another --out, or --force to replace it")
    theirs = (earlier.get("stamp") or {}).get("scenario_source")
    mine = source_identity(sc)
    if theirs and theirs != mine and "scenario.toml" not in (Path(theirs).name, Path(mine).name):
        raise ScenarioError("scenario.name", f"{out_dir} already holds a run of {theirs}, a different file with "
                            f"the same name {sc.name!r}; rename scenario.name in {mine} or choose another --out")


def save(res: RunResult, out: Path, plots: bool = True, force: bool = False) -> Path:
    """Write ``res``'s artifacts to ``out/<scenario>/<seed>/``; the saved ``scenario.toml`` is
    exactly what ran (overrides applied, ``scenario.seed`` set to the seed used)."""
    import copy

    out_dir = Path(out) / res.scenario.name / str(res.seed)
    check_run_dir(out_dir, res.scenario, (res.results.get("stamp") or {}).get("run_key"), force)
    data = copy.deepcopy(res.scenario.data)
    data["scenario"]["seed"] = res.seed
    res.results["out_dir"] = str(out_dir)
    artifacts.write_all(out_dir, data, res.history, res.results, res.rows, plots=plots,
                        history_file=FORMATS[res.history_format])
    if res.scraper is not None:
        alerts.save(res.scraper, int(res.results.get("alerts", {}).get("end_s", 0)) or len(res.rows), out_dir)
    res.out_dir = out_dir
    return out_dir


@dataclass
class Replay:
    """A replay's three digests: ``expected`` (``results.json``), ``saved`` (the history file the
    run folder holds) and the re-run's (``result.digest``)."""

    result: RunResult
    expected: str
    saved: str
    history_path: Path

    @property
    def reproduced(self) -> bool:
        """The re-run's history is the recorded one."""
        return self.result.digest == self.expected

    @property
    def ok(self) -> bool:
        """Reproduced, and the saved history is the one recorded (not cut, emptied or edited)."""
        return self.reproduced and self.saved == self.expected


def replay(run_dir: Path) -> Replay:
    """Re-run the scenario recorded in ``run_dir`` with its seed; compare the re-run's history digest
    with the recorded one and with the saved history's (a missing or unreadable saved history is a
    :class:`ScenarioError` before the re-run)."""
    run_dir = Path(run_dir)
    data, expected = artifacts.read_scenario(run_dir), artifacts.read_results(run_dir)
    history_path, saved = artifacts.history_digest(run_dir)
    sc = Scenario(name=data["scenario"]["name"], source=str(run_dir / "scenario.toml"), data=data)
    res = run(sc, seed=int(expected["seed"]), plant=(expected.get("parameters") or {}).get("plant"))
    return Replay(res, expected["digest"], saved, history_path)


def check_regression_path(out: Path) -> None:
    """ValueError unless ``out`` ends in ``.toml``: the shrink reads the case it writes back, and a
    path without the suffix names a catalog scenario to :func:`load` and ``flk sim run``."""
    if Path(out).suffix != ".toml":
        raise ValueError(f"{out}: a regression file's name must end in .toml (a path without it names a "
                         "catalog scenario to flk sim run and load)")


def shrink(run_dir: Path, invariant: str | None = None, out: Path | None = None, max_runs: int | None = None,
           log=None, **world_kwargs):
    """Shrink a failing run (``flk sim shrink``): a minimal scenario, same seed, that still fails
    ``invariant`` (default: the run's first failed check), written as a regression candidate to
    ``out`` (default ``RUN_DIR/regression-candidate.toml``) and confirmed by running that file.
    A planted bug recorded in the run is planted again; ``world_kwargs`` (e.g. ``verifier_cls``)
    plant one from Python. Returns :class:`flk.sim.shrink.Shrunk`. See :mod:`flk.sim.shrink`."""
    import datetime

    from . import shrink as shrinking

    if out is not None:
        check_regression_path(out)  # before the runs, not after them
    recorded = shrinking.read_run_dir(Path(run_dir))
    target = shrinking.pick_target(recorded, invariant)
    plant = recorded.plant

    def run_one(sc: Scenario, seed: int) -> dict:
        return run(sc, seed=seed, plots=False, plant=plant, **world_kwargs).results

    from .explore import mode_of, mode_violations

    mode = mode_of(recorded.data)  # a swarm run keeps its mode's rule (liveness: faults heal in the workload)
    keeps = None if mode_violations(recorded.data, mode) else (lambda d: not mode_violations(d, mode))
    runner = shrinking.Runner(run_one, recorded.data["scenario"]["name"], str(recorded.path / "scenario.toml"),
                              recorded.seed, target, max_runs or shrinking.DEFAULT_MAX_RUNS, log or (lambda _m: None),
                              allowed=shrinking.failures(recorded.results), keeps=keeps)
    schedule = recorded.results.get("fault_schedule") or []
    minimal, steps, spent = shrinking.minimize(runner, recorded.data, schedule)
    if plant is not None or world_kwargs:  # the bug is known: its case must be valid without it
        minimal = shrinking.valid_once_fixed(runner, minimal, recorded.data, steps,
                                             lambda data: run(Scenario(recorded.data["scenario"]["name"], "",
                                                                       data), seed=recorded.seed, plots=False).valid)
    shrunk = shrinking.Shrunk(target, recorded.seed, plant, recorded.data, minimal, runs=runner.runs, steps=steps,
                              budget_spent=spent, violations=runner.violations(minimal), schedule=schedule)
    path = shrinking.write(shrunk, recorded, out, datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"))
    check = run(load(path), plots=False, plant=plant, **world_kwargs).results
    shrunk.confirmed = target in shrinking.failures(check)
    return shrunk


def load_run(run_dir: Path) -> dict:
    """Artifacts of a finished run: results dict, history events, metrics rows."""
    import csv

    run_dir = Path(run_dir)
    results = artifacts.read_results(run_dir)
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"results": results, "history": read_history(find_history(run_dir)), "metrics": rows}


def without_faults(sc: Scenario, kinds) -> Scenario:
    """A copy of ``sc`` with every fault of the given kinds removed (the counterfactual world)."""
    import copy

    data = copy.deepcopy(sc.data)
    data["faults"] = [f for f in data["faults"] if f["kind"] not in set(kinds)]
    data["nemesis"]["enabled"] = data["nemesis"]["enabled"] and not set(kinds) & set(data["nemesis"]["kinds"])
    return Scenario(name=sc.name, source=sc.source, data=data, expect=list(sc.expect), overrides=list(sc.overrides))


def counterfactual(name_or_path, seed: int = 1, overrides=(), **world_kwargs) -> list[dict]:
    """Run a study with and without the faults its ``[study]`` section names; for every
    headline figure report both values and whether it moved in the stated direction."""
    sc = name_or_path if isinstance(name_or_path, Scenario) else load(name_or_path, list(overrides))
    study = sc.data["study"]
    if not study.get("faults") or not study.get("headline"):
        raise ScenarioError(f"{sc.name}: study", "names no faults or no headline figures")
    with_fault = run(sc, seed=seed, plots=False, **world_kwargs).results["metrics"]
    without = run(without_faults(sc, study["faults"]), seed=seed, plots=False, **world_kwargs).results["metrics"]
    out = []
    for item in study["headline"]:
        a, b = with_fault.get(item["metric"], 0.0), without.get(item["metric"], 0.0)
        ok = _num(a) > _num(b) if item["with_fault"] == "higher" else _num(a) < _num(b)
        out.append({"metric": item["metric"], "with_fault": a, "without": b, "expected": item["with_fault"],
                    "ok": bool(ok)})
    return out


def sensitivity(name: str, keys: str | tuple[str, ...], values: list, metrics: list[str], seed: int = 1,
                overrides=(), **world_kwargs) -> list[dict]:
    """One run of catalog scenario ``name`` per value, set on every key in ``keys`` (``a.b``
    paths); rows ``{"value": v, metric: figure, ...}`` sorted by the numeric value."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    rows = []
    for value in sorted(values, key=float):
        sets = [f"{k}={value}" for k in keys]
        res = run(name, seed=seed, overrides=[*overrides, *sets], plots=False, **world_kwargs)
        rows.append({"value": value, **{m: res.results["metrics"].get(m, 0.0) for m in metrics}})
    return rows


def _num(value) -> float:
    """A metric for comparison: None (``convergence_time_s`` of an unconverged run) is infinite."""
    return float("inf") if value is None else float(value)


def monotone(rows: list[dict], metric: str) -> bool:
    """Non-decreasing along the sweep and strictly higher at the end than at the start."""
    series = [_num(r[metric]) for r in rows]
    return all(b >= a for a, b in zip(series, series[1:], strict=False)) and series[-1] > series[0]


def sweep(name: str, seeds: list[int], params: dict[str, list[str]], workers: int = 2,
          scheduler: str | None = None, out: Path | None = None, keep_runs: bool = False, progress: bool = False):
    """Many runs over seeds x parameter values on a process pool or a Dask cluster (``scheduler``:
    the address of a running scheduler); see :mod:`flk.sim.sweep` for what it writes."""
    from . import sweep as sweeps

    return sweeps.sweep(name, seeds, params, workers=workers, scheduler=scheduler, out=out, keep_runs=keep_runs,
                        progress=progress)
