"""Explicit-state model checking of :mod:`flk.model.explore`: safety, deadlock, liveness.

Why this module exists: Hypothesis samples interleavings of the model at
random; this explores *every* state reachable within a :class:`Scope`, the
way TLC or stateright do, and so proves the safety invariants for that scope
and checks liveness, which sampling cannot.

Theory of operation
-------------------
* **Breadth-first search** from the initial state over every enabled action.
  A state is stored only as a 64-bit fingerprint (Python's tuple hash of the
  state, or of its canonical representative under symmetry) with its BFS
  parent and the action that reached it; the probability that two distinct
  states shared a fingerprint is reported (birthday bound, ``n^2 / 2^65``).
* **Safety**: every predicate of :meth:`Machine.safety` is evaluated in every
  distinct state when it is first reached. Because the search is breadth-first
  the first violating state found is at minimal depth: the counterexample is a
  shortest one. Violating states are still expanded, so the search reports the
  complete *set* of invariants violated within the scope.
* **Deadlock**: a state with no enabled action in which progress is owed
  (:meth:`Machine.progress_owed`).
* **Symmetry** (safety only): states are replaced by their canonical
  representative under renaming regions, tenants and pcs_ids
  (:meth:`Machine.canonical`); every invariant is symmetric, so the set of
  violated invariants and the counterexample lengths are the same as without
  it (tested on every planted bug). A counterexample found on representatives
  is re-executed on concrete states: each step takes the action whose
  successor has the recorded representative.
* **Liveness** (never with symmetry: on the full graph): the property
  ``[]<> P`` for each target ``P`` of :meth:`Machine.liveness`, under weak
  fairness of every instance of the actions in :data:`FAIR_KINDS`. Every state
  may stutter. A violation is a reachable strongly connected component of the
  states where ``P`` is false that is *fair*: every fair action is taken on an
  edge inside it or disabled in one of its states. Components are computed
  with an iterative Tarjan over the stored edge arrays (cross-checked against
  networkx in the tests). A violation is printed as a lasso: the shortest
  prefix to a state of the component, then a cycle inside it that takes every
  fair action the component takes.
"""

from __future__ import annotations

import resource
import sys
import time
from array import array
from dataclasses import dataclass, field

from .explore import FAIR_KINDS, Machine, Scope, diff


@dataclass
class Result:
    scope: dict
    symmetry: bool
    liveness_checked: bool
    complete: bool
    states_generated: int
    distinct_states: int
    depth: int
    seconds: float
    cpu_seconds: float
    states_per_s: float
    peak_rss_mb: float
    fingerprint_collision_bound: float
    violated: dict = field(default_factory=dict)  # invariant -> counterexample
    deadlock: dict | None = None
    liveness: dict = field(default_factory=dict)  # target -> lasso or None
    fairness: list = field(default_factory=lambda: list(FAIR_KINDS))

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @property
    def ok(self) -> bool:
        return (self.complete and not self.violated and self.deadlock is None
                and not any(v is not None for v in self.liveness.values()))


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def show(self, t0: float, depth: int, distinct: int, queue: int, generated: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        dt = max(now - t0, 1e-9)
        sys.stderr.write(f"\r  depth {depth:>3}  distinct {distinct:>10,}  queue {queue:>9,}  "
                         f"generated {generated:>11,}  {distinct / dt:>8,.0f} states/s  {dt:>6.1f}s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def check(scope: Scope, symmetry: bool = False, liveness: bool = True, progress: bool = False,
          max_states: int | None = None) -> Result:
    """Explore ``scope`` completely (or up to ``max_states`` distinct states)."""
    return _Search(Machine(scope), symmetry, liveness and not symmetry, progress, max_states).run()


class _Search:
    """One breadth-first exploration: the fingerprint index, BFS tree and (for liveness) the edges."""

    def __init__(self, m: Machine, symmetry: bool, liveness: bool, progress: bool, max_states: int | None) -> None:
        self.m, self.symmetry, self.liveness, self.max_states = m, symmetry, liveness, max_states
        self.canon = m.canonical if symmetry else (lambda s: s)
        self.reg_preds = list(m.region_safety().items())
        self.shared_preds = list(m.shared_safety().items())
        self.targets = m.liveness()
        self.bar = _Progress(progress)
        self.index: dict[int, int] = {}
        self.parent = array("q")
        self.via = array("i")
        # liveness graph (CSR): out-edges of state j are succ[start[j]:start[j+1]]
        self.start, self.succ, self.succ_act = array("q"), array("q"), array("i")
        self.holds = {name: bytearray() for name in self.targets}
        self.first_bad: dict[str, int] = {}
        self.deadlock_at: int | None = None
        self.generated = 1
        self.depth = 0
        self.complete = True

    def visit(self, j: int, st: tuple, parent: tuple | None) -> bool:
        """Check ``st`` (a concrete successor of ``parent``, which passed every check, or None);
        regions identical to the parent's keep their verdict. True when everything holds."""
        ok = True
        subs = st[0]
        prev = parent[2] if parent is not None else None
        first_bad = self.first_bad
        for r, reg in enumerate(st[2]):
            if prev is not None and reg is prev[r]:
                continue
            for name, pred in self.reg_preds:
                if not pred(r, reg, subs):
                    ok = False
                    first_bad.setdefault(name, j)
        for name, pred in self.shared_preds:
            if not pred(st):
                ok = False
                first_bad.setdefault(name, j)
        return ok

    def expand(self, j: int, st: tuple, st_ok: bool, nxt: list) -> None:
        """Generate ``st``'s successors; new ones are checked and queued in ``nxt``."""
        m, canon, index, parent, via = self.m, self.canon, self.index, self.parent, self.via
        if self.liveness:
            self.start.append(len(self.succ))
            for name, pred in self.targets.items():
                self.holds[name].append(1 if pred(st) else 0)
        succs = m.successors(st)
        for a, raw in succs:
            s2 = canon(raw)
            f = hash(s2)
            k = index.get(f)
            if k is None:
                k = len(parent)
                index[f] = k
                parent.append(j)
                via.append(a)
                # the invariants are symmetric: checking the concrete successor checks its orbit
                nxt.append((k, s2, self.visit(k, raw, st if st_ok else None)))
            if self.liveness:
                self.succ.append(k)
                self.succ_act.append(a)
        self.generated += len(succs)
        if not succs and self.deadlock_at is None and m.progress_owed(st):
            self.deadlock_at = j

    def run(self) -> Result:
        t0, c0 = time.perf_counter(), time.process_time()
        init = self.canon(self.m.initial())
        self.index[hash(init)] = 0
        self.parent.append(-1)
        self.via.append(-1)
        frontier = [(0, init, self.visit(0, init, None))]
        while frontier and self.complete:
            nxt: list = []
            for j, st, st_ok in frontier:
                self.expand(j, st, st_ok, nxt)
                self.bar.show(t0, self.depth, len(self.parent), len(frontier) + len(nxt), self.generated)
                if self.max_states is not None and len(self.parent) >= self.max_states:
                    self.complete = False
                    break
            if nxt and self.complete:
                self.depth += 1
            frontier = nxt
        if self.liveness:
            self.start.append(len(self.succ))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.bar.show(t0, self.depth, len(self.parent), 0, self.generated, final=True)
        return self.result(seconds, cpu)

    def result(self, seconds: float, cpu: float) -> Result:
        m, n = self.m, len(self.parent)
        res = Result(
            scope=m.scope.to_json(), symmetry=self.symmetry, liveness_checked=self.liveness and self.complete,
            complete=self.complete, states_generated=self.generated, distinct_states=n, depth=self.depth,
            seconds=round(seconds, 3), cpu_seconds=round(cpu, 3),
            states_per_s=round(n / seconds, 1) if seconds > 0 else 0.0,
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            fingerprint_collision_bound=n * n / 2.0**65,
        )
        tr = _Tracer(m, self.canon, self.parent, self.via)
        for name in m.safety():
            if name in self.first_bad:
                res.violated[name] = tr.counterexample(self.first_bad[name], name)
        if self.deadlock_at is not None:
            res.deadlock = tr.counterexample(self.deadlock_at, "deadlock")
        if self.liveness and self.complete:
            for name in self.targets:
                res.liveness[name] = _liveness(m, tr, self.start, self.succ, self.succ_act, self.holds[name], name)
        return res


class _Tracer:
    """Turns a state index into a concrete, numbered action sequence with state diffs."""

    def __init__(self, m: Machine, canon, parent: array, via: array) -> None:
        self.m, self.canon, self.parent, self.via = m, canon, parent, via

    def path(self, j: int) -> list[int]:
        """Indexes of the BFS states from the initial state to ``j`` (inclusive)."""
        out = []
        while j >= 0:
            out.append(j)
            j = self.parent[j]
        return out[::-1]

    def concrete(self, idxs: list[int], start: tuple | None = None) -> tuple[list[int], list[tuple]]:
        """Concrete states and actions following the representative path ``idxs``."""
        m, canon = self.m, self.canon
        st = m.initial() if start is None else start
        rep = canon(st)
        states, acts = [st], []
        for j in idxs[1:]:
            target = canon(m.apply(self.via[j], rep))
            match = next(((a, s2) for a, s2 in m.successors(st) if canon(s2) == target), None)
            if match is None:  # pragma: no cover - would mean the symmetry is unsound
                raise AssertionError("no concrete step matches the representative path")
            a, s2 = match
            acts.append(a)
            states.append(s2)
            st, rep = s2, target
        return acts, states

    def steps(self, acts: list[int], states: list[tuple], first: int = 1) -> list[dict]:
        m = self.m
        views = [m.describe(s) for s in states]
        return [{"n": first + n, "action": m.actions[a].label(m), "diff": diff(views[n], views[n + 1])}
                for n, a in enumerate(acts)]

    def counterexample(self, j: int, what: str) -> dict:
        acts, states = self.concrete(self.path(j))
        return {"invariant": what, "kind": "deadlock" if what == "deadlock" else "safety",
                "length": len(acts), "steps": self.steps(acts, states),
                "final_state": self.m.describe(states[-1])}


def tarjan(n: int, start: array, succ: array, keep) -> list[list[int]]:
    """Strongly connected components of the subgraph induced by ``keep`` (iterative Tarjan)."""
    index = [-1] * n
    low = [0] * n
    on = bytearray(n)
    stack: list[int] = []
    comps: list[list[int]] = []
    counter = 0
    for root in range(n):
        if not keep[root] or index[root] >= 0:
            continue
        work = [(root, start[root])]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on[root] = 1
        while work:
            v, e = work[-1]
            end = start[v + 1]
            while e < end:
                w = succ[e]
                e += 1
                if not keep[w]:
                    continue
                if index[w] < 0:
                    work[-1] = (v, e)
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on[w] = 1
                    work.append((w, start[w]))
                    break
                if on[w] and index[w] < low[v]:
                    low[v] = index[w]
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    if low[v] < low[u]:
                        low[u] = low[v]
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on[w] = 0
                        comp.append(w)
                        if w == v:
                            break
                    comps.append(comp)
    return comps


def _liveness(m: Machine, tr: _Tracer, start: array, succ: array, succ_act: array, holds: bytearray,
              name: str) -> dict | None:
    """A fair lasso on which ``name`` never holds, or None when ``[]<> name`` holds."""
    n = len(holds)
    keep = bytearray(1 - h for h in holds)
    fair = m.fair
    all_fams = {f for f in fair if f >= 0}
    best = None
    for comp in tarjan(n, start, succ, keep):
        members = set(comp)
        taken: dict[int, tuple[int, int, int]] = {}  # family -> (src, edge, dst) inside
        enabled_everywhere = set(all_fams)
        for v in comp:
            fams_here = set()
            for e in range(start[v], start[v + 1]):
                f = fair[succ_act[e]]
                if f >= 0:
                    fams_here.add(f)
                    if succ[e] in members and f not in taken:
                        taken[f] = (v, e, succ[e])
            enabled_everywhere &= fams_here
        if enabled_everywhere - set(taken):
            continue  # some fair action is enabled in every state and never taken: unfair
        entry = min(comp)  # lowest BFS index = shortest prefix
        if best is None or entry < best[0]:
            best = (entry, members, taken)
    if best is None:
        return None
    entry, members, taken = best
    prefix_idx = tr.path(entry)
    acts, states = tr.concrete(prefix_idx)
    # the cycle: from the entry through one edge of every taken fair family, back to the entry
    cyc_edges: list[int] = []
    here = entry
    for _f, (src, e, dst) in sorted(taken.items()):
        cyc_edges += _path_inside(here, src, start, succ, members)
        cyc_edges.append(e)
        here = dst
    cyc_edges += _path_inside(here, entry, start, succ, members)
    cycle_acts, cycle_states = [], [states[-1]]
    st = states[-1]
    for e in cyc_edges:  # concrete (no symmetry on the liveness graph)
        a = succ_act[e]
        st = m.apply(a, st)
        cycle_acts.append(a)
        cycle_states.append(st)
    stutter = not cyc_edges
    enabled_fair = sorted({m.actions[a].label(m) for a in range(len(m.actions))
                           if fair[a] >= 0 and m.enabled(a, states[-1])})
    return {"invariant": name, "kind": "liveness", "prefix_length": len(acts),
            "prefix": tr.steps(acts, states),
            "cycle": ([{"n": len(acts) + 1, "action": "(stutter: no fair action is enabled)", "diff": {}}]
                      if stutter else tr.steps(cycle_acts, cycle_states, first=len(acts) + 1)),
            "fair_actions_enabled_at_entry": enabled_fair,
            "cycle_state": m.describe(states[-1])}


def _path_inside(a: int, b: int, start: array, succ: array, members: set) -> list[int]:
    """Edge indexes of a shortest path from ``a`` to ``b`` inside ``members``."""
    if a == b:
        return []
    prev: dict[int, tuple[int, int]] = {a: (-1, -1)}
    queue = [a]
    for v in queue:
        for e in range(start[v], start[v + 1]):
            w = succ[e]
            if w in members and w not in prev:
                prev[w] = (v, e)
                if w == b:
                    out = []
                    while w != a:
                        w, e2 = prev[w]
                        out.append(e2)
                    return out[::-1]
                queue.append(w)
    raise AssertionError("no path inside a strongly connected component")  # pragma: no cover


def format_trace(cex: dict) -> str:
    """Numbered steps with the state diff of each (what ``flk check model`` prints)."""
    lines = []

    def steps(items):
        for s in items:
            lines.append(f"  {s['n']:>3}. {s['action']}")
            for path, (a, b) in s["diff"].items():
                lines.append(f"         {path}: {_short(a)} -> {_short(b)}")

    if cex["kind"] == "liveness":
        lines.append(f"{cex['invariant']} (eventually) violated: lasso, prefix {cex['prefix_length']} steps")
        steps(cex["prefix"])
        lines.append("  -- cycle (repeats forever; fairness holds on it) --")
        steps(cex["cycle"])
    else:
        head = "deadlock (no action enabled, progress owed)" if cex["kind"] == "deadlock" else \
            f"{cex['invariant']} violated"
        lines.append(f"{head}: shortest counterexample, {cex['length']} steps")
        steps(cex["steps"])
    return "\n".join(lines)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 100 else text[:97] + "..."
