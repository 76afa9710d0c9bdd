"""``flk sim diff RUN_A RUN_B``: where two runs part ways.

Reads two run directories and reports the first history event that differs (line number
in ``history.jsonl`` and both events), then the invariants, SLOs and headline figures whose
outcome or value differ. Used to see what a seed, an override or a code change did.
Each run's digest is its saved history's (:func:`flk.sim.artifacts.history_digest`, beside
what its ``results.json`` recorded when they differ); a history that is missing or does
not read as events is a :class:`ScenarioError` (exit 2), as for every reader of a run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..impl.core import textdata
from .artifacts import history_digest, read_results
from .history import open_lines
from .scenario import ScenarioError


def _read(run_dir: Path) -> tuple[dict, list[str], str]:
    """The run's results, its saved history's lines and that history's digest (a missing or
    unreadable history is a :class:`ScenarioError` naming the file, as for every reader)."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    path, digest = history_digest(run_dir)
    try:
        with open_lines(path) as f:
            lines = f.read().splitlines()
    except (OSError, ValueError) as exc:  # changed since its check
        raise ScenarioError("(file)", f"unreadable: {exc}", str(path)) from None
    return results, lines, digest


def _event(line: str):
    """A history line's event; a line that is not JSON (a damaged file) as its text, cut."""
    try:
        return textdata.json_loads(line)
    except ValueError:
        return line[:300]


def first_divergence(lines_a: list[str], lines_b: list[str]) -> dict | None:
    """The first differing history line (1-based) with both events (None past an end)."""
    for number, (a, b) in enumerate(zip(lines_a, lines_b, strict=False), start=1):
        if a != b:
            return {"line": number, "a": _event(a), "b": _event(b)}
    if len(lines_a) != len(lines_b):
        number = min(len(lines_a), len(lines_b)) + 1
        pick = lambda lines: _event(lines[number - 1]) if len(lines) >= number else None  # noqa: E731
        return {"line": number, "a": pick(lines_a), "b": pick(lines_b)}
    return None


def _changed(items_a: dict, items_b: dict) -> list[dict]:
    return [{"name": key, "a": items_a.get(key), "b": items_b.get(key)}
            for key in sorted(set(items_a) | set(items_b)) if items_a.get(key) != items_b.get(key)]


def _side(run_dir: Path, results: dict, lines: list[str], digest: str) -> dict:
    """One run of the comparison: ``digest`` is its saved history's, ``recorded_digest`` what its
    ``results.json`` says (they differ when the history was changed since the run)."""
    return {"dir": str(run_dir), "scenario": results["scenario"], "seed": results["seed"], "digest": digest,
            "recorded_digest": results["digest"], "events": len(lines)}


def diff(run_a: Path, run_b: Path) -> dict:
    """Compare two run directories; ``identical`` is true when the histories are byte-equal."""
    results_a, lines_a, digest_a = _read(run_a)
    results_b, lines_b, digest_b = _read(run_b)

    def invariants(results):
        return {c["id"]: {"ok": c["ok"], "violations": c.get("violation_count", 0)} for c in results["invariants"]}

    def slos(results):
        return {s["metric"]: {"ok": s["ok"], "value": s["value"]} for s in results["slos"]}

    def figures(results):
        return {k: v for k, v in results["metrics"].items() if isinstance(v, (int, float))}

    return {
        "a": _side(run_a, results_a, lines_a, digest_a),
        "b": _side(run_b, results_b, lines_b, digest_b),
        "identical": lines_a == lines_b,
        "first_divergence": first_divergence(lines_a, lines_b),
        "invariants": _changed(invariants(results_a), invariants(results_b)),
        "slos": _changed(slos(results_a), slos(results_b)),
        "metrics": _changed(figures(results_a), figures(results_b)),
    }


def render(report: dict) -> str:
    out = []
    for name in ("A", "B"):
        r = report[name.lower()]
        out.append(f"{name} {r['dir']}: {r['scenario']} seed {r['seed']}, {r['events']} events, sha256 {r['digest']}"
                   + (f" (results.json records {r['recorded_digest']})" if r["digest"] != r["recorded_digest"]
                      else ""))
    first = report["first_divergence"]
    if first is None:
        out.append("histories identical")
    else:
        out += [f"first divergence at history.jsonl line {first['line']}:",
                f"  A: {json.dumps(first['a'], sort_keys=True)}", f"  B: {json.dumps(first['b'], sort_keys=True)}"]
    for section in ("invariants", "slos", "metrics"):
        changed = report[section]
        out.append(f"{section}: " + ("no differences" if not changed else f"{len(changed)} differ"))
        out += [f"  {c['name']:<34} A {_short(c['a'])}  B {_short(c['b'])}" for c in changed]
    return "\n".join(out)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    return repr(value)
