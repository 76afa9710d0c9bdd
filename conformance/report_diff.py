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

STATUSES = ("pass", "fail", "skip", "n/a", "acceptable")  # a case's status (flk.conformance.runner)


class ReportError(ValueError):
    """A file that is not a vectors JSON report."""


def load_report(path: str | pathlib.Path) -> dict:
    """A ``--json`` report of ``flk conformance vectors`` (or ``server``), checked by :func:`check_report`."""
    try:
        doc = textdata.json_loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not readable as JSON ({exc})") from None
    check_report(doc, str(path))
    return doc


def check_report(doc: Any, where: str) -> None:
    """A :class:`ReportError` naming ``where`` unless ``doc`` is a conformance report: an object
    whose ``cases`` are one or more objects, each with its own string ``id`` and a known
    ``status``, and whose ``totals`` header (when it has one) counts those cases."""
    what = f"{where}: not a report of flk conformance --json"
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list) or not doc["cases"]:
        raise ReportError(f"{what} (want an object with a non-empty cases list)")
    ids: set[str] = set()
    for n, case in enumerate(doc["cases"], start=1):
        if not isinstance(case, dict) or not isinstance(case.get("id"), str) or case.get("status") not in STATUSES:
            raise ReportError(f"{what} (case {n}: want an object with an id and a status of {', '.join(STATUSES)})")
        if case["id"] in ids:
            raise ReportError(f"{what} (case {n}: id {case['id'][:80]!r} twice)")
        ids.add(case["id"])
    header, counted = doc.get("totals"), case_totals(doc["cases"])
    if header is not None and (not isinstance(header, dict) or any(header.get(k) != v for k, v in counted.items())):
        raise ReportError(f"{where}: malformed report: its totals {json.dumps(header)[:200]} disagree with its "
                          f"cases ({', '.join(f'{v} {k}' for k, v in counted.items())})")


def case_totals(cases: list[Mapping[str, Any]]) -> dict[str, int]:
    """What a report's ``totals`` header says, counted from its cases (:meth:`runner.Report.counts`)."""
    status = [c.get("status") for c in cases]
    return {"passed": status.count("pass"), "failed": status.count("fail"),
            "skipped": status.count("skip") + status.count("n/a"), "acceptable": status.count("acceptable")}


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
    out = ReportDiff(totals=(case_totals(old["cases"]), case_totals(new["cases"])),
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
