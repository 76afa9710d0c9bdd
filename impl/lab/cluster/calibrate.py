"""``flk sim calibrate``: the simulator's figures beside the real cluster's, per figure.

Why this module exists: a study's figures are only as good as the simulator's
likeness to ``flk serve``. For one scenario this runs the simulator over a range of
seeds (mean and 95 % confidence interval per figure, Student's t) and the same
scenario on a real cluster (:mod:`.runner`, each run's value and the mean), and
gives per figure the ratio real/sim and a verdict against the tolerance the
scenario's ``[study]`` section declares (``tolerance``: the figures agree when
``|real mean - sim mean| <= tolerance x max(|sim mean|, |real mean|)``; both zero
agree). The validity verdicts are compared too: the simulator valid on every seed
and a real run invalid (or the other way round) is a mismatch of its own.

Figures compared: ``[study] calibrate`` or, by default, the headline figures and the
SLO metrics of the scenario. Writes ``calibration.json``, ``calibration.html`` (the
table) and one PNG per figure to the output folder. Real runs can be given as
finished cluster run directories (``real_dirs``) instead of being run.

The report's ``verdict`` is ``agree``, ``disagree``, or ``unknown`` when they disagree and
a real run's host had no CPU to spare for a quarter of its seconds or more
(:mod:`.hostload`, ``cluster.host`` of its results): its regions competed for CPU, which
the simulator does not model, so the disagreement does not say the simulator is wrong.
``flk sim calibrate`` exits 1 for both (it did not agree) and prints why it does not know.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from flk.sim import api as sim_api
from flk.sim.artifacts import figure_for_file, read_results
from flk.sim.scenario import Scenario

from .hostload import saturation_note

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    if df <= 0:
        return float("nan")
    keys = sorted(T95)
    return T95[max(k for k in keys if k <= df)] if df < 30 else 1.96


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95 % confidence interval of the mean (Student's t)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, m, m
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return m, m - half, m + half


def figures_of(sc: Scenario) -> list[str]:
    study = sc.data["study"]
    if study.get("calibrate"):
        return list(study["calibrate"])
    out = [h["metric"] for h in study.get("headline", [])]
    out += [s["metric"] for s in sc.data["slo"]]
    return list(dict.fromkeys(out)) or ["error_rate", "latency_p95_ms"]


def _num(v) -> float | None:
    return None if v is None else float(v)


def verdict(sim_mean: float, real_mean: float, tolerance: float) -> tuple[float | None, bool]:
    """(ratio real/sim or None, within tolerance)."""
    if any(math.isnan(x) for x in (sim_mean, real_mean)):
        return None, False
    ratio = real_mean / sim_mean if sim_mean else (1.0 if real_mean == 0 else None)
    scale = max(abs(sim_mean), abs(real_mean))
    return ratio, scale == 0 or abs(real_mean - sim_mean) <= tolerance * scale


def compare(sc: Scenario, sim_results: list[dict], real_results: list[dict]) -> dict:
    tolerance = float(sc.data["study"].get("tolerance", 0.5))
    rows = []
    for fig in figures_of(sc):
        sim_vals = [v for v in (_num(r["metrics"].get(fig)) for r in sim_results) if v is not None]
        real_vals = [v for v in (_num(r["metrics"].get(fig)) for r in real_results) if v is not None]
        s_mean, s_lo, s_hi = mean_ci(sim_vals)
        r_mean = sum(real_vals) / len(real_vals) if real_vals else float("nan")
        ratio, ok = verdict(s_mean, r_mean, tolerance)
        # a figure a run could not give (convergence_time_s of a run that never converged) disagrees
        sim_missing = len(sim_results) - len(sim_vals)
        real_missing = len(real_results) - len(real_vals)
        rows.append({"figure": fig, "sim": sim_vals, "sim_mean": s_mean, "sim_ci95": [s_lo, s_hi], "real": real_vals,
                     "real_mean": r_mean, "ratio": ratio, "tolerance": tolerance,
                     "sim_missing": sim_missing, "real_missing": real_missing,
                     "agrees": ok and not sim_missing and not real_missing})
    sim_valid = [bool(r["valid"]) for r in sim_results]
    real_valid = [bool(r["valid"]) for r in real_results]
    verdict_ok = all(sim_valid) == all(real_valid)
    ok = verdict_ok and all(r["agrees"] for r in rows)
    # a real run whose host had no CPU to spare measured a contention the simulator does not model:
    # its disagreement says nothing of the simulator (a run written before hosts were measured: not known)
    hosts = [(r.get("cluster") or {}).get("host") for r in real_results]
    saturated = [i + 1 for i, h in enumerate(hosts) if isinstance(h, dict) and h.get("saturated")]
    unknown = None if ok or not saturated else (
        f"real run{'s' if len(saturated) > 1 else ''} {', '.join(map(str, saturated))}: "
        f"{saturation_note(hosts[saturated[0] - 1])}; the disagreement may be the host's, not the simulator's")
    return {"scenario": sc.name, "tolerance": tolerance, "figures": rows,
            "sim_seeds": [r["seed"] for r in sim_results], "real_runs": len(real_results),
            "sim_valid": sim_valid, "real_valid": real_valid, "verdicts_agree": verdict_ok,
            "real_invalid_checks": sorted({c["id"] for r in real_results for c in r["invariants"] if not c["ok"]} |
                                          {f"SLO {s['metric']}" for r in real_results for s in r["slos"]
                                           if not s["ok"]}),
            "real_hosts": hosts, "host_saturated_runs": saturated,
            "verdict": "agree" if ok else ("unknown" if unknown else "disagree"), "unknown_reason": unknown,
            "ok": ok}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4g}"


def write(report: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n",
                                          encoding="utf-8")
    files = ["calibration.json", "calibration.html"]
    rows = []
    for r in report["figures"]:
        png = f"calibration-{r['figure']}.png"
        fig, ax = figure_for_file(5.0, 3.0)
        ax.scatter([0] * len(r["sim"]), r["sim"], label="sim (seeds)", alpha=0.6)
        if r["sim"]:
            lo, hi = r["sim_ci95"]
            ax.errorbar([0.15], [r["sim_mean"]], yerr=[[r["sim_mean"] - lo], [hi - r["sim_mean"]]], fmt="o",
                        color="black", label="sim mean, 95 % CI")
        ax.scatter([1] * len(r["real"]), r["real"], label="real runs", color="tab:red")
        ax.set_xticks([0, 1], ["simulator", "real cluster"])
        ax.set_title(f"{report['scenario']}: {r['figure']} ({'agrees' if r['agrees'] else 'OUTSIDE tolerance'})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / png, dpi=90)
        files.append(png)
        rows.append(f"<tr class={'ok' if r['agrees'] else 'bad'}><td>{html.escape(r['figure'])}</td>"
                    f"<td>{_fmt(r['sim_mean'])} [{_fmt(r['sim_ci95'][0])}, {_fmt(r['sim_ci95'][1])}]</td>"
                    f"<td>{', '.join([*(_fmt(v) for v in r['real']), *['none'] * r['real_missing']])}</td><td>{_fmt(r['real_mean'])}</td>"
                    f"<td>{_fmt(r['ratio'])}</td><td>{'agrees' if r['agrees'] else 'outside'} "
                    f"(tol {r['tolerance']})</td><td><img src='{png}' width=320></td></tr>")
    page = (f"<!doctype html><meta charset=utf-8><title>calibration {html.escape(report['scenario'])}</title>"
            "<style>body{font-family:sans-serif} td,th{border:1px solid #ccc;padding:4px} .bad{background:#fdd}"
            "</style>"
            f"<h1>Simulator vs real cluster: {html.escape(report['scenario'])}</h1>"
            f"<p>sim seeds {report['sim_seeds']}, real runs {report['real_runs']}; verdicts: sim valid "
            f"{report['sim_valid']}, real valid {report['real_valid']} "
            f"({'agree' if report['verdicts_agree'] else 'DIFFER'}); real runs failed "
            f"{html.escape(', '.join(report['real_invalid_checks']) or 'nothing')}</p>"
            f"<p>verdict: <b>{html.escape(report.get('verdict', 'agree' if report['ok'] else 'disagree'))}</b>"
            f"{(' -- ' + html.escape(report['unknown_reason'])) if report.get('unknown_reason') else ''}</p>"
            "<table><tr><th>figure</th><th>sim mean [95 % CI]</th><th>real runs</th><th>real mean</th>"
            f"<th>ratio real/sim</th><th>verdict</th><th>plot</th></tr>{''.join(rows)}</table>")
    (out / "calibration.html").write_text(page, encoding="utf-8")
    return files


def calibrate(sc: Scenario, seeds: list[int], real_runs: int, out: Path, backend: str = "sqlite",
              real_dirs: list[Path] | None = None, sim_overrides: list[str] | None = None, log=lambda _m: None) -> dict:
    from flk.sim.scenario import load

    sim_sc = load(sc.source, [*sc.overrides, *(sim_overrides or [])]) if sim_overrides else sc
    sim_results = []
    for seed in seeds:
        sim_results.append(sim_api.run(sim_sc, seed=seed, plots=False).results)
        log(f"calibrate: sim seed {seed}: valid={sim_results[-1]['valid']}")
    if real_dirs:
        real_results = [read_results(Path(d)) for d in real_dirs]
    else:
        from . import runner

        real_results = []
        for i in range(real_runs):
            real_results.append(runner.run(sc, seeds[i % len(seeds)], backend=backend, out=out / "real", plots=False,
                                           log=log))
            log(f"calibrate: real run {i + 1}: valid={real_results[-1]['valid']}")
    report = compare(sc, sim_results, real_results)
    report["files"] = write(report, out)
    return report


# -- flk sim calibrate --fit: this machine's parameters as a simulator profile ----------------

def _lognormal(samples_ms: list[float]) -> dict:
    """The lognormal fit the scenario schema takes: median and sigma of ln(samples)."""
    import statistics

    logs = [math.log(max(s, 1e-6)) for s in samples_ms]
    return {"dist": "lognormal", "median": round(statistics.median(samples_ms), 4),
            "sigma": round(statistics.pstdev(logs), 4)}


def fit(samples: int = 100, where: str | None = None, log=lambda _m: None) -> dict:
    """Measure, on this machine: the latency of a 4 KiB append + fsync in ``where`` (default the
    temp folder; put it on the disk the WAL lives on), the latency of one SQLite dedup store call
    (a put-if-absent, then a get, of one key), and the CPU time per request of the verify
    pipeline (realistic PCS, memory store: everything but the store and the fsync wait).
    Returns the profile: ``region_defaults`` (``fsync_ms``, ``store_ms``, ``verify_ms``) and
    the raw figures with the load average they were taken under."""
    import os
    import shutil
    import tempfile
    import time

    from flk.impl.dedup import open_store
    from flk.impl.dedup.base import StoredOutcome
    from flk.impl.lab.bench import verify as bench_verify

    tmp = tempfile.mkdtemp(prefix="flk-fit-", dir=where)
    load1 = os.getloadavg()[0]
    try:
        fsync = []
        path = os.path.join(tmp, "fsync.bin")
        block = os.urandom(4096)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(samples):
                t0 = time.perf_counter()
                os.write(fd, block)
                os.fsync(fd)
                fsync.append((time.perf_counter() - t0) * 1000)
        finally:
            os.close(fd)
        log(f"fit: fsync median {sorted(fsync)[len(fsync) // 2]:.3f} ms over {samples}")
        store = open_store(f"sqlite:///{tmp}/dedup.sqlite3")
        calls = []
        try:
            now = time.time()
            outcome = StoredOutcome("0" * 64, 200, b"{}", now, "fit", "v1")
            for i in range(samples):
                t0 = time.perf_counter()
                store.put_if_absent("fit", f"k{i}", outcome, now)
                calls.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                store.get("fit", f"k{i}", now)
                calls.append((time.perf_counter() - t0) * 1000)
        finally:
            store.close()
        log(f"fit: store call median {sorted(calls)[len(calls) // 2]:.3f} ms over {len(calls)}")
        bodies = bench_verify._realistic_bodies(max(200, samples * 10), "fit")
        cpu_rates = [bench_verify._one_run("memory", bodies, 64, tmp)[1] for _ in range(3)]
        verify_ms = 1000.0 / sorted(cpu_rates)[1]
        log(f"fit: CPU per request {verify_ms:.4f} ms (median of 3 runs of {len(bodies)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "profile": {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "load_average_1m": round(load1, 2), "samples": samples, "cpu_count": os.cpu_count(),
                    "fsync_ms_p50": round(sorted(fsync)[len(fsync) // 2], 4),
                    "store_ms_p50": round(sorted(calls)[len(calls) // 2], 4)},
        "region_defaults": {"fsync_ms": _lognormal(fsync), "store_ms": _lognormal(calls),
                            "verify_ms": round(verify_ms, 5)},
    }


def profile_toml(profile: dict) -> str:
    """The profile as the TOML file a scenario names with ``[study] profile``."""
    lines = ["# a simulator profile measured by `flk sim calibrate --fit` (name it in a scenario's",
             "# [study] profile = \"PATH\"): its [region_defaults] replace the schema's defaults", "", "[profile]"]
    for k, v in profile["profile"].items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines += ["", "[region_defaults]"]
    for k, v in profile["region_defaults"].items():
        if isinstance(v, dict):
            inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
            lines.append(f"{k} = {{ {inner} }}")
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"
