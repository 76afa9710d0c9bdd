"""The lab's shareable HTML report: one self-contained page per demo or set of runs.

A report is read by people who did not run anything: a reviewer opening an attachment,
a CI artifact browser. So the page carries everything inline (CSS in a ``<style>`` block,
plots as base64 ``data:`` URIs) and says what it shows: each scenario's description, an
invariant table (kind, checked count, verdict; "not exercised" where nothing was
checked), an SLO table, the headline figures (RPO, RTO, convergence, lag) the run has,
the plots with captions, the vectors / proofs / server summaries of the demo, and a
stamp (package version, git commit, date).

This module only *reads* run artifacts (``results.json``, ``scenario.toml`` and the PNGs
the simulator wrote to a run directory, and checks the saved history is the one
``results.json`` records); it never runs anything.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
from collections import defaultdict
from pathlib import Path

from ..core import textdata

REPO_ROOT = Path(__file__).resolve().parents[2]

CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--muted:#57606a;--line:#d0d7de;--head:#f6f8fa}
body{font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;max-width:1120px;
margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;border-bottom:1px solid var(--line);padding-bottom:4px;
margin-top:36px}h3{font-size:16px;margin:24px 0 6px}
.stamp{color:var(--muted);font-size:13px}.stamp code{background:var(--head);padding:1px 4px;border-radius:4px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--head)}td:first-child{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass,.holds{color:var(--ok);font-weight:600}.fail,.violated{color:var(--bad);font-weight:600}
.skipped,.not-exercised{color:var(--warn);font-weight:600}
.card{border:1px solid var(--line);border-radius:8px;padding:4px 18px 12px;margin:16px 0}
.desc{color:var(--muted);margin:0 0 8px}
figure{margin:10px 0 18px}figure img{max-width:100%;border:1px solid var(--line);border-radius:4px}
figcaption{color:var(--muted);font-size:13px}
.figures{display:flex;gap:12px;flex-wrap:wrap}.figure{border:1px solid var(--line);border-radius:6px;
padding:6px 12px;min-width:120px}.figure b{display:block;font-size:18px}.figure span{color:var(--muted);font-size:12px}
"""

# captions name the metrics.csv columns (sim/METRICS.md); "red bands" only on a run with faults
PLOT_CAPTIONS = {
    "latency": "attempt_p95_ms (per attempt) and e2e_p95_ms (end to end, across retries) per simulated second; "
               "a gap is a second without answers.",
    "throughput": "answered, ok (200/202), attempt_errors (5xx) and attempt_429 per simulated second.",
    "replication_lag": "replication_lag_s per simulated second: the worst region and each region's stream "
                       "(a crashed region's stream keeps ageing until it ships again).",
    "divergence": "divergence: the key-count difference between regions per simulated second; "
                  "it must return to zero after heal (INV-CONVERGENCE).",
    "faults": "Fault timeline: one lane per fault kind and target, bars span the time each fault was active.",
    "regions_ok": "ok@<region> (200/202) and attempt_429@<region> per simulated second, one line per region.",
    "regions_latency": "attempt_p95_ms@<region> per simulated second; a gap is a second without answers there.",
}
FAULT_NOTE = " Red bands: fault windows (legend: fault active)."
OTHER_PLOT = "A plot the run wrote (see sim/METRICS.md for its series)."

# headline figures: (metrics key, label, unit); each label carries the metric's one name (sim/METRICS.md)
HEADLINE = [(key, f"{label} ({key})", unit) for key, label, unit in (
    ("requests", "requests", ""), ("throughput_per_s", "throughput", "/s"), ("error_rate", "error rate", ""),
    ("latency_p50_ms", "p50 latency", " ms"), ("latency_p95_ms", "p95 latency", " ms"),
    ("latency_p99_ms", "p99 latency", " ms"), ("rpo_s", "RPO", " s"), ("rto_s", "RTO", " s"),
    ("convergence_time_s", "convergence", " s"), ("failover_detection_s", "failover detection", " s"),
    ("replication_lag_p95_s", "replication lag p95", " s"), ("divergence_max", "max key-count divergence", ""),
    ("conflicts", "conflicts", ""), ("conflicts_won_by_later_write", "conflicts won by a later write", ""),
    ("rate_429", "429 rate", ""))]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def number(value) -> str:
    """A figure as people read it: integers as is, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def table(headers: list[str], rows: list[list], css_id: str = "", cell_class=None) -> str:
    """An HTML table; ``cell_class(column, value)`` may give a cell its class (verdict colours)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for column, value in zip(headers, row, strict=True):
            css = cell_class(column, value) if cell_class else ""
            css = css or ("num" if isinstance(value, (int, float)) and not isinstance(value, bool) else "")
            cells.append(f"<td class='{css}'>{esc(number(value))}</td>" if css else f"<td>{esc(number(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f" id='{esc(css_id)}'" if css_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def verdict_class(_column: str, value) -> str:
    return {"holds": "holds", "violated": "violated", "not exercised": "not-exercised",
            "pass": "pass", "fail": "fail", "skipped": "skipped", "skip": "skipped", "met": "holds", "missed": "violated",
            "proved": "holds", "counterexample": "holds"}.get(str(value).split(" (")[0], "")


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{esc(alt)}' src='data:image/png;base64,{data}'>"


def invariant_catalog() -> list[dict]:
    """spec/INVARIANTS.md as rows (empty when not shipped): ``id``, ``kind``, ``statement`` from
    the catalog table, and from the ID's "Where each invariant is checked" section what checks
    it: ``tests`` (distinct test files named), ``simulator`` (a :mod:`flk.sim.checkers` checker),
    ``model`` (:mod:`flk.model`: the executable model, the model checker, the history checker),
    ``proof`` (a Z3 proof of ``flk prove``)."""
    doc = REPO_ROOT / "spec" / "INVARIANTS.md"
    if not doc.exists():
        return []
    text = doc.read_text(encoding="utf-8")
    parts = re.split(r"^### (INV-[A-Z0-9-]+)\s*$", text, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    rows = []
    for line in re.findall(r"^\| INV-.*$", text, flags=re.M):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # a \| inside a cell is text
        inv, kind, statement = cells[0], cells[1], cells[2].replace("\\|", "|").replace("`", "")
        body = sections.get(inv, "")
        rows.append({"id": inv, "kind": kind, "statement": statement,
                     "tests": len(set(re.findall(r"tests/[\w/.-]+?\.py", body))),
                     "simulator": "flk.sim.checkers" in body, "model": "flk.model" in body,
                     "proof": "flk prove" in body or "flk.formal." in body})
    return rows


def invariant_statements() -> dict[str, str]:
    """ID -> statement from the catalog table of spec/INVARIANTS.md (empty when not shipped)."""
    return {row["id"]: row["statement"] for row in invariant_catalog()}


def invariant_verdict(check: dict) -> str:
    if not check.get("ok", False):
        return f"violated ({check.get('violation_count', len(check.get('violations', [])))})"
    if not check.get("exercised", True) or not check.get("checked"):
        return "not exercised"
    return "holds"


def stamp() -> dict:
    """Package version, git commit (when this is a git checkout; flagged when tracked files had
    uncommitted changes), Python and the date -- the code version of :func:`flk.sim.artifacts.code_version`."""
    from flk.sim.artifacts import code_version

    code = code_version()
    info = {"flk-lab": code["version"] or "unknown", "python": code["python"],
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if code["git_commit"]:
        info["git commit"] = code["git_commit"][:12] + (" (with uncommitted changes)" if code["git_dirty"] else "")
    return info


def stamp_html(info: dict) -> str:
    return "<p class='stamp'>" + " · ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in info.items()) + "</p>"


def read_checked_results(run_dir: Path) -> dict:
    """``run_dir``'s results (:func:`flk.sim.artifacts.read_results`) once its saved history is
    there, reads as events and is the one ``results.json`` records
    (:func:`flk.sim.artifacts.history_digest`): the one reader of the run report, ``flk kpi`` and
    ``flk compliance``, which never show figures of a run whose history is missing, damaged or
    another run's. Otherwise a :class:`flk.sim.schema.ScenarioError` naming the file."""
    from flk.sim.artifacts import history_digest, read_results
    from flk.sim.schema import ScenarioError

    results = read_results(Path(run_dir))
    path, digest = history_digest(Path(run_dir))
    if digest != results["digest"]:
        raise ScenarioError("(file)", f"not the history results.json records (sha256 {digest}, it records "
                                      f"{results['digest']}): cut, edited or another run's", str(path))
    return results


def read_run(run_dir: Path) -> dict:
    """What a run directory holds for the report: results (:func:`read_checked_results`), the
    scenario as run, its PNG plots."""
    run_dir = Path(run_dir)
    results = read_checked_results(run_dir)
    scenario_file = run_dir / "scenario.toml"
    try:
        scenario = textdata.toml_loads(scenario_file.read_text(encoding="utf-8")) if scenario_file.exists() else {}
    except (ValueError, UnicodeDecodeError) as exc:  # the report said "cannot write the report: Invalid value"
        from flk.sim.schema import ScenarioError

        raise ScenarioError("(file)", f"not TOML: {exc}", str(scenario_file)) from None
    known = [name for name in PLOT_CAPTIONS if (run_dir / f"{name}.png").exists()]
    others = sorted(p.stem for p in run_dir.glob("*.png") if p.stem not in PLOT_CAPTIONS)
    plots = [(name, run_dir / f"{name}.png") for name in known + others]  # never drop a plot silently
    return {"dir": run_dir, "results": results, "scenario": scenario, "plots": plots}


def invariants_html(results: dict, statements: dict[str, str]) -> str:
    rows = []
    for check in results.get("invariants", []):
        about = statements.get(check["id"], "") or check.get("note", "")
        if check.get("violations"):
            about = (about + " — first violation: " + json.dumps(check["violations"][0], sort_keys=True))[:400]
        rows.append([check["id"], check.get("kind", ""), check.get("checked", 0), invariant_verdict(check), about])
    if not rows:
        return "<p>No invariant checks recorded.</p>"
    return table(["invariant", "kind", "checked", "verdict", "statement / note"], rows,
                 css_id="invariants-" + str(results.get("scenario", "")), cell_class=verdict_class)


def slos_html(results: dict) -> str:
    rows = [[slo["metric"], f"{slo['op']} {number(slo['target'])}", slo.get("value"),
             "met" if slo.get("ok") else "missed"] for slo in results.get("slos", [])]
    if not rows:
        return "<p>This scenario sets no SLOs.</p>"
    return table(["SLO metric", "target", "value", "verdict"], rows,
                 css_id="slos-" + str(results.get("scenario", "")), cell_class=verdict_class)


def figures_html(metrics: dict) -> str:
    """The headline figures the run has (RPO, RTO and convergence only where it measured them)."""
    cards = []
    for key, label, unit in HEADLINE:
        if key in metrics and metrics[key] is not None:
            cards.append(f"<div class='figure'><b>{esc(number(metrics[key]))}{esc(unit)}</b>"
                         f"<span>{esc(label)}</span></div>")
    return "<div class='figures'>" + "".join(cards) + "</div>"


def plots_html(run: dict) -> str:
    name = run["results"].get("scenario", "")
    parts = []
    for plot, path in run["plots"]:
        caption = f"{name}: {PLOT_CAPTIONS.get(plot, OTHER_PLOT)}"
        if run["results"].get("fault_schedule") and plot != "faults":
            caption += FAULT_NOTE
        parts.append(f"<figure>{image_tag(path, f'{name} {plot}')}<figcaption>{esc(caption)}</figcaption></figure>")
    return "".join(parts)


def run_html(run: dict, statements: dict[str, str]) -> str:
    """One scenario's card: description, figures, invariant and SLO tables, plots."""
    results = run["results"]
    meta = run["scenario"].get("scenario", {})
    verdict = "pass" if results.get("valid") else "fail"
    overrides = (results.get("parameters") or {}).get("overrides") or []
    facts = [f"seed {results.get('seed')}", f"{results.get('events', 0)} events",
             f"history digest <code>{esc(str(results.get('digest', ''))[:16])}</code>"]
    if overrides:
        facts.append("overrides <code>" + esc(" ".join(overrides)) + "</code>")
    recorded = results.get("stamp") or results.get("reproducibility")
    if isinstance(recorded, dict):
        facts += [f"{esc(k)} <code>{esc(v)}</code>" for k, v in recorded.items() if not isinstance(v, (dict, list))]
    return "".join([
        f"<div class='card scenario' id='scenario-{esc(results.get('scenario', ''))}'>",
        f"<h3>{esc(results.get('scenario', ''))} <span class='{verdict}'>{verdict}</span></h3>",
        f"<p class='desc'>{esc(meta.get('description', ''))}</p>",
        f"<p class='stamp'>{' · '.join(facts)}</p>",
        figures_html(results.get("metrics", {})),
        invariants_html(results, statements), slos_html(results), *_kpi_and_alerts(results), plots_html(run), "</div>",
    ])


def _kpi_and_alerts(results: dict) -> list[str]:
    from .kpidash import alerts_html, kpi_html  # the KPI and alert sections (flk.impl.lab.kpidash)

    return [kpi_html(results), alerts_html(results)]


def vectors_html(doc: dict | None) -> str:
    """Per vector file: cases passed / failed / skipped."""
    if not doc or not doc.get("cases"):
        return "<p>No vector results recorded.</p>"
    per_file: dict[str, dict[str, int]] = defaultdict(lambda: {"pass": 0, "fail": 0, "skip": 0})
    for case in doc["cases"]:
        status = case.get("status", "skip")
        per_file[case.get("file", "?")][status if status in ("pass", "fail") else "skip"] += 1
    rows = [[name, c["pass"], c["fail"], c["skip"], "fail" if c["fail"] else "pass"]
            for name, c in sorted(per_file.items())]
    totals = doc.get("totals", {})
    head = (f"<p>{totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed, "
            f"{totals.get('skipped', 0)} skipped (adapter {esc(doc.get('adapter', ''))}).</p>")
    return head + table(["vector file", "passed", "failed", "skipped", "verdict"], rows,
                        css_id="vectors", cell_class=verdict_class)


def proofs_html(results: list[dict] | None) -> str:
    if not results:
        return "<p>No proof results recorded.</p>"
    rows = [[r.get("id", ""), r.get("status", ""), r.get("expected", ""), "pass" if r.get("ok") else "fail",
             r.get("seconds", "")] for r in results]
    return table(["proof", "status", "expected", "verdict", "seconds"], rows, css_id="proofs",
                 cell_class=verdict_class)


def server_html(data: dict | None) -> str:
    """The load run against ``flk serve`` and the server conformance cases."""
    if not data:
        return "<p>No server results recorded.</p>"
    parts = []
    load = data.get("load") or {}
    if load:
        rows = [[key, value] for key, value in load.items() if not isinstance(value, (dict, list))]
        rows += [[f"answers {status}", count] for status, count in sorted((load.get("by_status") or {}).items())]
        parts.append(table(["load figure", "value"], rows, css_id="server-load"))
    conformance = data.get("conformance") or {}
    cases = conformance.get("cases") or []
    if cases:
        totals = conformance.get("summary") or {}
        parts.append(f"<p>server conformance: {totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed, "
                     f"{totals.get('skipped', 0)} skipped.</p>")
        rows = [[c.get("id", ""), c.get("title", ""), c.get("status", ""), (c.get("message") or "")[:200]]
                for c in cases]
        parts.append(table(["conformance case", "what it checks", "verdict", "message"], rows,
                           css_id="server-conformance", cell_class=verdict_class))
    elif data.get("conformance_summary"):
        parts.append(f"<p>conformance: {esc(data['conformance_summary'])}</p>")
    return "".join(parts) or "<p>No server results recorded.</p>"


def page(title: str, body: list[str], info: dict | None = None) -> str:
    """The whole self-contained document."""
    info = stamp() if info is None else info
    return "\n".join([
        "<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>", stamp_html(info), *body, "</body></html>",
    ])


def runs_html(run_dirs: list[Path]) -> str:
    statements = invariant_statements()
    runs = [read_run(Path(run_dir)) for run_dir in run_dirs]
    if not runs:
        return "<p>No simulator runs recorded.</p>"
    overview = table(["scenario", "seed", "verdict", "requests", "invariants failed", "SLOs missed"],
                     [[r["results"].get("scenario", ""), r["results"].get("seed", ""),
                       "pass" if r["results"].get("valid") else "fail", r["results"].get("metrics", {}).get("requests", ""),
                       sum(not c.get("ok") for c in r["results"].get("invariants", [])),
                       sum(not s.get("ok") for s in r["results"].get("slos", []))] for r in runs],
                     css_id="scenarios", cell_class=verdict_class)
    return overview + "".join(run_html(run, statements) for run in runs)


def write_run_report(run_dirs: list[Path], path: Path, title: str = "flk-lab simulator report") -> Path:
    """A report over finished simulator runs (each a ``runs/<scenario>/<seed>`` directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title, ["<h2>Simulator</h2>", runs_html(run_dirs)]), encoding="utf-8")
    return path


STAGE_TITLES = {"vectors": "Test vectors (conformance runner, reference core)", "simulator": "Simulator",
                "proofs": "Proofs (quick tier)", "server": "Server (flk serve on SQLite) and server conformance"}


def stage_html(stage) -> str:
    data = getattr(stage, "data", None) or {}
    heading = (f"<h2 id='stage-{esc(stage.name)}'>{esc(STAGE_TITLES.get(stage.name, stage.name))} "
               f"<span class='{esc(stage.status)}'>{esc(stage.status)}</span></h2>")
    command = f"<p class='stamp'>command: <code>{esc(stage.command)}</code> · {stage.seconds:.1f} s</p>"
    if stage.name == "vectors":
        content = vectors_html(data.get("report"))
    elif stage.name == "simulator":
        content = runs_html(data.get("run_dirs", []))
    elif stage.name == "proofs":
        content = proofs_html(data.get("results"))
    elif stage.name == "server":
        content = server_html(data)
    else:
        content = ""
    if stage.status == "fail" and stage.summary:
        content = f"<p class='fail'>{esc(stage.summary)}</p>" + content
    return heading + command + content


def write_demo_report(path: Path, stages: list, total_s: float) -> Path:
    """The ``flk demo`` page: a stage overview, then one section per stage."""
    overview = table(["stage", "status", "seconds", "summary"],
                     [[s.name, s.status, round(s.seconds, 1), s.summary] for s in stages],
                     css_id="stages", cell_class=verdict_class)
    intro = (f"<p>Every stage runs the public CLI or API; repeat one with the command shown under its heading. "
             f"Total {total_s:.0f} s.</p>")
    body = [intro, overview, *(stage_html(s) for s in stages)]
    path = Path(path)
    path.write_text(page("flk-lab demo report", body), encoding="utf-8")
    return path
