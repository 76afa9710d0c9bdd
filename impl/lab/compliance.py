"""Compliance evidence report: which control is evidenced by what (SOC 2, ISO/IEC 27001).

Why this module exists: the seeds promise SOC 2 / ISO 27001 reports "from the WORM
log". A report that says "pass" is worthless to an auditor; one that names, per
control, the artifact that evidences it (the audit chain verified, with its head hash
and anchors; the invariant checks of given runs; the alert proofs; proofs,
conformance results; the server's security settings) is what they can check.

Rules: a control whose evidence was not given says **no evidence**, never "pass";
evidence that shows a failure makes the control **failing**; evidence present for
part of what a control needs makes it **partial**; only complete, passing evidence
makes it **evidenced**. The report reads artifacts only (nothing is run but the
audit chain's pure verifier).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core import textdata
from ..governance import audit
from .report import esc, page, read_checked_results, table

EVIDENCED, PARTIAL, FAILING, NONE = "evidenced", "partial", "failing", "no evidence"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    needs: tuple[str, ...]  # evidence kinds (see EVIDENCE)


EVIDENCE = {
    "audit_chain": "the WORM audit log's hash chain, seals, HEAD and anchors verified (flk audit verify)",
    "verify_invariants": "runs whose signature-before-dedup and tenant invariants held and were exercised",
    "integrity_invariants": "runs whose first-write-wins, idempotent replay and no-acked-loss invariants held",
    "alert_proofs": "runs whose declared alerts fired in time and stayed silent otherwise (ALERT-*)",
    "runbooks": "a runbook for every alert rule (spec/runbooks, deploy/prometheus/rules)",
    "availability_runs": "runs measuring RPO <= 120 s and RTO <= 300 s after a region loss",
    "clock_runs": "runs with clock skew whose invariants held",
    "proofs": "Z3 proofs of the invariants (flk prove --json)",
    "conformance": "conformance results (flk conformance ... --json)",
    "server_settings": "the server's security settings (operator credential on /metrics, redaction)",
    "kpi_runs": "runs whose containment KPI met its SLO against ground truth",
}
FRAMEWORKS: dict[str, tuple[Control, ...]] = {
    "soc2": (
        Control("CC6.1", "Logical access security: only authenticated, verified submissions are processed",
                ("verify_invariants", "server_settings", "conformance")),
        Control("CC7.2", "System monitoring: anomalies are detected and logged",
                ("audit_chain", "alert_proofs")),
        Control("CC7.3", "Security events are evaluated and responded to", ("runbooks", "alert_proofs")),
        Control("CC8.1", "Changes are tested before release", ("proofs", "conformance")),
        Control("PI1.4", "Processing output is complete and accurate", ("integrity_invariants", "kpi_runs")),
        Control("A1.2", "Availability: recovery objectives (RPO <= 2 min, RTO <= 5 min)", ("availability_runs",)),
    ),
    "iso27001": (
        Control("A.5.28", "Collection of evidence", ("audit_chain",)),
        Control("A.8.15", "Logging", ("audit_chain", "server_settings")),
        Control("A.8.16", "Monitoring activities", ("alert_proofs", "runbooks")),
        Control("A.8.17", "Clock synchronization", ("clock_runs",)),
        Control("A.8.24", "Use of cryptography", ("verify_invariants", "proofs")),
        Control("A.8.13", "Information backup", ("availability_runs",)),
        Control("A.8.14", "Redundancy of information processing facilities", ("availability_runs", "alert_proofs")),
    ),
}
VERIFY_INVS = ("INV-VERIFY-BEFORE-DEDUP", "INV-TENANT-ISOLATION")
INTEGRITY_INVS = ("INV-FWW", "INV-IDEMPOTENT-REPLAY", "INV-NO-ACKED-LOSS")


def _item(status: str, detail: str, sources: list[str]) -> dict:
    return {"status": status, "detail": detail, "sources": sources}


def audit_evidence(audit_dir: str | None) -> dict:
    if not audit_dir:
        return _item(NONE, "no audit log given (--audit DIR)", [])
    anchors = Path(audit_dir) / "anchors"
    try:
        rep = audit.verify_directory(audit_dir, str(anchors) if anchors.is_dir() else None)
    except (OSError, ValueError) as exc:
        return _item(FAILING, f"cannot read the audit log: {exc}", [audit_dir])
    d = rep.as_dict()
    head, last_hash = _head(Path(audit_dir))
    text = (f"{d['entries']} entries, {d['sealed_segments']} sealed segments, {d['anchors']} anchors, "
            f"last seal {head}, last entry hash {last_hash}")
    if not d["ok"]:
        return _item(FAILING, "INV-WORM-CHAIN violated: " + json.dumps(d.get("problem"), sort_keys=True)[:300],
                     [audit_dir])
    if not d["entries"]:
        return _item(PARTIAL, "the audit log is empty: " + text, [audit_dir])
    return _item(EVIDENCED, "chain verified: " + text, [audit_dir])


def _head(directory: Path) -> tuple[str, str]:
    """HEAD.json's last seal hash and the newest entry's hash ("-" when absent)."""
    def field(read, key: str) -> str:  # "-" for a file that is missing, damaged or of another shape
        try:
            doc = textdata.json_loads(read())
        except (OSError, ValueError, IndexError):
            return "-"
        return str(doc.get(key) or "-") if isinstance(doc, dict) else "-"

    segments = sorted(directory.glob("seg-*.log"))
    last_seal = field(lambda: (directory / audit.HEAD).read_bytes(), "last_seal")
    last_hash = field(lambda: segments[-1].read_bytes().strip().splitlines()[-1], "hash") if segments else "-"
    return last_seal, last_hash


def _runs(run_dirs: list[str]) -> list[tuple[str, dict]]:
    """Every run under ``run_dirs``: a ``results.json`` that is no run's is no evidence; a run whose
    saved history is missing, damaged or not the one it records is an :class:`EvidenceError`."""
    from flk.sim.artifacts import read_results

    out = []
    for d in run_dirs:
        for path in sorted(Path(d).rglob("results.json")):
            try:
                read_results(path.parent)
            except (OSError, ValueError):  # not a run's results (ScenarioError): no evidence
                continue
            try:
                out.append((str(path.parent), read_checked_results(path.parent)))
            except (OSError, ValueError) as exc:  # its history (ScenarioError names the file)
                raise EvidenceError(f"--runs {d}: {exc}") from None
    return out


def _invariant_evidence(runs, ids: tuple[str, ...], what: str) -> dict:
    seen, failed, sources = 0, [], []
    for where, r in runs:
        for c in r.get("invariants", []):
            if c["id"] in ids and c.get("exercised"):
                seen += 1
                sources.append(where)
                if not c["ok"]:
                    failed.append(f"{c['id']} in {r.get('scenario')} seed {r.get('seed')}")
    if not seen:
        return _item(NONE, f"no run exercised {what} ({', '.join(ids)})", [])
    if failed:
        return _item(FAILING, "violated: " + "; ".join(failed[:5]), sorted(set(sources)))
    return _item(EVIDENCED, f"{seen} exercised checks of {', '.join(ids)} held", sorted(set(sources)))


def _alert_evidence(runs) -> dict:
    checks = [(w, r, c) for w, r in runs for c in r.get("invariants", [])
              if str(c["id"]).startswith("ALERT-") and c.get("exercised")]
    if not checks:
        return _item(NONE, "no run evaluated its alert declarations (promtool)", [])
    bad = [f"{c['id']} in {r.get('scenario')} seed {r.get('seed')}: {c.get('note', '')}" for _w, r, c in checks
           if not c["ok"]]
    fired = sum(1 for _w, _r, c in checks if c["kind"] == "eventually" and c["ok"])
    src = sorted({w for w, _r, _c in checks})
    if bad:
        return _item(FAILING, "; ".join(bad[:5]), src)
    return _item(EVIDENCED, f"{len(checks)} alert checks held ({fired} alerts fired when required)", src)


def _availability_evidence(runs) -> dict:
    """Replicated runs that lost a region: RPO and RTO are measured at a region loss (a crash
    fault); a replicated run without one reports 0 s for both, which is no evidence."""
    rows = [(w, r["metrics"]) for w, r in runs if (r.get("metrics") or {}).get("rpo_s") is not None
            and any(f.get("kind") == "crash" for f in r.get("fault_schedule") or [])]
    if not rows:
        return _item(NONE, "no replicated run with a region loss (a crash fault) measured RPO and RTO", [])
    bad = [f"{w}: RPO {m['rpo_s']} s, RTO {m.get('rto_s')} s" for w, m in rows
           if m["rpo_s"] > 120 or m.get("rto_s") is None or m["rto_s"] > 300]
    if bad:
        return _item(FAILING, "; ".join(bad[:3]), [w for w, _m in rows])
    worst_rpo, worst_rto = max(m["rpo_s"] for _w, m in rows), max(m["rto_s"] for _w, m in rows)
    return _item(EVIDENCED, f"{len(rows)} replicated runs with a region loss measured RPO/RTO, worst RPO "
                 f"{worst_rpo:.2f} s, worst RTO {worst_rto:.2f} s", [w for w, _m in rows])


def _clock_evidence(runs) -> dict:
    skewed = [(w, r) for w, r in runs if any(f.get("kind") == "clock_skew" for f in r.get("fault_schedule", []))]
    if not skewed:
        return _item(NONE, "no run with a clock skew fault", [])
    bad = [w for w, r in skewed if not all(c["ok"] for c in r.get("invariants", []) if not c["id"].startswith("ALERT"))]
    if bad:
        return _item(FAILING, f"invariants violated under clock skew: {', '.join(bad[:3])}", [w for w, _ in skewed])
    return _item(EVIDENCED, f"{len(skewed)} clock-skew runs, every invariant held", [w for w, _ in skewed])


def _kpi_evidence(runs) -> dict:
    rows = [(w, r["kpi"]["total"]) for w, r in runs if (r.get("kpi") or {}).get("total", {}).get("untrustworthy")]
    if not rows:
        return _item(NONE, "no run with untrustworthy submissions measured containment", [])
    bad = [f"{w}: containment {t['containment_rate']:.4f}" for w, t in rows if t["slos"]["containment_rate"]["ok"] is False]
    if bad:
        return _item(FAILING, "; ".join(bad[:3]), [w for w, _ in rows])
    return _item(EVIDENCED, f"{len(rows)} runs, containment >= 98% against ground truth", [w for w, _ in rows])


class EvidenceError(ValueError):
    """A file named as evidence that is not what its flag takes: no report is made (the CLI: exit 2)."""


def _text(path: str, flag: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EvidenceError(f"{flag} {path}: cannot read it: {exc.strerror or type(exc).__name__}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"{flag} {path}: not UTF-8 text (byte {exc.start})") from None


def _json(path: str, flag: str):
    text = _text(path, flag)
    try:
        return textdata.json_loads(text)
    except ValueError as exc:  # not JSON, nested too deep, an integer past the digit limit
        raise EvidenceError(f"{flag} {path}: not JSON ({exc})") from None


def _proofs_doc(path: str) -> dict:
    doc = _json(path, "--proofs")
    results = doc.get("results") if isinstance(doc, dict) else None
    if not (isinstance(results, list) and results and isinstance(doc.get("ok"), bool)
            and all(isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("ok"), bool)
                    for r in results)):
        raise EvidenceError(f"--proofs {path}: not a report of flk prove --json (want an object with ok "
                            f"and a non-empty results list of objects with id and ok)")
    return doc


def _conformance_doc(path: str) -> dict:
    from flk.conformance.report_diff import ReportError, check_report

    doc = _json(path, "--conformance")
    try:
        check_report(doc, f"--conformance {path}")
    except ReportError as exc:
        raise EvidenceError(str(exc)) from None
    return doc


def _server_env(path: str) -> dict[str, str]:
    env = {}
    for n, line in enumerate(_text(path, "--server-env").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise EvidenceError(f"--server-env {path}: line {n}: not KEY=VALUE")
        env[key.strip()] = value.strip()
    return env


def read_evidence(proofs: str | None = None, conformance: str | None = None,
                  server_env: str | None = None) -> dict:
    """The files given as evidence, read and checked (None: not given). A file that is not
    UTF-8, not JSON, or not the report its flag takes is an :class:`EvidenceError` naming the
    flag, the file and what is wrong -- never evidence, failing or passing."""
    return {"proofs": _proofs_doc(proofs) if proofs else None,
            "conformance": _conformance_doc(conformance) if conformance else None,
            "server_env": _server_env(server_env) if server_env else None}


def _proof_evidence(doc: dict | None, path: str | None) -> dict:
    if doc is None:
        return _item(NONE, "no proof given (--proofs FILE)", [])
    bad = [r["id"] + (f" ({r['problem']})" if r.get("problem") else "") for r in doc["results"] if not r["ok"]]
    if bad:
        return _item(FAILING, f"failed: {', '.join(bad[:5])}", [path])
    if not doc["ok"]:
        return _item(FAILING, "proofs: ok=false (the tier ran over its budget)", [path])
    return _item(EVIDENCED, f"{len(doc['results'])} proof results, none failed", [path])


def _conformance_evidence(doc: dict | None, path: str | None) -> dict:
    if doc is None:
        return _item(NONE, "no conformance given (--conformance FILE)", [])
    cases = doc["cases"]
    bad = [c["id"] for c in cases if c["status"] == "fail"]
    if doc.get("broken"):
        return _item(FAILING, f"the adapter broke: {str(doc['broken'])[:200]}", [path])
    if bad:
        return _item(FAILING, f"{len(bad)} of {len(cases)} cases failed: {', '.join(bad[:5])}", [path])
    passed = sum(c["status"] in ("pass", "acceptable") for c in cases)
    if not passed:
        return _item(PARTIAL, f"{len(cases)} conformance cases, none run (all skipped)", [path])
    return _item(EVIDENCED, f"{len(cases)} conformance cases, {passed} passed, none failed", [path])


def _server_evidence(env: dict[str, str] | None, env_file: str | None) -> dict:
    if env is None:
        return _item(NONE, "no server configuration given (--server-env FILE)", [])
    from ..server.config import load_config

    try:
        cfg = load_config(env)
    except Exception as exc:  # noqa: BLE001 -- a bad configuration is a finding, not a crash
        return _item(FAILING, f"the configuration does not load: {exc}"[:300], [env_file])
    operator = bool(cfg.operator_user and cfg.operator_pass)
    detail = (f"operator credential on /metrics and operator routes: {'set' if operator else 'NOT SET'}; "
              f"bind {cfg.host}; signature algorithm {cfg.sign_alg}; max body {cfg.max_body_bytes} bytes; "
              f"multi-tenant {cfg.multi_tenant}; secrets shown redacted")
    return _item(EVIDENCED if operator else FAILING, detail, [env_file])


def _repo_runbooks() -> dict:
    rules = REPO / "deploy" / "prometheus" / "rules" / "flk-alerts.yml"
    books = REPO / "spec" / "runbooks"
    if not rules.exists() or not books.is_dir():
        return _item(NONE, "rules or runbooks not installed with this package", [])
    text = rules.read_text(encoding="utf-8")
    links = {line.split("runbook_url:")[1].strip() for line in text.splitlines() if "runbook_url:" in line}
    missing = [u for u in links if not (REPO / u).is_file()]
    if missing:
        return _item(FAILING, f"runbooks missing: {', '.join(missing)}", [_shown(rules)])
    return _item(EVIDENCED, f"{text.count('- alert:')} alert rules link {len(links)} runbooks",
                 [_shown(rules), _shown(books)])


def _shown(path) -> str:
    """A packaged file as the report names it: relative to the package root (a report never
    carries the machine's own paths)."""
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return path.name


def gather(runs_dirs: list[str], audit_dir: str | None, proofs: str | None = None, conformance: str | None = None,
           server_env: str | None = None, runs: list[tuple[str, dict]] | None = None) -> dict[str, dict]:
    """Each evidence kind's item; ``runs``: the runs of ``runs_dirs`` already read (:func:`_runs`)."""
    given = read_evidence(proofs, conformance, server_env)  # EvidenceError: no report
    runs = _runs(runs_dirs) if runs is None else runs
    return {
        "audit_chain": audit_evidence(audit_dir),
        "verify_invariants": _invariant_evidence(runs, VERIFY_INVS, "signature and tenant checks"),
        "integrity_invariants": _invariant_evidence(runs, INTEGRITY_INVS, "integrity checks"),
        "alert_proofs": _alert_evidence(runs),
        "runbooks": _repo_runbooks(),
        "availability_runs": _availability_evidence(runs),
        "clock_runs": _clock_evidence(runs),
        "proofs": _proof_evidence(given["proofs"], proofs),
        "conformance": _conformance_evidence(given["conformance"], conformance),
        "server_settings": _server_evidence(given["server_env"], server_env),
        "kpi_runs": _kpi_evidence(runs),
    }


def control_status(needs: tuple[str, ...], evidence: dict[str, dict]) -> str:
    states = [evidence[n]["status"] for n in needs]
    if FAILING in states:
        return FAILING
    if all(s == EVIDENCED for s in states):
        return EVIDENCED
    if all(s == NONE for s in states):
        return NONE
    return PARTIAL


def report(framework: str, runs_dirs: list[str], audit_dir: str | None, **kw) -> dict:
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r} (known: {', '.join(FRAMEWORKS)})")
    runs = _runs(runs_dirs)  # read once: each run's history is checked
    evidence = gather(runs_dirs, audit_dir, runs=runs, **kw)
    controls = [{"id": c.id, "title": c.title, "status": control_status(c.needs, evidence),
                 "evidence": [{"kind": n, "what": EVIDENCE[n], **evidence[n]} for n in c.needs]}
                for c in FRAMEWORKS[framework]]
    counts = {s: sum(c["status"] == s for c in controls) for s in (EVIDENCED, PARTIAL, FAILING, NONE)}
    return {"framework": framework, "controls": controls, "counts": counts,
            "inputs": {"runs": runs_dirs, "audit": audit_dir, **kw}, "runs_read": len(runs)}


COMPLIANCE_CSS = (".evidenced{color:var(--ok);font-weight:600}.partial{color:var(--warn);font-weight:600}"
                  ".failing{color:var(--bad);font-weight:600}.no-evidence{color:var(--muted);font-weight:600}")


def _cls(_column: str, value) -> str:
    return {EVIDENCED: "evidenced", PARTIAL: "partial", FAILING: "failing", NONE: "no-evidence"}.get(str(value), "")


def render_html(doc: dict) -> str:
    name = {"soc2": "SOC 2", "iso27001": "ISO/IEC 27001:2022"}[doc["framework"]]
    summary = table(["control", "title", "status"], [[c["id"], c["title"], c["status"]] for c in doc["controls"]],
                    css_id="controls", cell_class=_cls)
    body = ["<h2>Controls</h2>",
            "<p>A control is <b>evidenced</b> only when every kind of evidence it needs was given and passed; "
            "<b>no evidence</b> means nothing was given for it (never a pass).</p>", summary,
            "<p class='stamp'>" + esc(", ".join(f"{k}: {v}" for k, v in doc["counts"].items()))
            + f" · {doc['runs_read']} runs read</p>"]
    for c in doc["controls"]:
        rows = [[e["kind"], e["what"], e["status"], e["detail"], "<br>".join(map(esc, e["sources"][:4]))]
                for e in c["evidence"]]
        body += [f"<div class='card control' id='control-{esc(c['id'])}'>",
                 f"<h3>{esc(c['id'])} {esc(c['title'])} <span class='{_cls('', c['status'])}'>{esc(c['status'])}</span></h3>",
                 _raw_table(["evidence", "what it is", "status", "detail", "sources"], rows), "</div>"]
    return page(f"flk-lab compliance evidence: {name}", body).replace("</style>", COMPLIANCE_CSS + "</style>", 1)


def _raw_table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f"<td class='{_cls('', cell)}'>{cell if i == 4 else esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write(doc: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    j, h = out_dir / f"compliance-{doc['framework']}.json", out_dir / f"compliance-{doc['framework']}.html"
    j.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    h.write_text(render_html(doc), encoding="utf-8")
    return j, h
