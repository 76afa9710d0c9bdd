"""``flk check model``: the exhaustive checker is green on the model and catches every planted bug.

* the default scope (what ``make test`` runs) is explored completely with no
  violation, liveness checked, and the symmetry-reduced pass agrees;
* each planted model bug is found -- the first four with a shortest safety
  counterexample (known length), the same set of violated invariants with and
  without symmetry reduction; ``reader-never-resumes`` only by liveness (a lasso);
* the checker's transition system is the model: random action sequences give
  the same state in :mod:`flk.model.explore` and :class:`flk.model.cluster.Cluster`;
* the iterative Tarjan equals networkx's strongly connected components.
"""

from __future__ import annotations

import json

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.lab.cli import main
from flk.model.checker import check, format_trace, tarjan
from flk.model.cluster import Cluster
from flk.model.explore import (
    ACKED,
    ANS,
    AUTH,
    BUF,
    CUR,
    DEDUP,
    FIRST,
    KINDS,
    REGION_NAMES,
    TENANT_NAMES,
    UP,
    WAIT,
    WAL,
    WM,
    Machine,
    Scope,
)
from flk.model.region import Submission

SMALL = dict(regions=2, tenants=1, keys=1, payloads=2, writes=2, bad=0, crashes=1, partitions=1)

# planted bug -> (scope changes, invariants violated in that scope, shortest counterexample length of the first)
PLANTED_SAFETY = {
    "merge-keeps-later": ({}, {"INV-CONVERGENCE"}, 4),
    "replay-skips-verify": ({"writes": 1, "bad": 1},
                            {"INV-VERIFY-BEFORE-DEDUP", "INV-TENANT-ISOLATION", "INV-CONVERGENCE"}, 4),
    "ship-before-sync": ({"writes": 1}, {"INV-WAL-FIRST"}, 2),
    "heal-forgets-region": ({}, {"INV-WAL-FIRST", "INV-NO-ACKED-LOSS", "INV-FWW"}, 5),
}
FIRST_INV = {"merge-keeps-later": "INV-CONVERGENCE", "replay-skips-verify": "INV-VERIFY-BEFORE-DEDUP",
             "ship-before-sync": "INV-WAL-FIRST", "heal-forgets-region": "INV-NO-ACKED-LOSS"}


def test_inv_model_check_default_scope_is_green(capsys):
    """``flk check model`` (default scope, both passes) exits 0: complete, nothing violated, liveness holds."""
    assert main(["check", "model", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["violated"] == [] and out["liveness_violated"] == []
    assert out["liveness_checked"] and out["symmetry_agrees"]
    full, reduced = out["runs"]
    assert full["complete"] and reduced["complete"] and not full["symmetry"] and reduced["symmetry"]
    assert full["distinct_states"] > 100_000  # the scope is not vacuous
    assert out["reduction_factor"] > 2


@pytest.mark.parametrize("bug", sorted(PLANTED_SAFETY))
def test_inv_model_check_planted_bug_has_a_shortest_safety_counterexample(bug):
    changes, want, length = PLANTED_SAFETY[bug]
    scope = Scope(**(SMALL | changes), plant=bug)
    full = check(scope, symmetry=False, liveness=False)
    reduced = check(scope, symmetry=True)
    assert full.complete and reduced.complete
    assert set(full.violated) == want == set(reduced.violated)
    for name in want:  # symmetry keeps the shortest length of every counterexample
        assert full.violated[name]["length"] == reduced.violated[name]["length"]
    cex = full.violated[FIRST_INV[bug]]
    assert cex["length"] == length and len(cex["steps"]) == length
    assert reduced.distinct_states < full.distinct_states
    # every one also ends in a deadlock: a terminal state that still owes convergence or delivery
    assert full.deadlock is not None and full.deadlock["kind"] == "deadlock"
    assert "deadlock (no action enabled, progress owed)" in format_trace(full.deadlock)
    # the trace replays: the same actions from the initial state end in a violating state
    assert "violated: shortest counterexample" in format_trace(cex)
    m = Machine(scope)
    st_ = m.initial()
    labels = {a.label(m): i for i, a in enumerate(m.actions)}
    for step in cex["steps"]:
        a = labels[step["action"]]
        assert m.enabled(a, st_)
        st_ = m.apply(a, st_)
    assert not m.safety()[FIRST_INV[bug]](st_)


def test_inv_model_check_reader_never_resumes_is_found_only_by_liveness():
    scope = Scope(**SMALL, plant="reader-never-resumes")
    res = check(scope, symmetry=False, liveness=True)
    assert res.complete and res.violated == {} and res.deadlock is None  # no safety check sees it
    lasso = res.liveness["INV-ACKED-DELIVERY"]
    assert lasso is not None and res.liveness["INV-CONVERGENCE"] is not None
    actions = [s["action"] for s in lasso["prefix"]]
    assert any(a.startswith("partition") for a in actions) and any(a.startswith("heal") for a in actions)
    assert lasso["cycle"] and all(s["action"].startswith("replay") and s["diff"] == {} for s in lasso["cycle"])
    assert "lasso" in format_trace(lasso)
    # the reference model under the same scope: liveness holds
    ok = check(Scope(**SMALL), symmetry=False, liveness=True)
    assert ok.ok and ok.deadlock is None and all(v is None for v in ok.liveness.values())


def test_an_incomplete_search_says_so_instead_of_a_bare_fail(capsys):
    """--max-states stops a pass: the verdict names that (it printed a bare FAIL, and a symmetry
    reduction factor and agreement computed from a pass that had stopped)."""
    assert main(["check", "model", "--max-states", "2000"]) == 1
    text = capsys.readouterr().out
    assert "symmetry reduction factor unknown (a pass stopped before covering the scope)" in text
    assert text.rstrip().endswith("FAIL: INCOMPLETE: the full graph and symmetry-reduced passes stopped at "
                                  "--max-states before covering the scope (what it explored is no proof; "
                                  "raise --max-states)"), text
    assert main(["check", "model", "--max-states", "2000", "--symmetry", "on", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["incomplete"] == ["symmetry-reduced"] and "reduction_factor" not in out
    assert out["why_not_ok"] == ["INCOMPLETE: the symmetry-reduced pass stopped at --max-states before covering "
                                 "the scope (what it explored is no proof; raise --max-states)"]


def test_inv_model_check_cli_writes_counterexamples_and_rejects_bad_scopes(tmp_path, capsys):
    out = tmp_path / "cex.json"
    rc = main(["check", "model", "--regions", "2", "--tenants", "1", "--writes", "1", "--bad", "0",
               "--plant", "ship-before-sync", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 1 and "INV-WAL-FIRST violated: shortest counterexample, 2 steps" in text
    assert text.rstrip().splitlines()[-1].startswith("FAIL: INV-WAL-FIRST violated")  # the verdict says why
    assert "  1. submit" in text and "  2. ship" in text
    data = json.loads(out.read_text())
    assert data["safety"]["INV-WAL-FIRST"]["length"] == 2
    assert main(["check", "model", "--regions", "0"]) == 2
    assert main(["check", "model", "--plant", "nope"]) == 2
    assert "flk check: error: regions must be" in capsys.readouterr().err


# ---- the checker's transition system is the model (flk.model.cluster) ------------------------
def _key_id(scope: Scope, sub: tuple) -> str:
    _o, key, _d, kind, gen = sub
    t = key // scope.keys
    tenant = TENANT_NAMES[t]
    if kind == 0:
        return f"{tenant}:k{gen}"
    if kind == 1:
        return f"{tenant}:forged"
    return f"{TENANT_NAMES[(t + 1) % len(TENANT_NAMES)]}:k0"


def _abstract(c: Cluster, scope: Scope, m: Machine) -> tuple:
    """The Cluster's state in the checker's terms (outcomes as sub indexes = first_seen - 1)."""
    nk = m.nk
    names = REGION_NAMES[: scope.regions]
    idx = lambda o: int(o.first_seen) - 1  # noqa: E731
    kidx = lambda k: TENANT_NAMES.index(k[0]) * scope.keys + int(k[1][1:]) - 1  # noqa: E731

    def vec(d):
        out = [-1] * nk
        for k, o in d.items():
            out[kidx(k)] = idx(o)
        return tuple(out)

    regs = []
    for r in names:
        reg = c.regions[r]
        regs.append((int(reg.up), tuple(rec.sub.rid - 1 for rec in reg.wal), tuple(rec.sub.rid - 1 for rec in reg.buffer),
                     reg.cursor, tuple(sorted(x - 1 for x in reg.waiting)), vec(reg.dedup), vec(reg.authoritative),
                     tuple(reg.watermarks.get(p, 0) for p in names), vec(reg.first_stored),
                     tuple(sorted((rid - 1, idx(o)) for rid, (_k, o) in reg.acked.items())),
                     tuple(sorted((rid - 1, s) for rid, s in reg.answers.items()))))
    store = tuple(tuple(rec.sub.rid - 1 for rec in c.store.get(r, ())) for r in names)
    part = tuple(int(r in c.partitioned) for r in names)
    return tuple(regs), store, part


def _project(st_: tuple) -> tuple:
    regs = tuple((r[UP], r[WAL], r[BUF], r[CUR], r[WAIT], r[DEDUP], r[AUTH], r[WM], r[FIRST], r[ACKED], r[ANS])
                 for r in st_[2])
    return regs, st_[3], st_[4]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans())
def test_inv_model_check_transitions_equal_the_cluster_model(data, volatile):
    scope = Scope(regions=3, tenants=2, keys=2, payloads=2, writes=4, bad=2, crashes=2, partitions=2,
                  rotations=1, volatile_store=volatile)
    m = Machine(scope)
    keys0 = {t: frozenset({f"{t}:k0"}) for t in TENANT_NAMES[: scope.tenants]}
    c = Cluster.create(list(REGION_NAMES[: scope.regions]), keys0, dedup_durable=not volatile)
    state = m.initial()
    for _ in range(data.draw(st.integers(0, 30))):
        succ = m.successors(state)
        if not succ:
            break
        a, nxt = data.draw(st.sampled_from(succ))
        act = m.actions[a]
        k, args = act.kind, act.args
        rn = [REGION_NAMES[x] for x in args] if k not in ("submit", "rotate") else None
        if k == "submit":
            sub = nxt[0][-1]
            tenant = TENANT_NAMES[sub[1] // scope.keys]
            i = len(nxt[0])
            c.submit(REGION_NAMES[sub[0]], Submission(i, tenant, f"p{sub[1] % scope.keys + 1}", f"d{sub[2] + 1}",
                                                      _key_id(scope, sub)), float(i))
        elif k == "rotate":
            t = args[0]
            c.rotate_key(TENANT_NAMES[t], f"{TENANT_NAMES[t]}:k{nxt[1][t]}")
        elif k in ("sync", "crash", "restart"):
            getattr(c.regions[rn[0]], k)()
        elif k == "process":
            c.regions[rn[0]].drain()
        elif k in ("ship", "partition", "heal"):
            getattr(c, k)(rn[0])
        elif k == "replay":
            c.replay(rn[0], rn[1])
        state = nxt
        assert _abstract(c, scope, m) == _project(state), act.label(m)
        assert KINDS  # names used by labels


def test_inv_convergence_checker_merge_is_the_reference_merge_on_every_state():
    """The checker's min-index merge equals flk.model.merge.merge_all in every reachable state of a scope."""
    m = Machine(Scope(regions=2, tenants=1, writes=2, bad=1, crashes=1, partitions=1))
    seen = {m.initial()}
    frontier = [m.initial()]
    checked = 0
    while frontier:
        nxt = []
        for s in frontier:
            subs = s[0]
            for reg in s[2]:
                if not reg[UP]:
                    continue
                done = [i for i in reg[WAL][: reg[CUR]] if subs[i][3] == 0]
                for key, v in enumerate(reg[AUTH]):
                    ref = m.reference_merge(subs, [i for i in done if subs[i][1] == key])
                    assert ref == (m.outcome(subs, v) if v >= 0 else None)
                    checked += 1
            for _a, s2 in m.successors(s):
                if s2 not in seen:
                    seen.add(s2)
                    nxt.append(s2)
        frontier = nxt
    assert checked > 10_000


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.lists(
    st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4 * n))), st.data())
def test_tarjan_equals_networkx_strongly_connected_components(graph, data):
    from array import array

    n, edges = graph
    keep = bytearray(data.draw(st.lists(st.sampled_from([0, 1, 1]), min_size=n, max_size=n)))
    out = [[] for _ in range(n)]
    for a, b in edges:
        out[a].append(b)
    start, succ = array("q"), array("q")
    for v in range(n):
        start.append(len(succ))
        succ.extend(out[v])
    start.append(len(succ))
    g = nx.DiGraph()
    g.add_nodes_from(v for v in range(n) if keep[v])
    g.add_edges_from((a, b) for a, b in edges if keep[a] and keep[b])
    want = sorted(sorted(c) for c in nx.strongly_connected_components(g))
    assert sorted(sorted(c) for c in tarjan(n, start, succ, keep)) == want


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_inv_model_check_canonical_is_one_representative_per_orbit(data):
    """Every renaming of regions, tenants and pcs_ids of a reachable state has the same
    canonical representative, and that representative is itself in the orbit."""
    scope = Scope(regions=3, tenants=2, keys=2, payloads=2, writes=3, bad=1, crashes=1, partitions=1, rotations=1)
    m = Machine(scope)
    state = m.initial()
    for _ in range(data.draw(st.integers(0, 14))):
        succ = m.successors(state)
        if not succ:
            break
        state = data.draw(st.sampled_from(succ))[1]
    rho = tuple(data.draw(st.permutations(range(scope.regions))))
    tau = tuple(data.draw(st.permutations(range(scope.tenants))))
    pcs = [data.draw(st.permutations(range(scope.keys))) for _ in range(scope.tenants)]
    kmap = tuple(tau[k // scope.keys] * scope.keys + pcs[k // scope.keys][k % scope.keys] for k in range(m.nk))
    renamed = m.permute(state, rho, kmap, tau)
    assert m.canonical(renamed) == m.canonical(state)
    assert all(pred(m.canonical(state)) == pred(state) for pred in m.safety().values())  # symmetric invariants
