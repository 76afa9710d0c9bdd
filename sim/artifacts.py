"""Run artifacts in ``runs/<scenario>/<seed>/``: the scenario as run, the
history, results, the metrics time series and PNG plots.

Notebooks and the demo read these files; nothing here is needed to *check* a
run (the checkers work on the in-memory history). :func:`read_results` and
:func:`read_scenario` are the one reader of a run folder's ``results.json`` and
``scenario.toml``, :func:`history_digest` the one check of its saved history (``flk sim replay|diff|shrink|report|coverage``, ``flk kpi``,
``flk compliance``, calibration, notebooks): a file that is missing, unreadable or
of another shape is a :class:`ScenarioError` naming the file and the key, never a
``KeyError`` or ``TypeError`` deep in a command.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import tomli_w

from ..impl.core import textdata
from ..impl.core.schema import Engine, Field
from ..impl.core.signals import MASK64
from .history import COMPACT, PLAIN, HistoryError, file_digest, find_history, iter_history
from .schema import ScenarioError

STAMPED_LIBRARIES = ("simpy", "numpy", "scipy", "networkx")


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """Package version, git commit of the source checkout and whether its tracked files had
    uncommitted changes (both null outside a checkout), Python and key library versions. The
    one place that asks git (the HTML report shows the same fields)."""
    return _code_version()


def _code_version() -> dict:
    import importlib.metadata
    import platform
    import subprocess

    def version(dist: str):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    here = Path(__file__).resolve().parent
    commit, dirty = None, None
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            commit = done.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": "flk-lab", "version": version("flk-lab"), "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(),
            "libraries": {name: version(name) for name in STAMPED_LIBRARIES}}


def stamp(seed: int, overrides: list[str], scenario_source: str, plant: str | None = None) -> dict:
    """The reproducibility stamp of ``results.json``: code version (package, git commit of the
    source checkout or null, and whether its tracked files had uncommitted changes), Python and
    key library versions, the exact seed and overrides (and a planted bug's name, if any)."""
    out = {**code_version(), "seed": seed, "overrides": list(overrides), "scenario_source": scenario_source}
    if plant:
        out["plant"] = plant
    return out


def write_all(out_dir: Path, scenario: dict, history, results: dict, rows: list[dict], plots: bool = True,
              history_file: str = PLAIN) -> dict:
    """``history_file``: ``history.jsonl`` or the compact ``history.jsonl.gz`` (an earlier run's
    file of the other format is removed: a folder holds one history)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scenario.toml").write_text(tomli_w.dumps(scenario), encoding="utf-8")
    history.write(out_dir / history_file)
    for other in (PLAIN, COMPACT):
        if other != history_file:
            (out_dir / other).unlink(missing_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(out_dir / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    files = {"scenario": "scenario.toml", "history": history_file, "results": "results.json", "metrics": "metrics.csv"}
    if plots and rows:
        files.update(plot_run(out_dir, rows, history.events, results))
    return files


# (column of metrics.csv, legend text): the legend leads with the column's name from sim/METRICS.md
LATENCY_SERIES = [("attempt_p95_ms", "attempt_p95_ms (per attempt)"),
                  ("e2e_p95_ms", "e2e_p95_ms (end to end, across retries)")]
THROUGHPUT_SERIES = [("answered", "answered"), ("ok", "ok (200/202)"), ("attempt_errors", "attempt_errors (5xx)"),
                     ("attempt_429", "attempt_429")]
FAULT_COLOUR = "tab:red"


_RESULTS = Engine(error=ScenarioError, others_pass=True)
# what the readers of results.json rely on (flk sim run and flk cluster run write more; other keys pass)
RESULTS_FIELDS = (
    Field("scenario", "str", None, "the scenario's name", required=True),
    Field("seed", "int", None, "the run's seed", minimum=0, maximum=MASK64, required=True),
    Field("digest", "str", None, "SHA-256 of the history's canonical line stream", required=True),
    Field("invariants", "tables", None, "the invariant checks", required=True, fields=(
        Field("id", "str", None, "invariant ID", required=True), Field("ok", "bool", None, "held", required=True))),
    Field("slos", "tables", None, "the SLO checks", required=True, fields=(
        Field("metric", "str", None, "the metric", required=True), Field("ok", "bool", None, "met", required=True))),
    Field("metrics", "table", None, "the run's figures", required=True),
    Field("parameters", "table", None, "overrides and planted bug"),
    Field("stamp", "table", None, "code version and run key"),
    Field("kpi", "table", None, "ground-truth KPIs"),
)
# what the readers of scenario.toml rely on before the scenario's own check (validate)
SCENARIO_FIELDS = (Field("scenario", "table", None, "the scenario", required=True,
                         fields=(Field("name", "str", None, "its name", required=True),)),)


def read_results(run_dir: Path) -> dict:
    """``run_dir/results.json``, checked against :data:`RESULTS_FIELDS` (:class:`ScenarioError`
    otherwise: missing, not JSON, or another shape)."""
    path = Path(run_dir) / "results.json"
    try:
        doc = textdata.json_loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError("(file)", "missing: not a run directory (flk sim run and flk cluster run write one)",
                            str(path)) from None
    except (OSError, ValueError) as exc:
        raise ScenarioError("(file)", f"unreadable: {exc}", str(path)) from None
    try:
        _RESULTS.check_table(doc, RESULTS_FIELDS, "")
    except ScenarioError as exc:
        raise ScenarioError(exc.key, exc.reason, str(path)) from None
    return doc


def history_digest(run_dir: Path) -> tuple[Path, str]:
    """``run_dir``'s saved history (``history.jsonl`` or ``history.jsonl.gz``) and the digest of
    what it holds (:func:`flk.sim.history.file_digest`, what ``results.json`` records), every line
    read as an event first: a missing, cut or damaged history is a :class:`ScenarioError` naming it."""
    try:
        path = find_history(run_dir)
    except FileNotFoundError:
        raise ScenarioError("(file)", f"missing (nor {COMPACT}): not a run directory of flk sim run",
                            str(Path(run_dir) / PLAIN)) from None
    try:
        for _event in iter_history(path):
            pass
        return path, file_digest(path)
    except HistoryError as exc:  # its text names the file, then the line
        where = str(exc).removeprefix(str(path)).lstrip(":").strip()
        raise ScenarioError("(file)", f"line {where}" if where[:1].isdigit() else where, str(path)) from None
    except OSError as exc:
        raise ScenarioError("(file)", f"unreadable: {exc}", str(path)) from None


def read_scenario(run_dir: Path) -> dict:
    """``run_dir/scenario.toml``, the scenario as run: TOML whose ``[scenario]`` table names it
    (:class:`ScenarioError` otherwise), over the defaults (:func:`flk.sim.scenario.completed`: a
    folder written before a key existed, or a damaged file, still reads; a replay then says
    whether it reproduces), validated."""
    from .scenario import completed, validate

    path = Path(run_dir) / "scenario.toml"
    try:
        data = textdata.toml_loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError("(file)", "missing: not a run directory of flk sim run", str(path)) from None
    except (OSError, ValueError) as exc:
        raise ScenarioError("(file)", f"unreadable: {exc}", str(path)) from None
    try:
        _RESULTS.check_table(data, SCENARIO_FIELDS, "")
        data = completed(data)
        validate(data)
    except ScenarioError as exc:
        raise ScenarioError(exc.key, exc.reason, str(path)) from None
    return data


def figure_for_file(width: float, height: float):
    """A figure drawn straight to a file (no pyplot, no global backend: an inline Jupyter
    backend in the same process stays as it is)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def fault_spans(events: list[dict], end_s: float) -> list[tuple[str, float, float]]:
    """(kind and target, start, end) of every fault; one still active ends at ``end_s``."""
    open_at: dict[str, float] = {}
    spans = []
    for e in events:
        kind = e["type"]
        if kind != "fault.start" and kind != "fault.end":  # (every other event: no key to build)
            continue
        key = f"{e.get('kind', '')} {e.get('target', '')}".strip()
        if kind == "fault.start":
            open_at[key] = e["t_us"] / 1e6
        elif key in open_at:
            spans.append((key, open_at.pop(key), e["t_us"] / 1e6))
    return spans + [(key, t0, end_s) for key, t0 in open_at.items()]


def marks(events: list[dict], metrics: dict) -> list[tuple[str, float, float, str]]:
    """(label, start, end, colour) of the headline durations: RPO before and RTO after a
    region loss, convergence after the heal."""
    out = []
    crash = next((e["t_us"] / 1e6 for e in events if e["type"] == "fault.start" and e["kind"] == "crash"), None)
    if crash is not None and metrics.get("rpo_s"):
        out.append((f"RPO {metrics['rpo_s']:.2f} s", crash - metrics["rpo_s"], crash, "tab:purple"))
    if crash is not None and metrics.get("rto_s"):
        out.append((f"RTO {metrics['rto_s']:.2f} s", crash, crash + metrics["rto_s"], "tab:orange"))
    heal = next((e["t_us"] / 1e6 for e in events if e["type"] == "phase" and e.get("name") == "heal"), None)
    if heal is not None and metrics.get("convergence_time_s"):
        out.append((f"convergence {metrics['convergence_time_s']:.2f} s", heal,
                    heal + metrics["convergence_time_s"], "tab:green"))
    return out


def whole_bins(rows: list[dict], end_s: float, bin_s: float = 1.0) -> list[dict]:
    """The rows whose bin lies inside the run: a last, partial bin would draw a drop to zero."""
    return [r for r in rows if r["t_s"] + bin_s <= end_s + 1e-9] or rows[:1]


def value(v) -> float:
    """A metrics.csv cell as a float; an empty bucket (None or "") is NaN: drawn as a gap, never a zero."""
    if v is None or v == "":
        return float("nan")
    return float(v)


def _plot_series(out_dir: Path, fname: str, title: str, ylabel: str, rows: list[dict], series, decorate):
    fig, ax = figure_for_file(8, 3)
    t = [value(r["t_s"]) for r in rows]
    for key, label in series:
        ax.plot(t, [value(r.get(key)) for r in rows], label=label)
    decorate(ax)
    ax.set_title(title)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / fname, dpi=90)
    return fig


def plot_run(out_dir: Path, rows: list[dict], events: list[dict], results: dict,
             figures: dict | None = None) -> dict:
    """PNG plots over the whole run (faults, heal, quiescence): fault windows shaded red (one
    legend entry, "fault active"; no fault wording on a run without faults), RPO/RTO/convergence
    marked, 429s drawn, one line per region where there are several; a bucket without samples
    is a gap. ``figures`` (tests) receives every figure by file name."""
    end_s = (events[-1]["t_us"] / 1e6) if events else 0.0
    spans, spans_marked = fault_spans(events, end_s), marks(events, results.get("metrics", {}))
    name, rows = results.get("scenario", ""), whole_bins(rows, end_s)

    def decorate(ax):
        for i, (_, t0, t1) in enumerate(spans):
            ax.axvspan(t0, t1, color=FAULT_COLOUR, alpha=0.12, label="fault active" if i == 0 else None)
        for label, t0, t1, colour in spans_marked:
            ax.axvspan(t0, max(t1, t0 + end_s / 400), color=colour, alpha=0.18, label=label)
        ax.set_xlim(0, max(end_s, 1.0))

    regions = sorted({k.partition("@")[2] for k in rows[0] if k.startswith("sent@")}) if rows else []
    specs = [("latency.png", "p95 latency per second", "ms", LATENCY_SERIES),
             ("throughput.png", "answers per second", "answers / s", THROUGHPUT_SERIES)]
    if regions:
        specs += [("regions_ok.png", "ok (200/202) per second by region", "answers / s",
                   [(f"ok@{r}", f"ok@{r}") for r in regions] + [(f"attempt_429@{r}", f"attempt_429@{r}")
                                                               for r in regions]),
                  ("regions_latency.png", "attempt_p95_ms by region", "ms",
                   [(f"attempt_p95_ms@{r}", f"attempt_p95_ms@{r}") for r in regions])]
    if rows and "replication_lag_s" in rows[0]:
        lag_regions = sorted(k.partition("@")[2] for k in rows[0] if k.startswith("replication_lag_s@"))
        specs.append(("replication_lag.png", "replication lag per second (each region's stream)", "s",
                      [("replication_lag_s", "replication_lag_s (worst region)")]
                      + [(f"replication_lag_s@{r}", f"replication_lag_s@{r}") for r in lag_regions]))
    if rows and "divergence" in rows[0]:
        specs.append(("divergence.png", "key-count divergence across regions", "keys",
                      [("divergence", "divergence")]))
    files = {}
    caption = " (red: faults)" if spans else ""
    for fname, title, ylabel, series in specs:
        fig = _plot_series(out_dir, fname, f"{name}: {title}{caption}", ylabel, rows, series, decorate)
        if figures is not None:
            figures[fname] = fig
        files[fname.removesuffix(".png")] = fname
    files["faults"] = _plot_faults(out_dir, name, spans, spans_marked, end_s)
    return files


def _plot_faults(out_dir: Path, name: str, spans, spans_marked, end_s: float) -> str:
    fig, ax = figure_for_file(8, 2.5)
    lanes: dict[str, int] = {}
    for key, t0, t1 in spans:
        lane = lanes.setdefault(key, len(lanes))
        ax.barh(lane, max(t1 - t0, end_s / 200 if end_s else 0.01), left=t0, color="tab:red", alpha=0.6)
    for label, t0, t1, colour in spans_marked:
        lane = lanes.setdefault(label, len(lanes))
        ax.barh(lane, max(t1 - t0, end_s / 200 if end_s else 0.01), left=t0, color=colour, alpha=0.6)
    if not spans:
        ax.text(0.5, 0.5, "no faults in this scenario", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks(list(lanes.values()), list(lanes.keys()), fontsize="small")
    ax.set_xlim(0, max(end_s, 1.0))
    ax.set_title(f"{name}: fault timeline")
    ax.set_xlabel("simulated time (s)")
    fig.tight_layout()
    fig.savefig(out_dir / "faults.png", dpi=90)
    return "faults.png"
