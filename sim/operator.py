"""The operator in simulated time: a scenario's ``[[policies]]`` reconciled by the real controller.

Why this module exists: the controller (:mod:`flk.impl.operator`) is sans-I/O;
this is its simulator driver, as ``flk operator run`` is its deployment
driver. It runs the very same :func:`flk.impl.operator.driver.step` (observe,
reconcile, save status, audit, act) every ``every_s`` simulated seconds
against a region whose dedup store is ``migrating``; the actions are carried
out by :class:`flk.impl.operator.migration.MigrationTarget` on the region's
rings; the status and the WORM audit log live on the controller's own
crashable simulated disk, and ``kill_at_s`` kills and restarts the controller
there (INV-OP-RESUME under simulation).

What the controller observes is what a deployed one could see over its own
inputs: the region's server-side answers since the last step (latency p95,
5xx share, duplicate-hit share -- the ``/metrics`` deltas of a real server)
and the migration state, and nothing while the network cuts the operator
(which sits with the clients) from the region or the region is down.

A scenario policy is a policy document (kind, name, spec) plus the driver's
keys :data:`DRIVER_FIELDS`. History events: ``operator.transition``,
``operator.action``, ``operator.restart``, ``operator.done``.
"""

from __future__ import annotations

import copy

from flk.impl.dedup.base import StoreUnavailable
from flk.impl.dedup.migrate import MigrationError
from flk.impl.governance.audit import AuditLog
from flk.impl.operator import driver, records, table
from flk.impl.operator.migration import MigrationTarget
from flk.impl.operator.policy import PolicyError, check_policy
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from .region import SIM_EPOCH
from .schema import Context, Field, ScenarioError, check_table

DRIVER_FIELDS = (
    Field("target", "str", None, "the region whose dedup store the policy drives (dedup = migrating)"),
    Field("at_s", "number", 0.0, "when the controller starts, s", minimum=0.0),
    Field("every_s", "number", 0.25, "reconcile interval, s", minimum=0.001),
    Field("kill_at_s", "list", [], "times the controller is killed (its disk crashes) and restarted, s"),
)
POLICY_KEYS = ("kind", "name", "spec")


def validate(data: dict, ctx: Context) -> None:
    """Check ``data["policies"]``: each a policy document (the operator's schema) plus the driver keys."""
    for i, item in enumerate(data.get("policies", [])):
        path = f"policies.{i}"
        check_table({k: v for k, v in item.items() if k not in POLICY_KEYS}, DRIVER_FIELDS, path, ctx)
        try:
            pol = check_policy({k: v for k, v in item.items() if k in POLICY_KEYS}, path=path)
        except PolicyError as exc:
            raise ScenarioError(exc.key, exc.reason) from None
        if pol.kind != "ShardMigration":
            raise ScenarioError(f"{path}.kind", f"the simulator drives ShardMigration policies, not {pol.kind}")
        target = item.get("target") or ctx.regions[0]
        if target not in ctx.regions:
            raise ScenarioError(f"{path}.target", f"unknown region {target!r} (known: {', '.join(ctx.regions)})")
        region = next(r for r in data["regions"] if r["id"] == target)
        n = int(region.get("shards", data["region_defaults"].get("shards", 3)))
        if region.get("dedup", data["region_defaults"].get("dedup")) != "migrating":
            raise ScenarioError(f"{path}.target", f"region {target!r} needs dedup = \"migrating\"")
        want_old, want_new = sorted(f"s{k}" for k in range(n)), sorted(f"s{k}" for k in range(n + 1))
        if sorted(pol.spec["old"]) != want_old or sorted(pol.spec["new"]) != want_new:
            raise ScenarioError(f"{path}.spec", f"the region's rings are old {want_old}, new {want_new}")
        for j, t in enumerate(item.get("kill_at_s", [])):
            if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
                raise ScenarioError(f"{path}.kill_at_s.{j}", "must be a number >= 0")


def start(world) -> None:
    """Start one controller process per declared policy."""
    for i, item in enumerate(world.scenario.data.get("policies", [])):
        world.env.process(SimOperator(world, item, i).run())


class SimOperator:
    def __init__(self, world, item: dict, index: int) -> None:
        self.world, self.item = world, item
        self.policy = check_policy({k: v for k, v in item.items() if k in POLICY_KEYS})
        self.region = world.regions[item.get("target") or world.region_ids[0]]
        topo = self.region.topology
        self.box: dict = {}
        self.target = MigrationTarget(self._load, self._save, lambda _st: (topo.old, topo.new),
                                      topo.store.set_phase)
        self.fs = CrashableMemoryFileSystem()
        self.statuses = records.StatusStore("/op/status", self.fs)
        self._open_log()
        self.error: str | None = None
        self.seen_served = 0
        self.kills = sorted(float(t) for t in item.get("kill_at_s", []))

    def _load(self):
        return copy.deepcopy(self.box.get("state"))

    def _save(self, st):
        self.box["state"] = copy.deepcopy(st)
        self.region.topology.migration = self.box["state"]

    def _open_log(self) -> None:
        self.log = AuditLog("/op/audit", self.fs)
        self.seen = records.audited_ids("/op/audit", self.fs)

    def reachable(self) -> bool:
        net, rid = self.world.net, self.region.id
        return self.region.up and not net.is_blocked("clients", rid) and not net.is_blocked(rid, "clients")

    def sample(self, now: float) -> dict | None:
        served = self.region.served
        fresh, self.seen_served = served[self.seen_served:], len(served)
        if not fresh:
            return None
        lat = sorted(x[0] for x in fresh)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000.0
        errors = sum(1 for x in fresh if x[1] >= 500)
        hits = sum(1 for x in fresh if x[2])
        return {"t": now, "latency_p95_ms": round(p95, 6), "error_rate": errors / len(fresh),
                "dedup_hit_ratio": hits / len(fresh), "n": len(fresh)}

    def observe(self, now: float) -> dict:
        if not self.reachable():
            return {"reachable": False}
        store = self.region.topology.store
        return {"reachable": True, "sample": self.sample(now), "migration": self.target.observe(),
                "servers": [store.phase]}

    def execute(self, action: dict, now: float) -> str | None:
        self.world.history.record(self.world.env.now, "operator.action", policy=self.policy.key, op=action["op"],
                                  to=action.get("to"), round=action.get("round"))
        if not self.reachable():
            return "unreachable"
        try:
            self.target.execute(action, now)
        except (MigrationError, StoreUnavailable) as exc:
            return str(exc)[:120]
        return None

    def audit(self, status: dict, now: float) -> None:
        for rec in records.flush_audit(status, self.log, now, self.seen):
            self.world.history.record(self.world.env.now, "operator.transition", policy=self.policy.key,
                                      step=rec["pcs_id"], transition=rec["outcome"])

    def run(self):
        env = self.world.env
        yield env.timeout(float(self.item.get("at_s", 0.0)))
        self.region.served = []  # the region's answers from now on: (latency s, status, replayed)
        every = float(self.item.get("every_s", 0.25))
        while True:
            if self.kills and env.now >= self.kills[0]:
                self.kills.pop(0)
                self.fs.crash()
                self._open_log()
                self.error = None
                self.world.history.record(env.now, "operator.restart", policy=self.policy.key)
            now = SIM_EPOCH + env.now
            res, self.error = driver.step(
                self.policy, lambda: self.statuses.load(self.policy.key),
                lambda st: self.statuses.save(self.policy.key, st), lambda st, n=now: self.audit(st, n),
                lambda n=now: self.observe(n), lambda a, n=now: self.execute(a, n), now, self.error)
            if table.phase(self.policy.kind, res.status["phase"]).terminal:
                st = self.box.get("state") or {}
                self.world.history.record(env.now, "operator.done", policy=self.policy.key,
                                          phase=res.status["phase"], migration=st.get("phase"),
                                          rounds=res.status["round"])
                return
            yield env.timeout(every)


def outcome(events: list[dict]) -> dict:
    """``{policy: final phase}`` of a run's history (None: never finished)."""
    out: dict = {}
    for e in events:
        if e["type"] == "operator.transition":
            out.setdefault(e["policy"], None)
        elif e["type"] == "operator.done":
            out[e["policy"]] = e["phase"]
    return out


def metrics(events: list[dict]) -> dict:
    """``operator_completed``, ``operator_rollbacks``, ``operator_done_s`` of a run."""
    rollbacks = sum(1 for e in events if e["type"] == "operator.transition" and e["transition"].endswith(
        "->RollingBack"))
    done = [e for e in events if e["type"] == "operator.done"]
    starts = [e["t_us"] for e in events if e["type"] == "operator.transition"]
    policies = {e["policy"] for e in events if e["type"] == "operator.transition"}
    finished = {e["policy"] for e in done}
    done_s = (max(e["t_us"] for e in done) - min(starts)) / 1e6 if done and starts and finished == policies else None
    return {"operator_completed": sum(1 for e in done if e["phase"] == "Completed"),
            "operator_rollbacks": rollbacks, "operator_done_s": done_s}


def checks(events: list[dict], scenario: dict, ev: dict) -> list:
    """INV-OP-RESUME (the audited transitions of each policy form one path through the table,
    each step once, across controller kills) and SOMETIMES-OPERATOR-DONE."""
    from .checkers import CheckResult

    by_policy: dict[str, list[dict]] = {}
    for e in ev["operator.transition"]:
        by_policy.setdefault(e["policy"], []).append(e)
    violations = []
    for key, trs in sorted(by_policy.items()):
        kind = key.split("/", 1)[0]
        cur = table.first_phase(kind)
        steps = [e["step"] for e in trs]
        if len(steps) != len(set(steps)):
            violations.append({"policy": key, "why": "a transition audited twice"})
        for e in trs:
            src, dst = e["transition"].split("->")
            if src != cur or not any(r.target == dst for r in table.rows_from(kind, src)):
                violations.append({"policy": key, "why": f"{src}->{dst} while in {cur}", "t_us": e["t_us"]})
            cur = dst
    done = ev["operator.done"]
    restarts = len(ev["operator.restart"])
    return [CheckResult("INV-OP-RESUME", "always", not violations, checked=len(ev["operator.transition"]),
                        violations=violations, note=f"{len(by_policy)} policies, {restarts} controller restarts"),
            CheckResult("SOMETIMES-OPERATOR-DONE", "sometimes", bool(done), checked=len(scenario["policies"]),
                        note=", ".join(f"{e['policy']}: {e['phase']}" for e in done) or "no policy finished")]
