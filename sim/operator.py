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

What the controller observes is what a deployed one sees: the region's
``/metrics`` as flk serve answers it (:class:`flk.sim.alerts.RegionSeries`),
two scrapes turned into a health sample by the deployed controller's own
:mod:`flk.impl.operator.observe` (latency p95 as a bucket bound of
``flk_http_latency_seconds``, 5xx share, duplicate-hit share, the replication
lag gauge), and the migration state; nothing while the network cuts the
operator (which sits with the clients) from the region or the region is down.

A ``CRRPolicy`` is driven the same way (:class:`SimCRR`): its ``crr.apply``
action sets every region's replication reader topology -- which peers' streams
it reads and, for ``selective``, which tenants of them (the real
:class:`flk.impl.replication.reading.Topology` filter) -- and a tenant that a
new generation selects again is backfilled (the reader re-reads that peer's
stream from index 0; replay is idempotent), so it converges. ``changes``
replaces the spec at run time (a new generation: Active -> Applying).

A scenario policy is a policy document (kind, name, spec) plus the driver's
keys :data:`DRIVER_FIELDS`. History events: ``operator.transition``,
``operator.action``, ``operator.restart``, ``operator.done``; for CRRPolicy also
``operator.spec_change``, ``operator.crr_apply`` (a region's new filter),
``operator.crr_replay`` (records a region replayed from a peer, per tenant) and
``operator.crr_final``.
"""

from __future__ import annotations

import copy

from flk.impl.dedup.base import StoreUnavailable
from flk.impl.dedup.migrate import MigrationError
from flk.impl.governance.audit import AuditLog
from flk.impl.operator import crr, driver, observe, records, table
from flk.impl.operator.migration import MigrationTarget
from flk.impl.operator.policy import PolicyError, check_policy
from flk.impl.replication.reading import Topology
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from .alerts import RegionSeries, exposition
from .region import SIM_EPOCH
from .schema import MAX_TIME, Context, Field, ScenarioError, check_table

DRIVER_FIELDS = (
    Field("target", "str", None, "the region whose dedup store the policy drives (dedup = migrating)"),
    Field("at_s", "number", 0.0, "when the controller starts, s", minimum=0.0, maximum=MAX_TIME),
    Field("every_s", "number", 0.25, "reconcile interval, s", minimum=0.001, maximum=MAX_TIME),
    Field("kill_at_s", "list", [], "times the controller is killed (its disk crashes) and restarted, s"),
    Field("changes", "list", [], "CRRPolicy: run-time spec changes, each {at_s, spec} (a new generation)"),
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
        for j, t in enumerate(item.get("kill_at_s", [])):
            if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
                raise ScenarioError(f"{path}.kill_at_s.{j}", "must be a number >= 0")
        if pol.kind == "CRRPolicy":
            _validate_crr(data, ctx, item, pol, path)
            continue
        if item.get("changes"):
            raise ScenarioError(f"{path}.changes", "only a CRRPolicy is changed at run time here")
        if pol.kind != "ShardMigration":
            raise ScenarioError(f"{path}.kind", f"the simulator drives ShardMigration and CRRPolicy, not {pol.kind}")
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


def _validate_crr(data: dict, ctx: Context, item: dict, pol, path: str) -> None:
    if not data["replication"]["enabled"]:
        raise ScenarioError(f"{path}.kind", "a CRRPolicy needs [replication] enabled = true")
    tenants = {f"t{i}" for i in range(int(data["workload"]["tenants"]))}
    specs = [(f"{path}.spec", pol.spec)]
    for j, ch in enumerate(item.get("changes", [])):
        cp = f"{path}.changes.{j}"
        if not isinstance(ch, dict) or set(ch) - {"at_s", "spec"} or "spec" not in ch:
            raise ScenarioError(cp, "a change is {at_s, spec}")
        t = ch.get("at_s")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
            raise ScenarioError(f"{cp}.at_s", "must be a number >= 0")
        try:
            specs.append((f"{cp}.spec", check_policy({"kind": pol.kind, "name": pol.name, "spec": ch["spec"]},
                                                     path=cp).spec))
        except PolicyError as exc:
            raise ScenarioError(exc.key, exc.reason) from None
    for sp, spec in specs:
        unknown = [r for r in spec["regions"] if r not in ctx.regions]
        if unknown:
            raise ScenarioError(f"{sp}.regions", f"unknown region {unknown[0]!r} (known: {', '.join(ctx.regions)})")
        bad = [t for t in spec["tenants"] if t not in tenants]
        if bad:
            raise ScenarioError(f"{sp}.tenants", f"unknown tenant {bad[0]!r} (the workload's: {', '.join(sorted(tenants))})")
        if float(spec["ship_interval_s"]) != float(data["replication"]["ship_interval_s"]):
            raise ScenarioError(f"{sp}.ship_interval_s", "the simulator ships every [replication] ship_interval_s "
                                f"({data['replication']['ship_interval_s']}); set the same value")


def start(world) -> None:
    """Start one controller process per declared policy."""
    for i, item in enumerate(world.scenario.data.get("policies", [])):
        cls = SimCRR if item["kind"] == "CRRPolicy" else SimOperator
        world.env.process(cls(world, item, i).run())


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
        self.series = RegionSeries(world)  # what /metrics shows (the deployed controller's only view)
        self.last_scrape: dict | None = None
        self.kills = sorted(float(t) for t in item.get("kill_at_s", []))

    def _load(self):
        return copy.deepcopy(self.box.get("state"))

    def _save(self, st):
        self.box["state"] = copy.deepcopy(st)
        self.region.topology.migration = self.box["state"]

    def _kill_if_due(self, now: float) -> None:
        """The controller killed at its next ``kill_at_s``: its disk loses what it did not sync,
        and it resumes from its persisted status and audit log."""
        if self.kills and now >= self.kills[0]:
            self.kills.pop(0)
            self.fs.crash()
            self._open_log()
            self.error = None
            self.last_scrape = None  # a new process: its first scrape gives no sample
            self.world.history.record(now, "operator.restart", policy=self.policy.key)

    def _open_log(self) -> None:
        self.log = AuditLog("/op/audit", self.fs)
        self.seen = records.audited_ids("/op/audit", self.fs)

    def reachable(self) -> bool:
        net, rid = self.world.net, self.region.id
        return self.region.up and not net.is_blocked("clients", rid) and not net.is_blocked(rid, "clients")

    def sample(self, rids: list[str], now: float) -> dict | None:
        """The health sample the deployed controller takes (``flk operator run``'s
        Deployment): the regions' ``/metrics`` as flk serve answers it (:class:`RegionSeries`),
        parsed, summed over the servers and compared with the last scrape
        (:mod:`flk.impl.operator.observe`); None at the first scrape."""
        merged = observe.merge([observe.parse(exposition(self.series.scrape(rid), rid)) for rid in rids])
        sample = observe.sample(self.last_scrape, merged, now) if self.last_scrape is not None else None
        self.last_scrape = merged
        return sample

    def observe(self, now: float) -> dict:
        if not self.reachable():
            return {"reachable": False}
        store = self.region.topology.store
        return {"reachable": True, "sample": self.sample([self.region.id], now), "migration": self.target.observe(),
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

    def _step(self, now: float):
        """One :func:`driver.step` of this controller: its status, audit log, observation and actions."""
        return driver.step(
            self.policy, lambda: self.statuses.load(self.policy.key),
            lambda st: self.statuses.save(self.policy.key, st), lambda st: self.audit(st, now),
            lambda: self.observe(now), lambda a: self.execute(a, now), now, self.error,
            records.last_seq(self.seen, self.policy.key))

    def run(self):
        env = self.world.env
        yield env.timeout(float(self.item.get("at_s", 0.0)))
        every = float(self.item.get("every_s", 0.25))
        while True:
            self._kill_if_due(env.now)
            now = SIM_EPOCH + env.now
            res, self.error = self._step(now)
            if table.phase(self.policy.kind, res.status["phase"]).terminal:
                st = self.box.get("state") or {}
                self.world.history.record(env.now, "operator.done", policy=self.policy.key,
                                          phase=res.status["phase"], migration=st.get("phase"),
                                          rounds=res.status["round"])
                return
            yield env.timeout(every)

def crr_topology(spec: dict, region_ids: list[str], me: str) -> Topology:
    """What region ``me`` reads under a CRRPolicy spec (:func:`flk.impl.operator.crr.peers_for`),
    its own stream always (its reconciler sees its outcomes)."""
    return Topology.selective(me, crr.peers_for(spec, region_ids, me), include_self=True)


class _CountingApplier:
    """The reader's replay applier, reporting what it replayed from peers (per tenant)."""

    def __init__(self, inner, sink) -> None:
        self.inner, self.sink = inner, sink

    def apply_isolating(self, recs, now, *args, **kw):
        n = self.inner.apply_isolating(recs, now, *args, **kw)
        self.sink(recs)
        return n

    def __getattr__(self, name):
        return getattr(self.inner, name)


class SimCRR(SimOperator):
    """A CRRPolicy reconciled by the real controller; ``crr.apply`` sets each region's reader
    topology. The applied generation lives with the region's replication (``rep.crr_generation``,
    ``rep.topology``: they survive a region restart), not in the controller: a killed controller
    observes it again."""

    def __init__(self, world, item: dict, index: int) -> None:
        self.world, self.item = world, item
        self.base = {k: v for k, v in item.items() if k in POLICY_KEYS}
        self.policy = check_policy(self.base)
        self.changes = sorted(((float(c["at_s"]), c["spec"]) for c in item.get("changes", [])),
                              key=lambda x: x[0])
        self.fs = CrashableMemoryFileSystem()
        self.statuses = records.StatusStore("/op/status", self.fs)
        self._open_log()
        self.error: str | None = None
        self.kills = sorted(float(t) for t in item.get("kill_at_s", []))
        self.series = RegionSeries(world)  # what /metrics shows (the deployed controller's only view)
        self.last_scrape: dict | None = None

    def _attach(self) -> None:
        for rid, rep in self.world.repl.items():
            if not isinstance(rep.reader.applier, _CountingApplier):
                rep.reader.applier = _CountingApplier(rep.reader.applier, lambda recs, r=rid: self._replayed(r, recs))

    def _replayed(self, rid: str, recs) -> None:
        counts: dict[tuple[str, str], int] = {}
        for rec in recs:
            if rec.region != rid:
                key = (rec.region, rec.tenant or "default")
                counts[key] = counts.get(key, 0) + 1
        rep = self.world.repl[rid]
        for (src, tenant), n in sorted(counts.items()):
            self.world.history.record(self.world.env.now, "operator.crr_replay", policy=self.policy.key, region=rid,
                                      src=src, tenant=tenant, records=n, generation=getattr(rep, "crr_generation", None))

    def reachable_region(self, rid: str) -> bool:
        net = self.world.net
        return self.world.regions[rid].up and not net.is_blocked("clients", rid) and not net.is_blocked(rid, "clients")

    def observe(self, now: float) -> dict:
        self._attach()
        # a region the controller cannot reach counts as not running the generation (hold)
        applied = {rid: getattr(rep, "crr_generation", None) if self.reachable_region(rid) else None
                   for rid, rep in self.world.repl.items()}
        seen = [rid for rid in self.world.region_ids if self.reachable_region(rid)]
        sample = self.sample(seen, now) if seen else None  # replication_lag_s: flk_crr_replication_lag_seconds
        return {"reachable": any(v is not None or self.reachable_region(r) for r, v in applied.items()),
                "sample": sample, "crr": {"applied": applied}}

    def execute(self, action: dict, now: float) -> str | None:
        self.world.history.record(self.world.env.now, "operator.action", policy=self.policy.key, op=action["op"],
                                  to=action.get("generation"), round=None)
        if action["op"] != "crr.apply":
            return f"unknown action {action['op']}"
        failed = []
        for rid in self.world.region_ids:
            rep = self.world.repl[rid]
            if not self.reachable_region(rid):
                failed.append(rid)
                continue
            if getattr(rep, "crr_generation", None) == action["generation"]:
                continue  # idempotent: this region runs the generation already
            new = crr_topology(action["spec"], self.world.region_ids, rid)
            backfill = crr.apply(rep.reader, new, rid)  # widened peers re-read from 0: reselected tenants converge
            rep.topology = new
            rep.crr_generation = action["generation"]
            self.world.history.record(self.world.env.now, "operator.crr_apply", policy=self.policy.key, region=rid,
                                      generation=action["generation"], filters=crr.filters(new.sources), backfill=backfill)
        return f"unreachable: {', '.join(failed)}" if failed else None

    def _spec_due(self, t: float) -> None:
        while self.changes and t >= self.changes[0][0]:
            _at, spec = self.changes.pop(0)
            self.policy = check_policy({**self.base, "spec": spec})
            self.world.history.record(self.world.env.now, "operator.spec_change", policy=self.policy.key,
                                      generation=self.policy.generation, mode=spec.get("mode", "full"),
                                      tenants=list(spec.get("tenants", [])))

    def run(self):
        env = self.world.env
        yield env.timeout(float(self.item.get("at_s", 0.0)))
        every = float(self.item.get("every_s", 0.25))
        end = self.world.duration + self.world.quiescence
        res = None
        while env.now + every < end:
            self._kill_if_due(env.now)
            self._spec_due(env.now)
            now = SIM_EPOCH + env.now
            res, self.error = self._step(now)
            yield env.timeout(every)
        self.world.history.record(
            env.now, "operator.crr_final", policy=self.policy.key, phase=res.status["phase"] if res else None,
            generation=self.policy.generation, applied=res.status["generation"] if res else None,
            filtered={rid: rep.reader.filtered_records for rid, rep in self.world.repl.items()})


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
    """``operator_completed``, ``operator_rollbacks``, ``operator_done_s`` of a run (ShardMigration
    policies); ``crr_filtered_records``, ``crr_outside_selection`` (CRRPolicy)."""
    rollbacks = sum(1 for e in events if e["type"] == "operator.transition" and e["transition"].endswith(
        "->RollingBack"))
    done = [e for e in events if e["type"] == "operator.done"]
    starts = [e["t_us"] for e in events if e["type"] == "operator.transition"]
    policies = {e["policy"] for e in events if e["type"] == "operator.transition"
                and e["policy"].startswith("ShardMigration/")}
    finished = {e["policy"] for e in done}
    done_s = (max(e["t_us"] for e in done) - min(starts)) / 1e6 if done and starts and finished == policies else None
    out = {"operator_completed": sum(1 for e in done if e["phase"] == "Completed"),
           "operator_rollbacks": rollbacks, "operator_done_s": done_s}
    finals = [e for e in events if e["type"] == "operator.crr_final"]
    if finals:
        out["crr_filtered_records"] = sum(sum(e["filtered"].values()) for e in finals)
        out["crr_outside_selection"] = sum(v["records"] for v in outside_selection(events))
    return out


def outside_selection(events: list[dict]) -> list[dict]:
    """INV-CRR-SELECTIVE's violations: peer records a region replayed while the CRRPolicy
    filter it had applied (the last ``operator.crr_apply`` before) excluded their tenant."""
    applied: dict[str, dict] = {}
    out = []
    for e in events:
        if e["type"] == "operator.crr_apply":
            applied[e["region"]] = e["filters"]
        elif e["type"] == "operator.crr_replay" and e["region"] in applied:
            allowed = applied[e["region"]].get(e["src"], [])
            if allowed is not None and e["tenant"] not in allowed:
                out.append({"region": e["region"], "src": e["src"], "tenant": e["tenant"], "records": e["records"],
                            "t_us": e["t_us"]})
    return out


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
    crr_ok = [e for e in ev.get("operator.crr_final", []) if e["phase"] == "Active" and e["applied"] == e["generation"]]
    notes = [f"{e['policy']}: {e['phase']}" for e in done] + [f"{e['policy']}: Active" for e in crr_ok]
    out = [CheckResult("INV-OP-RESUME", "always", not violations, checked=len(ev["operator.transition"]),
                       violations=violations, note=f"{len(by_policy)} policies, {restarts} controller restarts"),
           CheckResult("SOMETIMES-OPERATOR-DONE", "sometimes", bool(done or crr_ok), checked=len(scenario["policies"]),
                       note=", ".join(notes) or "no policy finished")]
    if any(p.get("kind") == "CRRPolicy" for p in scenario["policies"]):
        bad = outside_selection(events)
        replays = ev.get("operator.crr_replay", [])
        excluding = [e for e in ev.get("operator.crr_apply", []) if any(f is not None for f in e["filters"].values())]
        out.append(CheckResult(
            "INV-CRR-SELECTIVE", "always", not bad, checked=sum(e["records"] for e in replays), violations=bad[:20],
            note=(f"{len(excluding)} selective of {len(ev.get('operator.crr_apply', []))} filter applications, "
                  f"{sum(e['records'] for e in replays)} peer records replayed")
            if excluding else "not exercised: no applied selection excluded anything"))
    return out
