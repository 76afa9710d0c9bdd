"""``flk sim shrink RUN_DIR``: reduce a failing run to a minimal scenario that still fails
the same invariant, written as a regression case.

Input is a run directory (``scenario.toml`` as run, ``results.json`` with the seed, the
overrides, the failed checks and, for a planted-bug run, the bug's name). Every candidate is
a real simulator run with the same seed; a candidate is kept only when the *target* check
(the first failed invariant, or the one asked for) still fails. The passes, repeated until
none changes anything (or the run budget is spent):

1. a seeded random nemesis is turned into the explicit fault list it produced (kept only if
   the run still fails), so its faults can be removed one by one;
2. delta debugging (Zeller's ddmin) over the fault list: drop chunks, then complements;
3. faults earlier (every ``at_s`` halved), shorter faults (bisect each ``duration_s``);
4. shorter workload phase (bisect ``scenario.duration_s`` down to just past the last fault's
   start), shorter quiescence, fewer agents, a lower rate, fewer tenants (bisect each).

A run drawn by ``flk sim explore --swarm`` keeps its mode's rule through every pass
(:func:`flk.sim.explore.mode_violations`, the rule :func:`flk.sim.explore.draw` keeps): in
liveness mode every fault still heals inside the workload phase, so a candidate whose
workload ends before a fault does is never run (``Runner(keeps=...)``).

Same run directory, same code -> same minimal case (no clock, no unseeded randomness).
Nothing here runs the simulator itself: the caller passes ``run(scenario, seed) -> results``
(:func:`flk.sim.api.shrink` does), so this module stays free of I/O except :func:`write`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..impl.core import textdata
from . import faults
from .artifacts import read_results, read_scenario
from .scenario import LIST_SECTIONS, SECTIONS, Scenario, ScenarioError, load, scenario_dir, validate

DEFAULT_MAX_RUNS = 200
TENTH = 0.1  # time values are shrunk on a grid of tenths of a second


class ShrinkError(Exception):
    """The run cannot be shrunk as asked (it does not fail the target when re-run)."""


class _BudgetSpent(Exception):
    pass


def failures(results: dict) -> list[str]:
    """The failed checks of a run, in report order: invariant ids, then ``SLO <metric>``."""
    return ([c["id"] for c in results.get("invariants", []) if not c.get("ok", True)]
            + [f"SLO {s['metric']}" for s in results.get("slos", []) if not s.get("ok", True)])


@dataclass
class RunDir:
    """What a run directory says about the run."""

    path: Path
    data: dict
    results: dict

    @property
    def seed(self) -> int:
        return int(self.results["seed"])

    @property
    def overrides(self) -> list[str]:
        return list(self.results.get("parameters", {}).get("overrides", []))

    @property
    def plant(self) -> str | None:
        return self.results.get("parameters", {}).get("plant")


def read_run_dir(run_dir: Path) -> RunDir:

    run_dir = Path(run_dir)
    return RunDir(run_dir, read_scenario(run_dir), read_results(run_dir))  # the files flk sim run writes


def pick_target(run: RunDir, invariant: str | None, nothing: str = "nothing to shrink") -> str:
    """The failed check a command follows: ``invariant``, else the run's first; ``nothing`` says
    what a valid run leaves the command (a :class:`ScenarioError`)."""
    failed = failures(run.results)
    if not failed:
        raise ScenarioError(str(run.path), f"the run is valid: {nothing}")
    if invariant is None:
        return failed[0]
    if invariant not in failed:
        raise ScenarioError("--invariant", f"{invariant!r} did not fail in this run (failed: {', '.join(failed)})")
    return invariant


@dataclass
class Shrunk:
    """The outcome: the minimal scenario data, how it was reached, where it was written."""

    target: str
    seed: int
    plant: str | None
    original: dict
    minimal: dict
    runs: int = 0
    steps: list[str] = field(default_factory=list)
    budget_spent: bool = False
    violations: int | None = None
    path: Path | None = None
    scenario_ref: str = ""
    overrides: list[str] = field(default_factory=list)
    confirmed: bool | None = None
    schedule: list[dict] = field(default_factory=list)  # the faults the original run injected

    def summary(self) -> dict:
        def size(data):
            nemesis = self.schedule if data is self.original and data["nemesis"]["enabled"] else data["faults"]
            return {"faults": len(nemesis), "agents": int(data["workload"]["agents"]),
                    "duration_s": data["scenario"]["duration_s"], "quiescence_s": data["scenario"]["quiescence_s"],
                    "rate_per_s": data["workload"]["rate_per_s"], "nemesis": bool(data["nemesis"]["enabled"])}

        return {"target": self.target, "seed": self.seed, "runs": self.runs, "before": size(self.original),
                "after": size(self.minimal), "budget_spent": self.budget_spent}


class Runner:
    """Runs candidates (cached by content, counted against the budget) and says whether the
    target check still fails -- and, with ``allowed``, fails *only* checks among those: a
    candidate too small to exercise what the scenario claims (a ``sometimes`` check failing)
    is not a smaller case of the same failure, and would not be a valid regression once fixed."""

    def __init__(self, run: Callable[[Scenario, int], dict], name: str, source: str, seed: int, target: str,
                 max_runs: int, log: Callable[[str], None], allowed: Sequence[str] | None = None,
                 keeps: Callable[[dict], bool] | None = None) -> None:
        self._run, self.name, self.source, self.seed, self.target = run, name, source, seed, target
        self.keeps = keeps  # the scenario's own validity rule (a swarm mode's); a candidate breaking it is never run
        self.allowed = None if allowed is None else {target, *allowed}  # no check may fail that did not before
        self.max_runs, self.log = max_runs, log
        self.runs = 0
        self.errors = 0  # candidates whose run raised (not counted as the target failure)
        self.target_kind: str | None = None  # the target check's kind (always / eventually / ...), once run
        self.last_violations: int | None = None
        self.last_failing: dict | None = None  # every failing candidate is the one a pass keeps
        self._seen: dict[str, tuple[bool, int | None]] = {}

    def violations(self, data: dict) -> int | None:
        """The target's violation count in the (already run) candidate ``data``."""
        return self._seen.get(json.dumps(data, sort_keys=True), (False, None))[1]

    def fails(self, data: dict) -> bool:
        key = json.dumps(data, sort_keys=True)
        if key not in self._seen:
            try:
                validate(data)
            except ScenarioError:
                self._seen[key] = (False, None)  # not a scenario the simulator accepts
                return False
            if self.keeps is not None and not self.keeps(data):
                self._seen[key] = (False, None)  # not a case of the mode the run was drawn in
                return False
            if self.runs >= self.max_runs:
                raise _BudgetSpent
            self.runs += 1
            try:
                results = self._run(Scenario(self.name, self.source, copy.deepcopy(data)), self.seed)
            except Exception:  # noqa: BLE001 -- a candidate that stops the simulator is not the target's
                # failure (it is its own finding, which flk sim explore reports as SIM-ERROR); the
                # search goes on instead of dying with it
                self.errors += 1
                self._seen[key] = (False, None)
                return False
            failed_now = failures(results)
            failed = self.target in failed_now and (self.allowed is None or set(failed_now) <= self.allowed)
            count = next((c.get("violation_count") for c in results.get("invariants", [])
                          if c["id"] == self.target), None)
            self.target_kind = next((c.get("kind") for c in results.get("invariants", [])
                                     if c["id"] == self.target), self.target_kind)
            self._seen[key] = (failed, count)
        failed, count = self._seen[key]
        if failed:
            self.last_violations, self.last_failing = count, copy.deepcopy(data)
        return failed


def ddmin(items: Sequence, fails: Callable[[list], bool]) -> list:
    """Zeller's delta debugging: a 1-minimal sublist of ``items`` (order kept) that still
    fails, given that ``items`` fails. Tries the empty list first."""
    items = list(items)
    if items and fails([]):
        return []
    n = 2
    while len(items) >= 2:
        size = math.ceil(len(items) / n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        reduced = next((c for c in chunks if fails(c)), None)
        if reduced is not None:
            items, n = reduced, 2
            continue
        complements = ([x for j, c in enumerate(chunks) if j != i for x in c] for i in range(len(chunks)))
        reduced = next((c for c in complements if len(chunks) > 2 and fails(c)), None)
        if reduced is not None:
            items, n = reduced, max(n - 1, 2)
            continue
        if n >= len(items):
            break
        n = min(len(items), 2 * n)
    return items


def smallest(lo: int, hi: int, fails_at: Callable[[int], bool]) -> int | None:
    """The smallest k in ``[lo, hi]`` at which ``fails_at`` holds, by trying ``lo`` and then
    bisecting (None when none of them fails; ``hi + 1`` stands for the known-failing value)."""
    if lo > hi:
        return None
    if fails_at(lo):
        return lo
    lo += 1
    top = hi + 1
    while lo < top:
        mid = (lo + top) // 2
        if fails_at(mid):
            top = mid
        else:
            lo = mid + 1
    return top if top <= hi else None


# -- the passes -------------------------------------------------------------------------------
def _with(data: dict, section: str, key: str, value: Any) -> dict:
    out = copy.deepcopy(data)
    out[section][key] = value
    return out


def _tenths(value: float) -> float:
    return round(value, 1)


def _shrink_value(runner: Runner, data: dict, section: str, key: str, lo: float, unit: float,
                  integer: bool = False) -> dict:
    """Bisect ``data[section][key]`` down on a grid of ``unit`` to no less than ``lo``."""
    current = data[section][key]
    top = math.ceil(current / unit - 1e-9) - 1  # the largest grid value below the current one
    value = (lambda k: int(k)) if integer else (lambda k: round(k * unit, 6))  # noqa: E731
    k = smallest(math.ceil(lo / unit - 1e-9), top, lambda k: runner.fails(_with(data, section, key, value(k))))
    return data if k is None else _with(data, section, key, value(k))


def _last_start(data: dict) -> float:
    return max((float(f["at_s"]) for f in data["faults"]), default=0.0)


def _as_fault_table(logged: dict) -> dict:
    """A fault as the run logged it, with only the keys a ``[[faults]]`` table takes (the
    nemesis logs a ``target`` for every kind)."""
    cls = faults.REGISTRY.get(logged.get("kind"))
    keys = [f.name for f in (*faults.COMMON, *(cls.params if cls else ()))]
    return {k: copy.deepcopy(logged[k]) for k in keys if k in logged}


def pass_nemesis(runner: Runner, data: dict, schedule: list[dict]) -> dict:
    """A nemesis run becomes the explicit fault list it produced (if that still fails)."""
    if not data["nemesis"]["enabled"]:
        return data
    candidate = copy.deepcopy(data)
    candidate["nemesis"]["enabled"] = False
    candidate["faults"] = [_as_fault_table(f) for f in schedule]
    return candidate if runner.fails(candidate) else data


def pass_faults(runner: Runner, data: dict) -> dict:
    def fails(subset: list) -> bool:
        return runner.fails({**data, "faults": copy.deepcopy(subset)})

    kept = ddmin(data["faults"], fails)
    return data if len(kept) == len(data["faults"]) else {**copy.deepcopy(data), "faults": copy.deepcopy(kept)}


def pass_earlier(runner: Runner, data: dict) -> dict:
    """Halve every fault's start time while the run still fails."""
    while data["faults"]:
        candidate = copy.deepcopy(data)
        for f in candidate["faults"]:
            f["at_s"] = _tenths(float(f["at_s"]) / 2)
        if candidate["faults"] == data["faults"] or not runner.fails(candidate):
            break
        data = candidate
    return data


def pass_fault_durations(runner: Runner, data: dict) -> dict:
    for i, f in enumerate(data["faults"]):
        if not f.get("duration_s"):
            continue

        def at(k: int, i: int = i, base: dict = data) -> dict:
            candidate = copy.deepcopy(base)
            candidate["faults"][i]["duration_s"] = round(k * TENTH, 6)
            return candidate

        k = smallest(1, math.ceil(float(f["duration_s"]) / TENTH - 1e-9) - 1, lambda k: runner.fails(at(k)))
        if k is not None:
            data = at(k)
    return data


def valid_once_fixed(runner: Runner, data: dict, original: dict, steps: list[str],
                     fixed_valid: Callable[[dict], bool]) -> dict:
    """The minimal case ``data`` of a known bug, valid without it (``fixed_valid``: a run without
    the bug). A quiescence cut to where the failure still showed can be too short for the fixed
    system's own recovery (a restart that boots and replays before it answers: its clients'
    retries outlast the run), so it doubles back toward the original's until the case without
    the bug is valid and the target still fails with it (else ``data`` as it was)."""
    if fixed_valid(data):
        return data
    q0 = float(original["scenario"]["quiescence_s"])
    q = max(float(data["scenario"]["quiescence_s"]), 1.0)
    while q < q0:
        q = min(2.0 * q, q0)
        grown = copy.deepcopy(data)
        grown["scenario"]["quiescence_s"] = q
        try:
            still = runner.fails(grown)
        except _BudgetSpent:
            return data
        if still and fixed_valid(grown):
            steps.append(f"quiescence_s {data['scenario']['quiescence_s']} -> {q} (valid without the bug)")
            return grown
    return data


def pass_workload(runner: Runner, data: dict) -> dict:
    data = _shrink_value(runner, data, "scenario", "duration_s", _last_start(data) + TENTH, TENTH)
    if runner.target_kind != "eventually":
        # an eventually-check (delivery, convergence) is judged after the quiescence: cutting it
        # manufactures the failure (a request sent at the end is "never answered"), so it stays
        data = _shrink_value(runner, data, "scenario", "quiescence_s", 0.0, TENTH)
    data = _shrink_value(runner, data, "workload", "agents", 1, 1, integer=True)
    data = _shrink_value(runner, data, "workload", "rate_per_s", 1.0, 1.0)
    return _shrink_value(runner, data, "workload", "tenants", 1, 1, integer=True)


def describe_change(before: dict, after: dict) -> str:
    parts = []
    if before["nemesis"]["enabled"] != after["nemesis"]["enabled"]:
        parts.append("nemesis -> its explicit faults")
    if len(before["faults"]) != len(after["faults"]):
        parts.append(f"faults {len(before['faults'])} -> {len(after['faults'])}")
    elif before["faults"] != after["faults"]:
        parts.append("fault times/durations shortened")
    for section, key in (("scenario", "duration_s"), ("scenario", "quiescence_s"), ("workload", "agents"),
                         ("workload", "rate_per_s"), ("workload", "tenants")):
        if before[section][key] != after[section][key]:
            parts.append(f"{key} {before[section][key]} -> {after[section][key]}")
    return ", ".join(parts)


def minimize(runner: Runner, data: dict, schedule: list[dict]) -> tuple[dict, list[str], bool]:
    """Run the passes to a fixed point (or until the budget is spent): (minimal data, the
    accepted steps, whether the budget ran out)."""
    steps: list[str] = []
    passes: list[Callable[[Runner, dict], dict]] = [pass_faults, pass_earlier, pass_fault_durations, pass_workload]
    current = data
    try:
        if not runner.fails(data):
            raise ShrinkError(f"re-running the recorded scenario (seed {runner.seed}) does not fail "
                              f"{runner.target}: the code changed since the run, or the run needs a planted bug")
        current = pass_nemesis(runner, data, schedule)
        if current != data:
            steps.append(describe_change(data, current))
            runner.log(f"shrink: {steps[-1]} (run {runner.runs}, still fails {runner.target})")
        changed = True
        while changed:
            changed = False
            for step in passes:
                after = step(runner, current)
                if after != current:
                    steps.append(describe_change(current, after))
                    runner.log(f"shrink: {steps[-1]} (run {runner.runs}, still fails {runner.target})")
                    current, changed = after, True
    except _BudgetSpent:
        if runner.last_failing is not None and runner.last_failing != current:
            steps.append(describe_change(current, runner.last_failing))
            current = runner.last_failing
        return current, steps, True
    return current, steps, False


# -- the regression file ----------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(text: str) -> str:
    """A TOML basic string (quotes, backslashes and control characters escaped)."""
    def escape(ch: str) -> str:
        if ch in '"\\':
            return "\\" + ch
        return f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch

    return '"' + "".join(escape(ch) for ch in text) + '"'


def toml_inline(value: Any) -> str:
    """A value as an inline TOML expression (what an override's right-hand side holds)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dict):
        items = [f"{k if _BARE_KEY.match(k) else toml_string(k)} = {toml_inline(v)}" for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def overrides_between(base: dict, target: dict) -> list[str]:
    """``key=value`` overrides that turn scenario data ``base`` into ``target`` (a changed list
    section is replaced whole: ``faults=[...]``). ``scenario.seed`` is the regression's own."""
    out = []
    for section in SECTIONS:
        for key in sorted(set(base.get(section, {})) | set(target.get(section, {}))):
            if section == "scenario" and key == "seed":
                continue
            if key in target.get(section, {}) and base.get(section, {}).get(key) != target[section][key]:
                out.append(f"{section}.{key}={toml_inline(target[section][key])}")
    for section in LIST_SECTIONS:
        if base.get(section) != target.get(section):
            out.append(f"{section}={toml_inline(target.get(section, []))}")
    return out


def merge_overrides(earlier: list[str], later: list[str]) -> list[str]:
    """``earlier`` then ``later``, without the earlier ones a later override sets again (the same
    key, or a key inside a list or table the later one replaces whole)."""
    paths = [o.split("=", 1)[0].strip() for o in later]
    kept = [o for o in earlier
            if not any(o.split("=", 1)[0].strip() == p or o.split("=", 1)[0].strip().startswith(p + ".") for p in paths)]
    return [*kept, *later]


def _same(a: dict, b: dict) -> bool:
    strip = lambda d: {**d, "scenario": {k: v for k, v in d["scenario"].items() if k != "seed"}}  # noqa: E731
    return textdata.json_loads(json.dumps(strip(a))) == textdata.json_loads(json.dumps(strip(b)))


def _shown_path(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def scenario_reference(run: RunDir, minimal: dict) -> tuple[str, list[str]]:
    """What the regression names (a catalog scenario, else the scenario file, else the run's own
    ``scenario.toml``) and the overrides that turn it into ``minimal``."""
    source = (run.results.get("stamp") or {}).get("scenario_source") or ""
    candidates = []
    path = Path(source)
    if source and path.suffix == ".toml" and path.exists() and path.name != "scenario.toml":
        name = path.stem if path.resolve().parent == scenario_dir().resolve() else str(path.resolve())
        candidates.append((name, run.overrides))
    candidates.append((str((run.path / "scenario.toml").resolve()), []))  # absolute: loaded from any directory
    for ref, earlier in candidates:
        try:
            base = load(ref, earlier).data
        except ScenarioError:
            continue
        overrides = merge_overrides(earlier, overrides_between(base, minimal))
        if _same(load(ref, overrides).data, minimal):
            return ref, overrides
    raise ShrinkError("cannot express the minimal scenario as a regression of the run's scenario")


def regression_text(shrunk: Shrunk, source_dir: Path, date: str, path: Path) -> str:
    s = shrunk.summary()
    before, after = s["before"], s["after"]
    replay = f"flk sim run {_shown_path(path)}" + (f" --plant {shrunk.plant}" if shrunk.plant else "")
    lines = [
        f"# Regression candidate written by `flk sim shrink` on {date} from {_shown_path(source_dir)}.",
        f"# Fails {shrunk.target}" + (f" ({shrunk.violations} violations)" if shrunk.violations else "")
        + (f" with the planted bug {shrunk.plant!r}" if shrunk.plant else "") + ".",
        f"# Shrunk in {shrunk.runs} runs: faults {before['faults']} -> {after['faults']}, agents "
        f"{before['agents']} -> {after['agents']}, duration {before['duration_s']} s -> {after['duration_s']} s, "
        f"quiescence {before['quiescence_s']} s -> {after['quiescence_s']} s, rate {before['rate_per_s']} -> "
        f"{after['rate_per_s']}/s" + (" (run budget spent: not minimal)" if shrunk.budget_spent else "") + ".",
        f"# Replay: {replay}",
        "# Once the bug is fixed this case is valid: move it into sim/scenarios/regressions/ (scenario must",
        "# then be a catalog name, not a path) and add [[regression.expect]] counts that pin the fixed behaviour.",
        "[regression]",
        f"scenario = {toml_string(shrunk.scenario_ref)}",
        f"seed = {shrunk.seed}",
        "overrides = [",
        *[f"    {toml_string(o)}," for o in shrunk.overrides],
        "]",
        "",
    ]
    return "\n".join(lines)


def write(shrunk: Shrunk, run: RunDir, out: Path | None, date: str) -> Path:
    path = Path(out) if out is not None else run.path / "regression-candidate.toml"
    shrunk.scenario_ref, shrunk.overrides = scenario_reference(run, shrunk.minimal)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(regression_text(shrunk, run.path, date, path), encoding="utf-8")
    shrunk.path = path
    return path
