"""``flk sim diff RUN_A RUN_B``: where two runs part ways.

Reads two run directories and reports the first history event that differs (line number
in ``history.jsonl`` and both events), then the invariants, SLOs and headline figures whose
outcome or value differ. Used to see what a seed, an override or a code change did.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..impl.core import textdata
from .artifacts import read_results
from .history import find_history, open_lines
from .scenario import ScenarioError


def _read(run_dir: Path) -> tuple[dict, list[str]]:
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    try:
        with open_lines(find_history(run_dir), errors="replace") as f:  # a damaged line still shows
            lines = f.read().splitlines()
    except (OSError, ValueError) as exc:
        raise ScenarioError(str(run_dir), f"not a run directory (needs results.json and history.jsonl or "
                            f"history.jsonl.gz): {exc}") from None
    return results, lines


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


def diff(run_a: Path, run_b: Path) -> dict:
    """Compare two run directories; ``identical`` is true when the histories are byte-equal."""
    results_a, lines_a = _read(run_a)
    results_b, lines_b = _read(run_b)

    def invariants(results):
        return {c["id"]: {"ok": c["ok"], "violations": c.get("violation_count", 0)} for c in results["invariants"]}

    def slos(results):
        return {s["metric"]: {"ok": s["ok"], "value": s["value"]} for s in results["slos"]}

    def figures(results):
        return {k: v for k, v in results["metrics"].items() if isinstance(v, (int, float))}

    return {
        "a": {"dir": str(run_a), "scenario": results_a["scenario"], "seed": results_a["seed"],
              "digest": results_a["digest"], "events": len(lines_a)},
        "b": {"dir": str(run_b), "scenario": results_b["scenario"], "seed": results_b["seed"],
              "digest": results_b["digest"], "events": len(lines_b)},
        "identical": lines_a == lines_b,
        "first_divergence": first_divergence(lines_a, lines_b),
        "invariants": _changed(invariants(results_a), invariants(results_b)),
        "slos": _changed(slos(results_a), slos(results_b)),
        "metrics": _changed(figures(results_a), figures(results_b)),
    }


def render(report: dict) -> str:
    a, b = report["a"], report["b"]
    out = [f"A {a['dir']}: {a['scenario']} seed {a['seed']}, {a['events']} events, sha256 {a['digest']}",
           f"B {b['dir']}: {b['scenario']} seed {b['seed']}, {b['events']} events, sha256 {b['digest']}"]
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
