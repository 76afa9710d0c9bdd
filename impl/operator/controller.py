"""The sans-I/O controller: ``reconcile(policy, status, observed, now) -> Result``.

Why this module exists: the seeds' operator watches health and rolls back by
itself. Here that decision is one pure function, so the simulator, Hypothesis
and the ``flk operator run`` driver call the very same code: no asyncio, no
threads, no wall clock -- the driver passes ``now`` and what it *observed*
(metrics sample, the deployment's migration state, each server's applied
phase), and carries out the returned actions.

Level-triggered: every decision is a function of the observed deployment
plus the persisted status, never of memory of an action "sent". Every action
is idempotent (a phase change is a compare-and-set that is a no-op when the
deployment is already there; a copy batch is ``put_if_absent`` from a
checkpoint; a verify batch only reads), so a controller killed anywhere --
before persisting its status, after persisting it, after the action ran --
resumes by observing and issuing whatever the table says next. INV-OP-RESUME,
INV-OP-NO-LOSS and INV-OP-ONE-DECIDER (spec/INVARIANTS.md) state what this
must preserve.

Observed (all keys optional)::

    {"reachable": bool,                       # False: hold everything, act on nothing
     "sample": {"t", "latency_p95_ms", "error_rate", "dedup_hit_ratio", ...} | None,
     "migration": {"phase", "copy": {"round", "done"}, "verify": {"round", "done", "missing", "different"},
                   "catchup": {"done", "different"}, "prune": {"done", "deleted", "missing", "different"}} | None,
     "servers": [applied phase of every server process],
     "crr": {"applied": {region: generation}}, "tier": {"generation", "history", "candidates"},
     "error": "the last action's failure" | None}
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..core.schema import Engine, Field, SchemaError, type_name
from . import gates as gates_mod
from .policy import Policy
from .table import PHASES, first_phase, phase, rows_from

# migrate.TRANSITIONS, repeated here as data the actions carry (the driver checks them again)
PHASE_FROM = {"dual_write": ("planned",), "cut_over": ("verified",), "cleaned": ("cut_over",), "verified": ("cut_over",),
              "rolled_back": ("dual_write", "copied", "verified")}
OLD_DECIDES = ("planned", "dual_write", "copied", "verified", "rolled_back")
WINDOW_KEEP = 512  # samples kept in the status at most


@dataclass
class Result:
    actions: list[dict]
    status: dict
    audit: list[dict] = field(default_factory=list)

    @property
    def transitioned(self) -> bool:
        return bool(self.audit)


def new_status(policy: Policy, now: float, after_seq: int = 0) -> dict:
    """A policy's first status. ``after_seq``: the last transition its audit log already holds
    (a status started over must not number its transitions from 1 again: the audit would skip
    them as written)."""
    return {"kind": policy.kind, "name": policy.name, "generation": policy.generation,
            "phase": first_phase(policy.kind), "entered_at": now, "last_transition_time": now,
            "transitions": after_seq, "round": 1, "healthy_since": None, "next_cycle": now, "progress": {},
            "conditions": [], "window": [], "history": [], "pending_audit": []}


def _reading(e: Engine, value, spec: Field, path: str, ctx) -> None:
    """A gate sample's metric: any JSON number (a non-finite one is skipped by the gates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise e.error(path, f"must be a number, got {type_name(value)}")


_TIME = "a time (s)"
STATUS_FIELDS = (  # what reconcile reads of a status; keys it only writes or shows pass
    Field("phase", "str", None, "the table's phase", required=True),
    Field("generation", "str", None, "the spec generation applied", required=True),
    Field("transitions", "int", None, "transitions so far (the audit's seq)", minimum=0, required=True),
    Field("round", "int", None, "the verify round", minimum=1, required=True),
    Field("entered_at", "number", None, _TIME, required=True),
    Field("last_transition_time", "number", None, _TIME),
    Field("healthy_since", "number", None, _TIME),
    Field("next_cycle", "number", None, _TIME),
    Field("progress", "table", None, "what the phase has done"),
    Field("history", "list", None, "the last transitions"),
    Field("conditions", "tables", None, "conditions", fields=(
        Field("type", "str", None, "the condition", required=True),
        Field("status", "str", None, "True, False or Unknown", required=True),
        Field("last_transition_time", "number", None, _TIME, required=True))),
    Field("window", "tables", None, "gate samples", fields=(
        Field("t", "number", None, _TIME, required=True),
        *(Field(metric, "reading", None, "a gate's metric") for metric, _sense in gates_mod.GATES.values()))),
    Field("pending_audit", "tables", None, "transitions not yet in the audit log", fields=(
        Field("policy", "str", None, "the policy key", required=True),
        Field("seq", "int", None, "its transition number", minimum=1, required=True),
        Field("from", "str", None, "the phase left", required=True),
        Field("to", "str", None, "the phase entered", required=True))),
)
_STATUS = Engine(kinds={"reading": _reading}, others_pass=True)


def status_problem(policy: Policy, status: Mapping) -> str | None:
    """Why ``status`` cannot be resumed for ``policy`` (a damaged file, a phase another
    table version named), or None. :func:`reconcile` starts such a status over."""
    try:
        _STATUS.check_table(status, STATUS_FIELDS, "")
    except SchemaError as exc:
        return str(exc)
    if not any(p.kind == policy.kind and p.name == status["phase"] for p in PHASES):
        return f"phase: {status['phase']!r} is not a phase of {policy.kind}"
    return None


@dataclass
class Ctx:
    policy: Policy
    status: dict
    observed: Mapping
    now: float
    gates: dict

    @property
    def spec(self) -> dict:
        return self.policy.spec

    @property
    def mig(self) -> Mapping | None:
        return self.observed.get("migration")

    def servers(self) -> list:
        s = self.observed.get("servers")
        if s is None:
            m = self.mig
            return [m["phase"]] if m else []
        return list(s)

    def all_servers(self, phases: tuple[str, ...]) -> bool:
        m = self.mig
        return m is not None and m["phase"] in phases and all(p in phases for p in self.servers())

    @property
    def verdict(self) -> str:
        return gates_mod.overall(self.gates)


def _copy_done(c: Ctx) -> bool:
    m = c.mig
    return (m is not None and m["phase"] in ("copied", "verified") and m["copy"].get("done")
            and int(m["copy"].get("round", 1)) >= c.status["round"])


def _verify_done(c: Ctx) -> bool:
    m = c.mig
    return m is not None and bool(m["verify"].get("done")) and int(m["verify"].get("round", 1)) >= c.status["round"]


def _dirty(c: Ctx) -> bool:
    m = c.mig
    return (_verify_done(c) and m["phase"] == "copied"
            and bool(m["verify"].get("missing") or m["verify"].get("different")))


def _gates_pass(c: Ctx) -> bool:
    v = c.verdict
    return v == "ok" or (v == "unknown" and c.spec.get("gates", {}).get("on_unknown") == "proceed")


def _prune_of(mig: Mapping | None) -> Mapping:
    """The observed migration's prune progress ({} when there is none: no migration, or a server
    of a version before the prune)."""
    return (mig or {}).get("prune") or {}


def _soaked(c: Ctx) -> bool:
    since = c.status["healthy_since"]
    return (c.all_servers(("cut_over",)) and since is not None
            and c.now - max(since, c.status["entered_at"]) >= float(c.spec["soak_s"]))


GUARDS: dict[str, Callable[[Ctx], bool]] = {
    "always": lambda c: True,
    "observed_planned": lambda c: c.mig is not None,
    "gate_breach": lambda c: bool(c.spec.get("auto_rollback", True)) and c.verdict == "breach",
    "gates_ok": lambda c: c.verdict == "ok",
    "all_servers_dual_write": lambda c: c.all_servers(("dual_write", "copied", "verified")),
    "copy_done": _copy_done,
    "verify_clean_gates_ok": lambda c: c.all_servers(("verified",)) and _gates_pass(c),
    "verify_dirty_rounds_left": lambda c: _dirty(c) and c.status["round"] < int(c.spec["max_verify_rounds"]),
    "verify_dirty_no_rounds": lambda c: _dirty(c) and c.status["round"] >= int(c.spec["max_verify_rounds"]),
    "soaked": _soaked,
    "all_servers_cleaned": lambda c: c.all_servers(("cleaned",)),
    "prune_done": lambda c: c.all_servers(("cleaned",)) and bool(_prune_of(c.mig).get("done")),
    "all_servers_rolled_back": lambda c: c.all_servers(("rolled_back",)) or c.all_servers(("planned",)),
    "crr_applied": lambda c: bool(c.observed.get("crr", {}).get("applied")) and all(
        g == c.policy.generation for g in c.observed["crr"]["applied"].values()),
    "spec_changed": lambda c: c.status["generation"] != c.policy.generation,
    "tier_configured": lambda c: c.observed.get("tier", {}).get("generation") == c.policy.generation,
}


def _phase_action(c: Ctx, to: str) -> list[dict]:
    m = c.mig
    if m is None or m["phase"] == to or (to == "rolled_back" and m["phase"] == "planned"):
        return []
    return [{"op": "migration.phase", "to": to, "from": list(PHASE_FROM[to])}]


def _ensure(c: Ctx) -> list[dict]:
    """The current phase's action while the deployment does not show it yet."""
    ens = phase(c.policy.kind, c.status["phase"]).ensure
    spec = c.spec
    if not ens:
        return []
    if ens.startswith("migration.phase:"):
        return _phase_action(c, ens.split(":", 1)[1])
    if ens == "migration.rollback":
        return _rollback(c)
    if ens == "migration.plan":
        return [] if c.mig is not None else [{
            "op": "migration.plan", "old": spec["old"], "new": spec["new"], "vnodes": spec["vnodes"],
            "probes": spec["probes"]}]
    if ens == "migration.copy":
        return [] if _copy_done(c) else [{"op": "migration.copy", "round": c.status["round"], "batch": spec["batch"]}]
    if ens == "migration.verify":
        return [] if _verify_done(c) else [{"op": "migration.verify", "round": c.status["round"],
                                            "batch": spec["batch"], "settle_s": spec["settle_s"]}]
    if ens == "migration.cleanup":
        return _cleanup(c)
    if ens == "migration.prune":
        pending = c.mig is not None and c.mig["phase"] == "cleaned" and not _prune_of(c.mig).get("done")
        return [{"op": "migration.prune", "batch": spec["prune_batch"]}] if pending else []
    if ens == "crr.apply":
        return [{"op": "crr.apply", "generation": c.policy.generation, "spec": copy.deepcopy(spec)}]
    if ens == "tier.configure":
        return [{"op": "tier.configure", "generation": c.policy.generation, "hot_s": spec["hot_s"],
                 "warm_s": spec["warm_s"]}]
    if ens == "tier.cycle":
        return _tier_cycle(c)
    raise AssertionError(f"unknown ensure action {ens!r}")  # a table bug, not input


def _rollback(c: Ctx) -> list[dict]:
    """Undo a cutover first (cut_over -> verified: the old ring decides, both rings still
    mirrored); stop mirroring (rolled_back) only once every server decides on the old ring."""
    m = c.mig
    if m is None:
        return []
    if m["phase"] == "cut_over":
        return _phase_action(c, "verified")
    if all(p in OLD_DECIDES for p in c.servers()):
        return _phase_action(c, "rolled_back")
    return []


def _cleanup(c: Ctx) -> list[dict]:
    """Catch up first (copy the old-ring keys the new ring lacks, SPEC 13.4), then stop writing
    the old ring; the migration's own transition refuses cleaned before a clean catch-up."""
    m = c.mig
    if m is not None and m["phase"] == "cut_over" and not (m.get("catchup") or {}).get("done"):
        return [{"op": "migration.catchup", "batch": c.spec["batch"]}]
    return _phase_action(c, "cleaned")


def _tier_cycle(c: Ctx) -> list[dict]:
    from .tiering import plan_prewarm

    if c.now < c.status["next_cycle"]:
        return []
    c.status["next_cycle"] = c.now + float(c.spec["cycle_s"])
    tier = c.observed.get("tier", {})
    keys, report = plan_prewarm(c.spec, tier.get("history", {}), tier.get("candidates", []))
    c.status["progress"] = {"last_cycle": report}
    return [{"op": "tier.prewarm", "keys": keys}] if keys else []


# every condition a status can carry: (when it is present, what True / False / Unknown mean, its reasons)
CONDITIONS: dict[str, tuple[str, str, str]] = {
    "Healthy": ("always", "True: the health gates are ok; False: one is breached; Unknown: too few samples",
                "GatesOk, GatesBreach, GatesUnknown (message: each gate's verdict, value/limit and samples)"),
    "Reachable": ("always", "False: the driver could not observe the deployment (nothing is acted on)",
                  "Observed, NoObservation"),
    "ActionFailed": ("always", "True: the last action failed or the observation was malformed (message: why)",
                     "Error, None"),
    "CopiesKept": ("once a migration's prune is done",
                   "True: the prune kept copies it could not delete -- an owner lacked the key or held another "
                   "outcome (message: how many of each); False: none",
                   "OwnerLacksOrDiffers, None"),
    "Ready": ("in a terminal phase", "True: Completed; False: another terminal phase (RolledBack)",
              "the phase"),
}


def conditions_markdown() -> str:
    """The status conditions as a Markdown table (spec/OPERATOR.md embeds it)."""
    rows = ["| condition | present | meaning | reasons |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {when} | {meaning} | {reasons} |" for name, (when, meaning, reasons) in CONDITIONS.items()]
    return "\n".join(rows) + "\n"


def _conditions(c: Ctx) -> list[dict]:
    old = {x["type"]: x for x in c.status["conditions"]}

    def cond(typ: str, st: str, reason: str, msg: str = "") -> dict:
        assert typ in CONDITIONS, typ  # a table bug, not input
        prev = old.get(typ)
        since = prev["last_transition_time"] if prev is not None and prev["status"] == st else c.now
        return {"type": typ, "status": st, "reason": reason, "message": msg, "last_transition_time": since}

    verdict = c.verdict
    healthy = {"ok": "True", "breach": "False", "unknown": "Unknown"}[verdict]
    detail = ", ".join(f"{k}={g['verdict']}({g['value']!r}/{g['limit']!r}, n={g['n']})" for k, g in c.gates.items())
    out = [cond("Healthy", healthy, "Gates" + verdict.capitalize(), detail),
           cond("Reachable", "False" if c.observed.get("reachable") is False else "True",
                "Observed" if c.observed.get("reachable") is not False else "NoObservation")]
    err = c.observed.get("error")
    out.append(cond("ActionFailed", "True" if err else "False", "Error" if err else "None", str(err or "")[:200]))
    pr = _prune_of(c.mig)
    if pr.get("done"):  # the prune kept copies it could not delete: an owner lacks a key, or holds another outcome
        missing, different = int(pr.get("missing") or 0), int(pr.get("different") or 0)
        out.append(cond("CopiesKept", "True", "OwnerLacksOrDiffers", f"{missing} missing, {different} different")
                   if missing or different else cond("CopiesKept", "False", "None"))
    p = phase(c.policy.kind, c.status["phase"])
    if p.terminal:
        ok = c.status["phase"] == "Completed"
        out.append(cond("Ready", "True" if ok else "False", c.status["phase"]))
    return out


def reconcile(policy: Policy, status: Mapping | None, observed: Mapping, now: float, after_seq: int = 0) -> Result:
    """One step of the table for ``policy``: the actions to carry out and the next status.
    Total: any observation gets an answer (a malformed one is an ``ActionFailed`` condition),
    and any status: one it cannot resume (:func:`status_problem`) is started over, like a
    missing one, its transitions numbered after ``after_seq`` (the last the audit log holds),
    and the problem is the ``ActionFailed`` condition of this step."""
    problem = status_problem(policy, status) if status else None
    if status and problem is None:
        st = {**new_status(policy, now, after_seq), **copy.deepcopy(dict(status))}
    else:
        st = new_status(policy, now, after_seq)
        if problem:
            observed = {**observed, "error": f"status started over: {problem}"}
    sample = observed.get("sample")
    if sample:
        st["window"] = (st["window"] + [dict(sample)])[-WINDOW_KEEP:]
    gate_cfg = policy.spec.get("gates")
    if gate_cfg:
        st["window"] = gates_mod.window(st["window"], now, float(gate_cfg["window_s"]))
    report = gates_mod.evaluate(gate_cfg, st["window"], now) if gate_cfg else {}
    c = Ctx(policy, st, observed, now, report)
    st["healthy_since"] = (st["healthy_since"] if st["healthy_since"] is not None else now) \
        if c.verdict == "ok" else None
    audit: list[dict] = []
    if observed.get("reachable") is not False and not phase(policy.kind, st["phase"]).terminal:
        try:
            audit = _step(c)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed observation: hold
            observed = {**observed, "error": f"bad observation: {type(exc).__name__}: {exc}"}
            c.observed = observed
    actions = []
    if observed.get("reachable") is not False and not phase(policy.kind, st["phase"]).terminal:
        try:
            actions = _ensure(c)
        except (KeyError, TypeError, ValueError) as exc:
            c.observed = {**observed, "error": f"bad observation: {type(exc).__name__}: {exc}"}
    if c.mig is not None:
        st["progress"] = {**st.get("progress", {}), "migration_phase": c.mig.get("phase"), "round": st["round"],
                          "copy": dict(c.mig.get("copy", {})), "verify": dict(c.mig.get("verify", {})),
                          "prune": dict(c.mig.get("prune") or {})}
    st["conditions"] = _conditions(c)
    st["gates"] = report
    st["pending_audit"] = st.get("pending_audit", []) + audit
    for a in actions:
        a.setdefault("policy", policy.key)
        a["id"] = f"{policy.key}#{st['transitions']}:{a['op']}"
    return Result(actions, st, audit)


def _step(c: Ctx) -> list[dict]:
    """Fire at most one row of the table for the current phase (rows in table order)."""
    st = c.status
    phase(c.policy.kind, st["phase"])  # a status from another table version fails here (KeyError)
    gated = phase(c.policy.kind, st["phase"]).gated
    for row in rows_from(c.policy.kind, st["phase"]):
        if row.guard == "gate_breach" and not gated:
            continue
        if not GUARDS[row.guard](c):
            continue
        return [_fire(c, row)]
    return []


def _fire(c: Ctx, row) -> dict:
    st = c.status
    if row.guard == "verify_dirty_rounds_left":
        st["round"] += 1
    if row.guard == "spec_changed":
        st["generation"] = c.policy.generation
    st["transitions"] += 1
    rec = {"policy": c.policy.key, "seq": st["transitions"], "from": row.source, "to": row.target,
           "guard": row.guard, "at": c.now, "generation": c.policy.generation,
           "gates": {k: g["verdict"] for k, g in c.gates.items()}}
    st["phase"] = row.target
    st["entered_at"] = c.now
    st["last_transition_time"] = c.now
    st["history"] = (st["history"] + [{k: rec[k] for k in ("seq", "from", "to", "guard", "at")}])[-50:]
    return rec


def decider_of(migration_phase: str) -> str:
    """``old`` or ``new``: the ring that decides first-write in a migration phase."""
    return "old" if migration_phase in OLD_DECIDES else "new"
