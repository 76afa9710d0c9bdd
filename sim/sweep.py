"""Sweeps for science: one scenario over many seeds and parameter values.

Every sweep writes to its own folder named by a hash of its spec (scenario, seeds,
parameters), so a different sweep never overwrites an earlier one and re-running the
same spec reproduces the same files. The folder holds one tidy table (``results.csv`` and
``results.parquet``, parameter columns typed and sorted numerically), the failing seeds
with the commands that replay them (``failures.csv``), an aggregate per parameter point
(mean, median, 95 % bootstrap CI with a fixed seed: ``aggregate.csv``) and one plot per
headline figure against the first parameter that varies, with the CI as error bars.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shlex
from pathlib import Path

from ..impl.core.errors import InvalidInput
from .scenario import load

DEFAULT_HEADLINE = ("error_rate", "latency_p95_ms", "rate_429", "rpo_s", "rto_s", "replication_lag_max_s")
BOOTSTRAP_SEED = 20261123


def typed(value: str):
    """A parameter value as the number it spells (int, then float), else the string."""
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            continue
    return value


def spec_hash(name: str, seeds: list[int], params: dict[str, list[str]]) -> str:
    spec = {"scenario": name, "seeds": list(seeds), "params": {k: list(v) for k, v in sorted(params.items())}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def sweep_dir(out: Path, name: str, seeds: list[int], params: dict[str, list[str]]) -> Path:
    return Path(out) / f"{Path(name).stem}-{spec_hash(name, seeds, params)}"


def jobs_for(name: str, seeds: list[int], params: dict[str, list[str]]) -> list[tuple]:
    keys = sorted(params)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(params[k] for k in keys))] or [{}]
    return [(name, seed, [f"{k}={v}" for k, v in combo.items()], point)
            for point, combo in enumerate(combos) for seed in seeds]


def replay_command(name: str, seed: int, overrides: list[str]) -> str:
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    return f"flk sim run {shlex.quote(name)} --seed {seed} {sets}".strip()


def run_one(job: tuple, runs_root: str | None = None, keep_runs: bool = False) -> dict:
    """One sweep run -> one table row. Failing runs always keep their artifacts (when the sweep
    has a folder) so ``flk sim replay`` works on them; passing runs only with ``keep_runs``."""
    from . import api

    name, seed, overrides, point = job
    res = api.run(name, seed=seed, overrides=overrides)
    row = {"scenario": res.scenario.name, "seed": seed, "point": point, "valid": res.valid,
           "digest": res.digest, "overrides": " ".join(overrides), "run_dir": None}
    if runs_root is not None and (keep_runs or not res.valid):
        row["run_dir"] = str(api.save(res, Path(runs_root) / f"point-{point}", plots=False))
    for o in overrides:
        key, value = o.split("=", 1)
        row[key] = typed(value)
    for key, value in res.results["metrics"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = value
    for check in res.results["invariants"]:
        row[check["id"]] = check["ok"]
    row["failed"] = ",".join([c["id"] for c in res.results["invariants"] if not c["ok"]]
                             + [f"SLO {s['metric']}" for s in res.results["slos"] if not s["ok"]])
    return row


def dask_client(address: str):
    """A Dask client of the scheduler at ``address`` (``--scheduler``): an address Dask cannot
    parse, or a scheduler it cannot reach within its connect timeout, is :class:`InvalidInput`
    (one line and exit 2 on the command line, not Dask's traceback or a bare "OSError")."""
    from flk.impl.core.optional import require

    distributed = require("dask.distributed")
    try:
        return distributed.Client(address)
    except ValueError as exc:  # "missing port number in address ...", an unknown protocol
        raise InvalidInput("--scheduler", f"{address!r}: {exc}") from None
    except OSError as exc:  # refused, timed out: Dask's "Timed out trying to connect to ..."
        raise InvalidInput("--scheduler", f"could not reach the Dask scheduler at {address!r}: "
                                          f"{exc or type(exc).__name__}") from None


def process_pool(workers: int):
    """A pool of ``workers`` processes for runs (sweeps, exploration, causality forks). Its
    processes start from a forkserver -- a clean process that imported the simulator once --
    never forked from the caller: a fork copies the caller's objects without its threads, and
    an object whose finaliser needs one of those threads hangs the child that collects it.
    Found with a Dask ``Client`` a failed ``--scheduler`` left behind: each forked child's
    garbage collection ran its ``close`` and waited 60 s for an event loop thread the fork had
    not copied (a notebook kernel holds such threads too). A child reads the environment the
    forkserver started with (the first pool of the process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["flk.sim.world", "flk.sim.sweep"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def execute(jobs: list[tuple], workers: int, scheduler: str | None, runs_root: str | None, keep_runs: bool,
            progress: bool = False) -> list[dict]:
    """Run the jobs on a Dask cluster, a process pool or in process; a bar counts finished runs."""
    import functools

    from . import progress as progress_bars

    one = functools.partial(run_one, runs_root=runs_root, keep_runs=keep_runs)
    rows = []
    with progress_bars.bar(len(jobs), "sweep", unit="run", enabled=progress and progress_bars.wanted()) as done:
        if scheduler:
            from flk.impl.core.optional import require

            distributed = require("dask.distributed")
            as_completed = distributed.as_completed

            with dask_client(scheduler) as client:
                for future in as_completed(client.map(one, jobs, pure=False)):
                    rows.append(future.result())
                    done.update(1)
        elif workers > 1:
            from concurrent.futures import as_completed

            with process_pool(workers) as pool:
                for future in as_completed([pool.submit(one, job) for job in jobs]):
                    rows.append(future.result())
                    done.update(1)
        else:
            for job in jobs:
                rows.append(one(job))
                done.update(1)
    return rows


def headline_metrics(name: str, table) -> list[str]:
    """The study's headline figures when the scenario names them, else the usual ones present."""
    study = load(name).data.get("study") or {}
    wanted = [item["metric"] for item in study.get("headline", [])] or list(DEFAULT_HEADLINE)
    return [m for m in wanted if m in table.columns]


def confidence_interval(values) -> tuple[float, float]:
    """95 % bootstrap CI of the mean (fixed seed: the same values give the same interval)."""
    import numpy as np
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return float(data.mean()), float(data.mean())
    res = bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                    random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate(table, keys: list[str], metrics: list[str]):
    """One row per parameter point and headline figure: runs, mean, median, 95 % CI."""
    import pandas as pd

    rows = []
    groups = table.groupby(keys, sort=True) if keys else [((), table)]
    for point, group in groups:
        point = point if isinstance(point, tuple) else (point,)
        for metric in metrics:
            low, high = confidence_interval(group[metric])
            rows.append({**dict(zip(keys, point, strict=True)), "metric": metric, "runs": len(group),
                         "valid_runs": int(group["valid"].sum()), "mean": float(group[metric].mean()),
                         "median": float(group[metric].median()), "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)


def failures(table, name: str) -> list[dict]:
    """The failing seeds, each with what failed and the commands that replay it."""
    out = []
    for row in table[~table["valid"]].to_dict("records"):
        overrides = row["overrides"].split() if row["overrides"] else []
        item = {"seed": row["seed"], "point": row["point"], "overrides": row["overrides"], "failed": row["failed"],
                "rerun": replay_command(name, row["seed"], overrides)}
        item["replay"] = f"flk sim replay {shlex.quote(row['run_dir'])}" if row.get("run_dir") else ""
        out.append(item)
    return out


def plot(summary, keys: list[str], metrics: list[str], out_dir: Path, name: str) -> list[str]:
    """One PNG per headline figure: mean vs the first varied parameter, 95 % CI as error bars, one line
    per combination of the other parameters (object-oriented Matplotlib, no backend switching)."""
    from matplotlib.figure import Figure

    if not keys or summary.empty:
        return []
    varied = [k for k in keys if summary[k].nunique() > 1]
    x_key = (varied or keys)[0]
    others = [k for k in keys if k != x_key]
    files = []
    for metric in metrics:
        part = summary[summary["metric"] == metric]
        fig = Figure(figsize=(6, 3.5))
        ax = fig.add_subplot()
        lines = part.groupby(others, sort=True) if others else [((), part)]
        for label, line in lines:
            label = label if isinstance(label, tuple) else (label,)
            line = line.sort_values(x_key)
            errors = [line["mean"] - line["ci95_low"], line["ci95_high"] - line["mean"]]
            text = ", ".join(f"{k}={v}" for k, v in zip(others, label, strict=True)) or "mean, 95 % CI"
            ax.errorbar(line[x_key], line["mean"], yerr=errors, marker="o", capsize=3, label=text)
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric)
        ax.set_title(f"{name}: {metric} vs {x_key}")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fname = f"{metric}-vs-{x_key}.png"
        fig.savefig(out_dir / fname, dpi=90)
        files.append(fname)
    return files


def sweep(name: str, seeds: list[int], params: dict[str, list[str]], workers: int = 2,
          scheduler: str | None = None, out: Path | None = None, keep_runs: bool = False,
          progress: bool = False):
    """Run ``name`` for every seed at every parameter point; return the tidy table (its
    ``attrs`` hold ``out_dir``, ``failures`` and the ``aggregate`` when ``out`` is given)."""
    import pandas as pd

    load(name)  # validate the name before fanning out
    keys = sorted(params)
    jobs = jobs_for(name, seeds, params)
    for overrides in dict.fromkeys(tuple(job[2]) for job in jobs):  # every parameter point, before fanning out
        load(name, list(overrides), option="--param")
    folder = sweep_dir(out, name, seeds, params) if out is not None else None
    runs_root = str(folder / "runs") if folder is not None else None
    rows = execute(jobs, workers, scheduler, runs_root, keep_runs, progress=progress)
    table = pd.DataFrame(rows).sort_values([*keys, "seed"]).reset_index(drop=True)
    metrics = headline_metrics(name, table)
    summary = aggregate(table, keys, metrics)
    failing = failures(table, name)
    table.attrs.update({"failures": failing, "headline": metrics})
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "results.csv", index=False)
        table.to_parquet(folder / "results.parquet", index=False)
        summary.to_csv(folder / "aggregate.csv", index=False)
        pd.DataFrame(failing, columns=["seed", "point", "overrides", "failed", "rerun", "replay"]).to_csv(
            folder / "failures.csv", index=False)
        plots = plot(summary, keys, metrics, folder, load(name).name)
        (folder / "sweep.json").write_text(json.dumps(
            {"scenario": name, "seeds": list(seeds), "params": params, "headline": metrics, "plots": plots},
            indent=2, sort_keys=True) + "\n", encoding="utf-8")
        table.attrs["out_dir"] = str(folder)
    table.attrs["aggregate"] = summary
    return table
