"""INV-VERIFY-BEFORE-DEDUP and INV-FWW as inductive invariants of the verifier (k-induction).

The transition relation is the pipeline of :mod:`flk.model.region`, refined
into its effect steps and run by two concurrent pipeline slots sharing one
durable dedup store (so two requests for one key can both miss and race to
``put_if_absent``):

====== ============================ ===========================================
op     guard (slot s)               effect
====== ============================ ===========================================
VERIFY pc_s = IDLE                  remember key/digest; pc_s := OK or REJ
REJECT pc_s = REJ                   answer 401; pc_s := IDLE
GET    pc_s = OK                    pc_s := HIT if stored[k] else MISS
PUT    pc_s = MISS                  put_if_absent(k, d); pc_s := PUT
ANSWER pc_s in {HIT, PUT}           pc_s := IDLE
CRASH  true                         every slot IDLE, verified flags lost;
                                    the store (durable) is kept
====== ============================ ===========================================

Ghost state: ``bad`` (a dedup access by a slot whose signature did not
verify) and ``ever``/``first`` (whether and what a key's first stored digest
was). Invariants, per slot and per key (a free key ``j``, so the proof covers
every key):

* INV-VERIFY-BEFORE-DEDUP: ``not bad``, strengthened with "a slot at OK,
  HIT, MISS or PUT has verified" -- ``not bad`` alone is not k-inductive for
  any k (a slot may sit at OK unverified for ever in an unreachable state).
* INV-FWW: ``stored[j] == ever[j]`` and ``ever[j] -> sdig[j] == first[j]``.

k-induction: base case by bounded model checking from the initial state up
to depth k, induction step over k consecutive states; the smallest k that
succeeds is reported. The encoding is cross-checked against the model: the
effect history of random model traces (submit/duplicate/conflict/bad
signature/crash/restart) is replayed through the Z3 transition function
(every step must be enabled) and the final Z3 store must equal the model's.
"""

from __future__ import annotations

import random

import z3

from .result import COUNTEREXAMPLE, PROVED, UNKNOWN, Clock, ProofResult, solver

IDLE, OK, REJ, HIT, MISS, PUT = range(6)
VERIFY, REJECT, GET, PUTOP, ANSWER, CRASH = range(6)
OPS = ("VERIFY", "REJECT", "GET", "PUT", "ANSWER", "CRASH")
SLOTS = 2
VARIANTS = ("spec", "dedup_before_verify", "overwrite")


def state(tag: str) -> dict:
    s = {f"pc{i}": z3.Int(f"pc{i}_{tag}") for i in range(SLOTS)}
    s.update({f"k{i}": z3.Int(f"k{i}_{tag}") for i in range(SLOTS)})
    s.update({f"d{i}": z3.Int(f"d{i}_{tag}") for i in range(SLOTS)})
    s.update({f"v{i}": z3.Bool(f"v{i}_{tag}") for i in range(SLOTS)})
    s["stored"] = z3.Array(f"stored_{tag}", z3.IntSort(), z3.BoolSort())
    s["sdig"] = z3.Array(f"sdig_{tag}", z3.IntSort(), z3.IntSort())
    s["ever"] = z3.Array(f"ever_{tag}", z3.IntSort(), z3.BoolSort())
    s["first"] = z3.Array(f"first_{tag}", z3.IntSort(), z3.IntSort())
    s["bad"] = z3.Bool(f"bad_{tag}")
    return s


def action(tag: str) -> dict:
    return {"op": z3.Int(f"op_{tag}"), "slot": z3.Int(f"slot_{tag}"), "k": z3.Int(f"ak_{tag}"),
            "d": z3.Int(f"ad_{tag}"), "ok": z3.Bool(f"aok_{tag}")}


def initial(s: dict) -> z3.BoolRef:
    c = [s[f"pc{i}"] == IDLE for i in range(SLOTS)] + [z3.Not(s[f"v{i}"]) for i in range(SLOTS)]
    c += [s["stored"] == z3.K(z3.IntSort(), z3.BoolVal(False)), s["ever"] == z3.K(z3.IntSort(), z3.BoolVal(False)),
          z3.Not(s["bad"])]
    return z3.And(c)


def step(s: dict, a: dict, variant: str = "spec") -> tuple[z3.BoolRef, dict]:
    """(guard, next state) of action a: a function, so it can be evaluated on concrete values."""
    guards = []
    nxt = dict(s)
    for i in range(SLOTS):
        me = a["slot"] == i
        pc, k, d, v = s[f"pc{i}"], s[f"k{i}"], s[f"d{i}"], s[f"v{i}"]
        op = a["op"]
        get_ok = pc == OK if variant != "dedup_before_verify" else z3.Or(pc == OK, pc == REJ)
        g = z3.Or(
            z3.And(op == VERIFY, pc == IDLE),
            z3.And(op == REJECT, pc == REJ),
            z3.And(op == GET, get_ok),
            z3.And(op == PUTOP, pc == MISS),
            z3.And(op == ANSWER, z3.Or(pc == HIT, pc == PUT)),
        )
        guards.append(z3.And(me, g))
        npc = z3.If(op == VERIFY, z3.If(a["ok"], OK, REJ),
              z3.If(op == REJECT, IDLE,
              z3.If(op == GET, z3.If(s["stored"][k], HIT, MISS),
              z3.If(op == PUTOP, PUT, IDLE))))
        nxt[f"pc{i}"] = z3.If(op == CRASH, IDLE, z3.If(me, npc, pc))
        nxt[f"k{i}"] = z3.If(z3.And(me, op == VERIFY), a["k"], k)
        nxt[f"d{i}"] = z3.If(z3.And(me, op == VERIFY), a["d"], d)
        nxt[f"v{i}"] = z3.If(op == CRASH, False, z3.If(z3.And(me, op == VERIFY), a["ok"], v))
    guards.append(a["op"] == CRASH)
    # the shared store: put_if_absent by the acting slot
    k_act = z3.If(a["slot"] == 0, s["k0"], s["k1"])
    d_act = z3.If(a["slot"] == 0, s["d0"], s["d1"])
    v_act = z3.If(a["slot"] == 0, s["v0"], s["v1"])
    is_put = a["op"] == PUTOP
    absent = z3.Not(s["stored"][k_act])
    writes = is_put if variant == "overwrite" else z3.And(is_put, absent)
    nxt["stored"] = z3.If(is_put, z3.Store(s["stored"], k_act, True), s["stored"])
    nxt["sdig"] = z3.If(writes, z3.Store(s["sdig"], k_act, d_act), s["sdig"])
    first_time = z3.And(is_put, z3.Not(s["ever"][k_act]))
    nxt["ever"] = z3.If(first_time, z3.Store(s["ever"], k_act, True), s["ever"])
    nxt["first"] = z3.If(first_time, z3.Store(s["first"], k_act, d_act), s["first"])
    touches = z3.Or(a["op"] == GET, is_put)
    nxt["bad"] = z3.Or(s["bad"], z3.And(touches, z3.Not(v_act)))
    return z3.Or(guards), nxt


def trans(s: dict, a: dict, s2: dict, variant: str) -> z3.BoolRef:
    g, n = step(s, a, variant)
    return z3.And(g, z3.And([s2[name] == n[name] for name in s]))


def prop(name: str, s: dict, j: z3.ArithRef) -> z3.BoolRef:
    if name == "INV-VERIFY-BEFORE-DEDUP":
        strengthen = [z3.Implies(z3.Or(s[f"pc{i}"] == OK, s[f"pc{i}"] == HIT, s[f"pc{i}"] == MISS,
                                       s[f"pc{i}"] == PUT), s[f"v{i}"]) for i in range(SLOTS)]
        return z3.And(z3.Not(s["bad"]), *strengthen)
    if name == "INV-FWW":
        return z3.And(s["stored"][j] == s["ever"][j], z3.Implies(s["ever"][j], s["sdig"][j] == s["first"][j]))
    raise ValueError(name)


def _trace(model: z3.ModelRef, states: list[dict], acts: list[dict]) -> list[str]:
    out = []
    for a in acts:
        ev = {k: model.eval(v, model_completion=True) for k, v in a.items()}
        out.append(f"{OPS[ev['op'].as_long()] if 0 <= ev['op'].as_long() < 6 else ev['op']}"
                   f"(slot={ev['slot']}, key={ev['k']}, digest={ev['d']}, ok={ev['ok']})")
    return out


def k_induction(name: str, max_k: int, variant: str = "spec") -> tuple[str, int, dict | None]:
    j = z3.Int("j")
    for k in range(1, max_k + 1):
        # base: no violation within k steps of the initial state
        states = [state(f"b{i}") for i in range(k + 1)]
        acts = [action(f"b{i}") for i in range(k)]
        s = solver(120_000)
        s.add(initial(states[0]))
        for i in range(k):
            s.add(trans(states[i], acts[i], states[i + 1], variant))
        s.add(z3.Or([z3.Not(prop(name, st, j)) for st in states]))
        r = s.check()
        if r == z3.sat:
            m = s.model()
            return COUNTEREXAMPLE, k, {"steps": _trace(m, states, acts), "key": str(m.eval(j, model_completion=True))}
        if r != z3.unsat:
            return UNKNOWN, k, None
        # step: k states satisfying the invariant, then a violation
        states = [state(f"s{i}") for i in range(k + 1)]
        acts = [action(f"s{i}") for i in range(k)]
        s = solver(120_000)
        for i in range(k):
            s.add(prop(name, states[i], j), trans(states[i], acts[i], states[i + 1], variant))
        s.add(z3.Not(prop(name, states[k], j)))
        r = s.check()
        if r == z3.unsat:
            return PROVED, k, None
        if r != z3.sat:
            return UNKNOWN, k, None
    return UNKNOWN, max_k, None


# ------------------------------------------------------------ cross-check with the model
def _concrete_initial() -> dict:
    s = {}
    for i in range(SLOTS):
        s[f"pc{i}"], s[f"k{i}"], s[f"d{i}"], s[f"v{i}"] = z3.IntVal(IDLE), z3.IntVal(0), z3.IntVal(0), z3.BoolVal(False)
    s["stored"] = z3.K(z3.IntSort(), z3.BoolVal(False))
    s["ever"] = z3.K(z3.IntSort(), z3.BoolVal(False))
    s["sdig"] = z3.K(z3.IntSort(), z3.IntVal(-1))
    s["first"] = z3.K(z3.IntSort(), z3.IntVal(-1))
    s["bad"] = z3.BoolVal(False)
    return s


def _apply(s: dict, op: int, k: int = 0, d: int = 0, ok: bool = True) -> dict:
    a = {"op": z3.IntVal(op), "slot": z3.IntVal(0), "k": z3.IntVal(k), "d": z3.IntVal(d), "ok": z3.BoolVal(ok)}
    g, n = step(s, a)
    if not z3.is_true(z3.simplify(g)):
        raise AssertionError(f"{OPS[op]} not enabled in the Z3 encoding at pc={z3.simplify(s['pc0'])}")
    return {name: z3.simplify(v) for name, v in n.items()}


def crosscheck_model(traces: int, seed: int = 11) -> dict:
    """Replay model effect histories through the Z3 transition function; compare the stores."""
    from flk.model.region import Region, Submission

    rng = random.Random(seed)
    keys = {"acme": frozenset({"acme:k0"}), "beta": frozenset({"beta:k0"})}
    mismatches, first, steps = 0, None, 0
    for t in range(traces):
        r = Region("eu", dict(keys))
        rid = 0
        for _ in range(rng.randint(5, 25)):
            c = rng.random()
            if c < 0.55:
                rid += 1
                tenant = rng.choice(["acme", "beta"])
                key_id = rng.choice([f"{tenant}:k0", f"{tenant}:k0", f"{tenant}:forged", "acme:k0"])
                r.submit(Submission(rid, tenant, rng.choice(["p1", "p2"]), rng.choice(["d1", "d2"]), key_id),
                         float(rid))
            elif c < 0.75:
                r.sync()
            elif c < 0.9:
                r.drain()
            elif c < 0.95:
                r.crash()
            else:
                r.restart()
        r.restart()
        r.sync()
        r.drain()
        key_ids: dict = {}
        dig_ids: dict = {}
        s = _concrete_initial()
        try:
            for ev in r.history:
                if ev.kind in ("verify", "crash"):
                    pc = z3.simplify(s["pc0"]).as_long()
                    if pc == REJ:
                        s = _apply(s, REJECT)
                    elif pc in (HIT, PUT):
                        s = _apply(s, ANSWER)
                if ev.kind == "verify":
                    kid = key_ids.setdefault(ev.key, len(key_ids))
                    did = dig_ids.setdefault(ev.digest, len(dig_ids))
                    s = _apply(s, VERIFY, kid, did, ev.ok)
                elif ev.kind == "dedup_get":
                    s = _apply(s, GET)
                elif ev.kind == "dedup_put":
                    if z3.simplify(s["pc0"]).as_long() != MISS:
                        raise AssertionError("model put where the Z3 store had a hit")
                    s = _apply(s, PUTOP)
                elif ev.kind == "crash":
                    s = _apply(s, CRASH)
                steps += 1
            for key, kid in key_ids.items():
                z_stored = z3.is_true(z3.simplify(s["stored"][kid]))
                if z_stored != (key in r.dedup):
                    raise AssertionError(f"stored mismatch for {key}")
                if z_stored and z3.simplify(s["sdig"][kid]).as_long() != dig_ids[r.dedup[key].payload_digest]:
                    raise AssertionError(f"digest mismatch for {key}")
        except AssertionError as exc:
            mismatches += 1
            first = first or {"trace": t, "error": str(exc)}
    return {"traces": traces, "steps": steps, "mismatches": mismatches, "first": first}


SCOPE = ("transition relation of the verify pipeline (2 concurrent slots, unbounded keys and digests, crash "
         "keeping a durable store), invariant per free key j; k-induction from k=1 up to {k}. Encoding "
         "cross-checked against flk.model.region on random traces (effect histories replayed step by step, "
         "final stores compared). Volatile-store recovery and replication are covered by the model's "
         "Hypothesis tests, not by this proof.")


def prove(tier: str = "quick", name: str = "INV-VERIFY-BEFORE-DEDUP", variant: str = "spec",
          max_k: int | None = None) -> ProofResult:
    clock = Clock()
    max_k = max_k or (2 if tier == "quick" else 4)
    status, k, cex = k_induction(name, max_k, variant)
    details: dict = {"variant": variant, "k": k}
    if status == PROVED:
        xc = crosscheck_model(40 if tier == "quick" else 400)
        details["crosscheck"] = {k2: v for k2, v in xc.items() if k2 != "first"}
        if xc["mismatches"]:
            return ProofResult(name, COUNTEREXAMPLE, clock(), {"model_vs_z3": xc["first"]}, SCOPE.format(k=max_k),
                               details)
    return ProofResult(name, status, clock(), cex, SCOPE.format(k=max_k), details)
