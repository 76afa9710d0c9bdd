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

from . import artifacts, checkers, metrics
from .history import History, read_history
from .scenario import Scenario, ScenarioError, list_scenarios, load
from .world import World


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    history: History
    results: dict
    rows: list[dict]
    out_dir: Path | None

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


def run(name_or_path, seed: int | None = None, overrides=(), out: Path | None = None, plots: bool = True,
        progress: bool = False, **world_kwargs) -> RunResult:
    """Run a scenario (name, path or :class:`Scenario`); ``world_kwargs`` go to :class:`World`."""
    sc = name_or_path if isinstance(name_or_path, Scenario) else load(name_or_path, list(overrides))
    seed = sc.seed if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError("seed", f"must be a non-negative integer, got {seed!r}")
    world = World(sc, seed, **world_kwargs)
    if progress:
        import sys

        print(f"simulating {sc.name} seed {seed} ({world.duration + world.quiescence:.0f} s simulated)...",
              file=sys.stderr, flush=True)
    history = world.run()
    events = history.events
    checks = checkers.check_all(events, sc.data)
    if sc.expect:
        checks.append(checkers.regression_expectations(events, sc.expect))
    m = metrics.summarize(events, world.duration)
    slos = metrics.check_slos(m, sc.data["slo"])
    rows = metrics.timeseries(events)
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
        "parameters": {"overrides": list(overrides)},
    }
    out_dir = None
    if out is not None:
        out_dir = Path(out) / sc.name / str(seed)
        results["out_dir"] = str(out_dir)
        artifacts.write_all(out_dir, sc.data, history, results, rows, plots=plots)
    return RunResult(sc, seed, history, results, rows, out_dir)


def replay(run_dir: Path) -> tuple[bool, RunResult, str]:
    """Re-run the scenario recorded in ``run_dir`` with its seed; compare history digests."""
    import tomllib

    from .scenario import validate

    run_dir = Path(run_dir)
    try:
        data = tomllib.loads((run_dir / "scenario.toml").read_text(encoding="utf-8"))
        expected = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScenarioError(str(run_dir), f"not a run directory: {exc}") from None
    validate(data)
    sc = Scenario(name=data["scenario"]["name"], source=str(run_dir / "scenario.toml"), data=data)
    res = run(sc, seed=int(expected["seed"]))
    return res.digest == expected["digest"], res, expected["digest"]


def load_run(run_dir: Path) -> dict:
    """Artifacts of a finished run: results dict, history events, metrics rows."""
    import csv

    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"results": results, "history": read_history(run_dir / "history.jsonl"), "metrics": rows}


def without_faults(sc: Scenario, kinds) -> Scenario:
    """A copy of ``sc`` with every fault of the given kinds removed (the counterfactual world)."""
    import copy

    data = copy.deepcopy(sc.data)
    data["faults"] = [f for f in data["faults"] if f["kind"] not in set(kinds)]
    data["nemesis"]["enabled"] = data["nemesis"]["enabled"] and not set(kinds) & set(data["nemesis"]["kinds"])
    return Scenario(name=sc.name, source=sc.source, data=data, expect=list(sc.expect))


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
        ok = a > b if item["with_fault"] == "higher" else a < b
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


def monotone(rows: list[dict], metric: str) -> bool:
    """Non-decreasing along the sweep and strictly higher at the end than at the start."""
    series = [r[metric] for r in rows]
    return all(b >= a for a, b in zip(series, series[1:], strict=False)) and series[-1] > series[0]


def _sweep_one(args):
    name, seed, overrides = args
    res = run(name, seed=seed, overrides=overrides)
    row = {"scenario": res.scenario.name, "seed": seed, "valid": res.valid, "digest": res.digest}
    for o in overrides:
        k, v = o.split("=", 1)
        row[k] = v
    for k, v in res.results["metrics"].items():
        if isinstance(v, (int, float)):
            row[k] = v
    for c in res.results["invariants"]:
        row[c["id"]] = c["ok"]
    return row


def sweep(name: str, seeds: list[int], params: dict[str, list[str]], workers: int = 2,
          scheduler: str | None = None, out: Path | None = None):
    import itertools

    import pandas as pd

    load(name)  # validate the name before fanning out
    keys = sorted(params)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(params[k] for k in keys))] or [{}]
    jobs = [(name, s, [f"{k}={v}" for k, v in c.items()]) for c in combos for s in seeds]
    for _, _, ov in jobs[:1]:
        load(name, ov)  # validate overrides once
    if scheduler:
        from dask.distributed import Client

        with Client(scheduler) as client:
            rows = client.gather(client.map(_sweep_one, jobs, pure=False))
    elif workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_sweep_one, jobs))
    else:
        rows = [_sweep_one(j) for j in jobs]
    table = pd.DataFrame(rows).sort_values(["seed", *keys] if keys else ["seed"]).reset_index(drop=True)
    if out is not None:
        out = Path(out) / name
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "results.csv", index=False)
        table.to_parquet(out / "results.parquet", index=False)
    return table
