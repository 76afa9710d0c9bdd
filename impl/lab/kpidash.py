"""The KPI dashboard and the alert proofs of simulator runs, as self-contained HTML.

Why this module exists: buyers ask for hallucination containment, false escalation
and cost per trusted task; operators ask whether an alert fires when it should.
The simulator measures both against ground truth (``results.json``: ``kpi`` from
:mod:`flk.sim.kpi`, ``ALERT-*`` checks and ``alerts`` from :mod:`flk.sim.alerts`).
This module only reads those files: :func:`kpi_html` / :func:`alerts_html` are the
sections the run report (:mod:`flk.impl.lab.report`) shows per run, and
:func:`write_dashboard` writes one page over many runs (per tenant, with the SLOs
and the cost breakdown), CSS inline, no script, no network.
"""

from __future__ import annotations

from pathlib import Path

from .report import esc, page, read_checked_results, table, verdict_class

PERCENT = ("containment_rate", "false_escalation_rate", "escalation_rate", "server_refused_share")
COST_PARTS = ("compute_usd", "storage_usd", "network_usd", "anchoring_usd")
DASH_CSS = """
.bar{display:flex;height:14px;width:320px;border:1px solid var(--line);border-radius:3px;overflow:hidden}
.bar span{display:block;height:100%}.c0{background:#0969da}.c1{background:#8250df}.c2{background:#bf8700}
.c3{background:#1a7f37}.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""


# a run without ground truth: flk cluster runs see the clients' side only (the simulator's
# containment needs every region's own answers, which a real cluster does not record)
NO_KPI = "no KPIs in this run's results (a cluster run records none: containment needs every region's own answers)"


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def usd(value) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def _slo_cell(fig: dict, key: str) -> str:
    slo = fig.get("slos", {}).get(key)
    if slo is None:
        return ""
    verdict = "not exercised" if slo["ok"] is None else "met" if slo["ok"] else "missed"
    return f"{slo['op']} {pct(slo['target'])}: {verdict}"


def kpi_rows(label: str, fig: dict) -> list[list]:
    return [[label, fig["submissions"], fig["untrustworthy"], fig["untrusted_accepted"],
             pct(fig["containment_rate"]), _slo_cell(fig, "containment_rate"),
             pct(fig["false_escalation_rate"]), _slo_cell(fig, "false_escalation_rate"),
             pct(fig["escalation_rate"]), _slo_cell(fig, "escalation_rate"),
             pct(fig["server_refused_share"]), usd(fig["cost_per_trusted_task_usd"])]]


KPI_HEADERS = ["tenant", "submissions", "untrustworthy", "untrustworthy accepted", "containment", "SLO",
               "false escalation", "SLO", "escalation", "SLO", "server estimate (refused share)",
               "cost per trusted task"]


def _kpi_class(_column: str, value) -> str:
    text = str(value)
    if text.endswith("not exercised"):
        return "not-exercised"
    return "fail" if text.endswith("missed") else "pass" if text.endswith("met") else ""


def cost_bar(fig: dict) -> str:
    total = fig.get("total_usd") or 0.0
    if not total:
        return "<div class='bar'></div>"
    spans = "".join(f"<span class='c{i}' style='width:{100 * fig[k] / total:.2f}%' title='{esc(k)}'></span>"
                    for i, k in enumerate(COST_PARTS))
    return f"<div class='bar'>{spans}</div>"


def kpi_html(results: dict) -> str:
    """The KPI section of one run (a line saying it has none when the run has no ``kpi``)."""
    kpi = results.get("kpi")
    if not kpi:
        return f"<p class='stamp'>{esc(NO_KPI)}</p>"
    rows = kpi_rows("all", kpi["total"])
    for tenant, fig in kpi["tenants"].items():
        rows += kpi_rows(tenant, fig)
    css_id = "kpi-" + str(results.get("scenario", ""))
    t = kpi["total"]
    breakdown = ", ".join(f"{k[:-4]} {usd(t[k])}" for k in COST_PARTS)
    return ("<h4>KPIs (ground truth: the workload knows which submissions are untrustworthy)</h4>"
            + table(KPI_HEADERS, rows, css_id=css_id, cell_class=_kpi_class)
            + f"<p class='stamp'>cost {usd(t['total_usd'])} = {esc(breakdown)} {cost_bar(t)}</p>")


def alerts_html(results: dict) -> str:
    """The run's ALERT-* checks: fired / silent, with the time to fire."""
    checks = [c for c in results.get("invariants", []) if str(c.get("id", "")).startswith("ALERT-")]
    if not checks:
        return ""
    rows = [[c["id"], "must fire" if c["kind"] == "eventually" else "must stay silent",
             ("holds" if c["ok"] else "violated") if c.get("exercised") else "not exercised", c.get("note", "")]
            for c in checks]
    return ("<h4>Alerts (deploy/prometheus rules evaluated by promtool over the regions' scrapes)</h4>"
            + table(["alert", "declared", "verdict", "observed"], rows,
                    css_id="alerts-" + str(results.get("scenario", "")), cell_class=verdict_class))


def _read(run_dir: Path) -> dict:
    return read_checked_results(Path(run_dir))  # a run whose history is missing or changed: no figures


def _label(results: dict) -> str:
    plant = (results.get("parameters") or {}).get("plant")
    return f"{results.get('scenario')} seed {results.get('seed')}" + (f" (planted: {plant})" if plant else "")


def dashboard_body(runs: list[dict]) -> list[str]:
    overview = [[_label(r), *kpi_rows("all", r["kpi"]["total"])[0][1:]] for r in runs if r.get("kpi")]
    headers = ["run", *KPI_HEADERS[1:]]
    body = ["<h2>Overview</h2>",
            "<p>Containment = untrustworthy submissions (tampered, forged, bad signature, conflicting payload, "
            "claims out of policy) that no region accepted. False escalation = trustworthy submissions escalated "
            "or rejected. Cost per trusted task from the cost model in spec/KPI.md. The server estimate is what "
            "a deployment sees (<code>flk_kpi_rejected_untrusted_ratio</code>): the share of verdicts that "
            "refused, which is not containment.</p>",
            table(headers, overview, css_id="overview", cell_class=_kpi_class),
            "<p class='legend'>cost:" + "".join(f"<span class='c{i}'></span>{k[:-4]}" for i, k in enumerate(COST_PARTS))
            + "</p>"]
    for r in runs:
        body += [f"<div class='card run' id='run-{esc(r.get('scenario'))}-{esc(r.get('seed'))}'>",
                 f"<h3>{esc(_label(r))}</h3>", kpi_html(r), alerts_html(r), "</div>"]
    return body


def read_runs(run_dirs: list[Path]) -> list[dict]:
    """Each run's results, its saved history checked (read once: a history may be gigabytes)."""
    return [_read(Path(d)) for d in run_dirs]


def write_dashboard(run_dirs: list[Path], path: Path, title: str = "flk-lab KPI dashboard") -> Path:
    return write_page(read_runs(run_dirs), path, title)


def write_page(runs: list[dict], path: Path, title: str = "flk-lab KPI dashboard") -> Path:
    """The dashboard of runs already read (:func:`read_runs`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    html = page(title, dashboard_body(runs)).replace("</style>", DASH_CSS + "</style>", 1)
    path.write_text(html, encoding="utf-8")
    return path


def summary(runs: list[dict]) -> list[dict]:
    """The headline KPI figures of each run read by :func:`read_runs` (the CLI's ``--json``)."""
    out = []
    for r in runs:
        t = (r.get("kpi") or {}).get("total") or {}
        out.append({"run": _label(r), **{k: t.get(k) for k in (*PERCENT, "cost_per_trusted_task_usd",
                                                                   "untrusted_accepted", "untrustworthy",
                                                                   "submissions", "total_usd", *COST_PARTS)},
                    "kpi_recorded": bool(t), "alerts_fired": sorted((r.get("alerts") or {}).get("firing", {})),
                    "valid": r.get("valid")})
    return out


__all__ = ["alerts_html", "kpi_html", "read_runs", "summary", "write_dashboard", "write_page"]
