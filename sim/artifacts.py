"""Run artifacts in ``runs/<scenario>/<seed>/``: the scenario as run, the
history, results, the metrics time series and PNG plots.

Notebooks and the demo read these files; nothing here is needed to *check* a
run (the checkers work on the in-memory history).
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import tomli_w

STAMPED_LIBRARIES = ("simpy", "numpy", "scipy", "networkx")


@functools.lru_cache(maxsize=1)
def _code_version() -> dict:
    import importlib.metadata
    import platform
    import subprocess

    def version(dist: str):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10)
        commit = done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": "flk-lab", "version": version("flk-lab"), "git_commit": commit,
            "python": platform.python_version(),
            "libraries": {name: version(name) for name in STAMPED_LIBRARIES}}


def stamp(seed: int, overrides: list[str], scenario_source: str) -> dict:
    """The reproducibility stamp of ``results.json``: code version (package, git commit of the
    source checkout or null), Python and key library versions, the exact seed and overrides."""
    return {**_code_version(), "seed": seed, "overrides": list(overrides), "scenario_source": scenario_source}


def write_all(out_dir: Path, scenario: dict, history, results: dict, rows: list[dict], plots: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scenario.toml").write_text(tomli_w.dumps(scenario), encoding="utf-8")
    history.write(out_dir / "history.jsonl")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(out_dir / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    files = {"scenario": "scenario.toml", "history": "history.jsonl", "results": "results.json", "metrics": "metrics.csv"}
    if plots and rows:
        files.update(plot_run(out_dir, rows, history.events, results))
    return files


LATENCY_SERIES = [("attempt_p95_ms", "per attempt"), ("e2e_p95_ms", "end to end (across retries)")]


def plot_run(out_dir: Path, rows: list[dict], events: list[dict], results: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in rows]
    files = {}

    def fault_spans(ax):
        open_at: dict[tuple, float] = {}
        for e in events:
            if e["type"] == "fault.start":
                open_at[(e["kind"], e.get("target", ""))] = e["t_us"] / 1e6
            elif e["type"] == "fault.end":
                t0 = open_at.pop((e["kind"], e.get("target", "")), None)
                if t0 is not None:
                    ax.axvspan(t0, e["t_us"] / 1e6, color="tab:red", alpha=0.12)
        for t0 in open_at.values():
            ax.axvspan(t0, t[-1] if t else t0, color="tab:red", alpha=0.12)

    name = results.get("scenario", "")
    specs = [
        ("latency.png", "p95 latency per second (ms)", LATENCY_SERIES),
        ("throughput.png", "answers per second", [("answered", "answered"), ("ok", "200/202"), ("attempt_errors", "5xx attempts")]),
    ]
    if rows and "replication_lag_s" in rows[0]:
        specs.append(("replication_lag.png", "replication lag (s)", [("replication_lag_s", "lag")]))
    if rows and "divergence" in rows[0]:
        specs.append(("divergence.png", "key-count divergence across regions", [("divergence", "divergent keys")]))
    for fname, title, series in specs:
        fig, ax = plt.subplots(figsize=(8, 3))
        for key, label in series:
            ax.plot(t, [r[key] for r in rows], label=label)
        fault_spans(ax)
        ax.set_title(f"{name}: {title} (red: faults)")
        ax.set_xlabel("simulated time (s)")
        ax.legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=90)
        plt.close(fig)
        files[fname.removesuffix(".png")] = fname
    # fault timeline
    fig, ax = plt.subplots(figsize=(8, 2.5))
    lanes: dict[str, int] = {}
    open_at: dict[tuple, float] = {}
    end_t = (events[-1]["t_us"] / 1e6) if events else 0.0
    spans = []
    for e in events:
        if e["type"] == "fault.start":
            open_at[(e["kind"], e.get("target", ""))] = e["t_us"] / 1e6
        elif e["type"] == "fault.end":
            key = (e["kind"], e.get("target", ""))
            if key in open_at:
                spans.append((key, open_at.pop(key), e["t_us"] / 1e6))
    spans.extend((k, t0, end_t) for k, t0 in open_at.items())
    for (kind, target), t0, t1 in spans:
        lane = lanes.setdefault(f"{kind} {target}".strip(), len(lanes))
        ax.barh(lane, max(t1 - t0, end_t / 200 if end_t else 0.01), left=t0, color="tab:red", alpha=0.6)
    if not spans:
        ax.text(0.5, 0.5, "no faults in this scenario", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks(list(lanes.values()), list(lanes.keys()), fontsize="small")
    ax.set_xlim(0, max(end_t, 1.0))
    ax.set_title(f"{name}: fault timeline")
    ax.set_xlabel("simulated time (s)")
    fig.tight_layout()
    fig.savefig(out_dir / "faults.png", dpi=90)
    plt.close(fig)
    files["faults"] = "faults.png"
    return files
