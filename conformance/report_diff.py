"""``flk conformance diff OLD.json NEW.json``: what an SDK release fixed, broke and changed.

Why this module exists: an SDK author runs the kit on every release; the
question after the second run is "what did this release do", by root cause
(``x1e9-rounding`` fixed, ``html-escape`` new) and by case (``fmt9.v1#66``
now passes, ``sign_hmac.v1#3`` now fails, ``canonical_bytes.v1#12`` still
fails but with other bytes). Input: two ``--json`` reports of
``flk conformance vectors`` (:func:`flk.conformance.runner.to_json`).
Exit status of the command: 0 nothing broke, 1 something broke (a case that
passed now fails, or a new root cause), 2 unreadable reports.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flk.impl.core import textdata


class ReportError(ValueError):
    """A file that is not a vectors JSON report."""


def load_report(path: str | pathlib.Path) -> dict:
    try:
        doc = textdata.json_loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise ReportError(f"{path}: not a report of flk conformance vectors --json (no cases)")
    return doc


def _causes(doc: Mapping[str, Any]) -> dict[str, int]:
    return {c.get("class", "?"): int(c.get("count", 0)) for c in doc.get("summary") or [] if isinstance(c, Mapping)}


def _cases(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["id"]: c for c in doc["cases"] if isinstance(c, Mapping) and "id" in c}


@dataclass
class ReportDiff:
    fixed_causes: list[str] = field(default_factory=list)
    new_causes: list[str] = field(default_factory=list)
    changed_causes: list[tuple[str, int, int]] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # failed -> passed
    broke: list[str] = field(default_factory=list)  # passed -> failed
    changed: list[str] = field(default_factory=list)  # failed in both, with another output or message
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # passed or failed before; the new run's adapter broke first
    now_run: list[str] = field(default_factory=list)  # not run before (the old run's adapter broke); run now
    totals: tuple[dict, dict] = ({}, {})
    broken: tuple[str | None, str | None] = (None, None)  # why each run's adapter broke (None: it did not)

    @property
    def regressed(self) -> bool:
        return bool(self.broke or self.new_causes or self.not_run or (self.broken[1] and not self.broken[0]))


def _broken(doc: Mapping[str, Any]) -> str | None:
    reason = doc.get("broken")
    return str(reason) if reason else None


def diff_reports(old: Mapping[str, Any], new: Mapping[str, Any]) -> ReportDiff:
    """Cause by cause and case by case. A case the new run did not run (its adapter broke before
    it) is ``not_run``, not "broke": nothing about it was learnt."""
    out = ReportDiff(totals=(dict(old.get("totals") or {}), dict(new.get("totals") or {})),
                     broken=(_broken(old), _broken(new)))
    oc, nc = _causes(old), _causes(new)
    out.fixed_causes = [c for c in oc if c not in nc]
    out.new_causes = [c for c in nc if c not in oc]
    out.changed_causes = [(c, oc[c], nc[c]) for c in oc if c in nc and oc[c] != nc[c]]
    ocases, ncases = _cases(old), _cases(new)
    for cid, n in ncases.items():
        o = ocases.get(cid)
        if n.get("not_run"):
            if o is not None and not o.get("not_run"):
                out.not_run.append(cid)
        elif o is None:
            out.added.append(cid)
        elif o.get("not_run"):
            out.now_run.append(cid)
        elif o.get("status") == "fail" and n.get("status") in ("pass", "acceptable"):
            out.fixed.append(cid)
        elif o.get("status") in ("pass", "acceptable") and n.get("status") == "fail":
            out.broke.append(cid)
        elif o.get("status") == n.get("status") == "fail" and (
                o.get("output") != n.get("output") or o.get("message") != n.get("message")):
            out.changed.append(cid)
    out.removed = [cid for cid in ocases if cid not in ncases]
    return out


def _ids(ids: list[str], limit: int = 10) -> str:
    return " ".join(ids[:limit]) + (f" ... (+{len(ids) - limit})" if len(ids) > limit else "")


def format_diff(d: ReportDiff, old_name: str, new_name: str) -> list[str]:
    def tot(t: Mapping[str, Any]) -> str:
        return f"{t.get('passed', 0)} passed, {t.get('failed', 0)} failed, {t.get('skipped', 0)} skipped"

    lines = [f"old: {old_name}: {tot(d.totals[0])}", f"new: {new_name}: {tot(d.totals[1])}"]
    for name, reason in zip((old_name, new_name), d.broken, strict=True):
        if reason:  # its cases did not run: the comparison says nothing about them
            lines.append(f"ADAPTER BROKEN in {name}: {reason[:300]}")
    lines.append("by cause:")
    lines += [f"  fixed: {c}" for c in d.fixed_causes]
    lines += [f"  new:   {c}" for c in d.new_causes]
    lines += [f"  changed: {c} {a} -> {b} case(s)" for c, a, b in d.changed_causes]
    if d.broken[0] or d.broken[1]:
        lines.append("  (not comparable: an adapter broke before its cases ran)")
    elif not (d.fixed_causes or d.new_causes or d.changed_causes):
        lines.append("  (the same root causes)")
    lines.append("by case:")
    for label, ids in (("fixed (failed, now pass)", d.fixed), ("broke (passed, now fail)", d.broke),
                       ("changed (still fail, other answer)", d.changed), ("new cases", d.added),
                       ("cases gone", d.removed), ("not run (the new run's adapter broke)", d.not_run),
                       ("run again (the old run's adapter broke; see the new report for their status)",
                        d.now_run)):
        if ids:
            lines.append(f"  {label}: {len(ids)} {_ids(ids)}")
    if not (d.fixed or d.broke or d.changed or d.added or d.removed or d.not_run or d.now_run):
        lines.append("  (no case changed)")
    if d.broken[1] and not d.broken[0]:
        verdict = "REGRESSED (the new run's adapter broke: its cases did not run)"
    elif d.regressed:
        verdict = "REGRESSED (a case broke or a root cause is new)"
    else:
        verdict = "no regression"
    lines.append("verdict: " + verdict)
    return lines


def to_json(d: ReportDiff) -> dict:
    return {"causes": {"fixed": d.fixed_causes, "new": d.new_causes,
                       "changed": [{"class": c, "old": a, "new": b} for c, a, b in d.changed_causes]},
            "cases": {"fixed": d.fixed, "broke": d.broke, "changed": d.changed, "added": d.added,
                      "removed": d.removed, "not_run": d.not_run, "now_run": d.now_run},
            "broken": {"old": d.broken[0], "new": d.broken[1]},
            "totals": {"old": d.totals[0], "new": d.totals[1]}, "regressed": d.regressed}
