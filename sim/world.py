"""The simulated world: one SimPy environment, seeded streams, a network,
regions running the real pipeline, agents running the real client, and a fault
injector. Phases: workload with faults for ``duration_s`` -> every fault healed
-> ``quiescence_s`` for retries and recovery -> final state recorded for the
checkers.
"""

from __future__ import annotations

import contextlib
import gc
from hashlib import sha256
from heapq import heappop

import simpy
from simpy.core import StopSimulation
from simpy.events import URGENT, Event, EventPriority

from flk.impl.verifier.core import VerifyBatch
from flk.impl.verifier.pipeline import Verifier
from flk.impl.verifier.tenants import Tenant, TenantKey, TenantRegistry

from . import faults, operator, schedule, topology
from .history import History
from .net import LinkSpec, Network
from .region import SIM_EPOCH, Region, body_sha
from .replication import ObjectFabric, RegionReplication
from .rng import Streams
from .routing import Router
from .stores import KeyOrder, SimMemoryStore
from .workload import Agent, PcsFactory, make_templates, tenant_key

BASE_KEY = b"flk-sim-tenant-base"  # simulated tenants' key material is derived from this (not a secret)


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector paused meanwhile (and restored after; nested pauses are
    one): a run makes almost no reference cycles (about a thousand unreachable objects per
    20,000 submissions), while at a million keys the collector's generational passes would keep
    walking the whole live state -- and the checks, metrics and plots after a run walk every
    event while the collector, enabled again, walks the run's whole state (a fifth of a 90-second
    ``crr-normal`` study's checking and saving). Cycles made meanwhile wait for the next
    collection after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class World:
    def __init__(self, scenario, seed: int, keep_history: bool = True, region_cls: type = Region,
                 verifier_cls: type = Verifier, fabric_cls: type = ObjectFabric,
                 max_submissions: int | None = None, core_cls: type = VerifyBatch) -> None:
        """``region_cls`` / ``verifier_cls`` / ``fabric_cls`` / ``core_cls`` (the verification
        core's batch class) exist for planted-bug tests (tests/quality/);
        ``max_submissions`` stops the agents after that many new submissions (``flk bench sim``
        simulates an exact count)."""
        self.scenario = scenario
        self.verifier_cls = verifier_cls
        self.core_cls = core_cls
        self.seed = seed
        data = scenario.data
        self.duration = float(data["scenario"]["duration_s"])
        self.quiescence = float(data["scenario"]["quiescence_s"])
        self.env = simpy.Environment()
        self.streams = Streams(seed)
        self.history = History(keep=keep_history)
        net = data["network"]
        self.graph = topology.build(data)
        self.net = Network(self.env, self.history, self.streams.get, graph=self.graph,
                           default=LinkSpec(latency_ms=net["latency_ms"], loss=net["loss"],
                                            duplicate=net["duplicate"], reorder=net["reorder"]))
        self.region_ids = [r["id"] for r in data["regions"]]
        self.rotations = sorted((f for f in data["faults"] if f["kind"] == "rotate_key"), key=lambda f: f["at_s"])
        self.tenants = self._tenant_registry()
        self.factory = PcsFactory(make_templates(seed), BASE_KEY)
        self.regions = {r["id"]: region_cls(self, r) for r in data["regions"]}
        self.conflicts_seen: set[tuple[str, str]] = set()
        self.rewind_snapshots: dict[str, dict[tuple[str, str], str]] = {}  # region -> store at a reader rewind
        self.repl: dict[str, RegionReplication] = {}
        if data["replication"]["enabled"]:
            self.objects = fabric_cls(self)
            self.repl = {rid: RegionReplication(self, self.regions[rid], self.objects) for rid in self.region_ids}
        self.router = Router(self) if data["routing"]["enabled"] else None
        self.agents = [Agent(self, i) for i in range(int(data["workload"]["agents"]))]
        self._req = 0
        self.max_submissions = max_submissions
        self.submitted = 0  # new submissions the agents started
        # the load generator's cap on open submissions (workload.max_in_flight, as the cluster
        # runner's driver): an arrival at the cap is not sent (a ``client.skip`` event)
        self.max_in_flight = int(data["workload"]["max_in_flight"])
        self.open_submissions = 0
        self.fault_log: list[dict] = []
        self.clock_steps: dict[str, list[tuple[float, float]]] = {rid: [(0.0, 0.0)] for rid in self.region_ids}

    def set_clock_offset(self, region_id: str, offset: float) -> None:
        """Set a region's wall-clock offset (a clock_skew fault, the heal) and remember it, so a
        stamp that region wrote can be mapped back to simulated time (:meth:`true_time`)."""
        self.regions[region_id].clock_offset = float(offset)
        steps = self.clock_steps[region_id]
        if steps[-1][1] != float(offset):
            steps.append((self.env.now, float(offset)))

    def true_time(self, region_id: str, stamp: float) -> float:
        """The simulated time (env seconds) at which ``region_id``'s wall clock read ``stamp``;
        where a step back made it read ``stamp`` twice, the earlier time (ages measured from it
        are the longer, never hidden). Lags and ages are measured in simulated time so a skewed
        clock cannot make a record look younger (or older) than it is."""
        local = stamp - SIM_EPOCH
        steps = self.clock_steps[region_id]
        for i, (start, offset) in enumerate(steps):
            end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
            if start <= local - offset < end or (i + 1 == len(steps) and local - offset >= start):
                return local - offset
        return local - steps[-1][1]

    def clock(self) -> float:
        """Simulated wall-clock seconds (what agents put into sent_at)."""
        return SIM_EPOCH + self.env._now

    def shared_outcome(self, tenant: str, pcs_id: str, outcome):
        """``outcome``, or the equal outcome its origin region's store already holds for the
        key (a replay recomputes byte-identical outcomes: one copy serves every region's store
        and reconciler -- immutable values, so only memory changes)."""
        home = self.regions.get(outcome.region)
        store = home.topology.store if home is not None else None
        if isinstance(store, SimMemoryStore):
            held = store.peek(tenant, pcs_id)
            if held is not None and held is not outcome and held == outcome:
                return held
        return outcome

    def next_request_id(self) -> int:
        self._req += 1
        return self._req

    def _tenant_registry(self) -> TenantRegistry:
        w = self.scenario.data["workload"]
        overlap = float(w.get("rotation_overlap_s", 5.0))
        tenants = []
        for i in range(int(w["tenants"])):
            tid = f"t{i}"
            times = [SIM_EPOCH + f["at_s"] for f in self.rotations if f.get("tenant", tid) == tid]
            keys = []
            for gen in range(len(times) + 1):
                nb = times[gen - 1] if gen > 0 else None
                na = times[gen] + overlap if gen < len(times) else None
                keys.append(TenantKey(f"{tid}-k{gen}", tenant_key(BASE_KEY, tid, gen), nb, na))
            tenants.append(Tenant(tid, "hmac", tuple(keys), rate_per_s=float(w.get("tenant_rate_per_s", 0.0)),
                                  burst=float(w.get("tenant_burst", 0.0)),
                                  daily_quota=int(w.get("tenant_daily_quota", 0))))
        return TenantRegistry(tenants)

    # -- faults --------------------------------------------------------------
    def rpo_at_loss(self, region_id: str) -> dict:
        """What a region acked but had not shipped when it is lost (the RPO of that loss)."""
        if region_id not in self.repl:
            return {}
        return self.repl[region_id].rpo()

    def apply_fault(self, spec: dict, start: bool):
        """Start (or heal) one fault from its scenario table; see :mod:`flk.sim.faults`."""
        yield from faults.create(spec).apply(self, start)

    def _migrate(self, region, step_s: float, batch: int, prune: bool = True):
        """Run a live 3 -> 4 shard migration's steps in simulated time. The migration ends at its
        cleanup (or where it stops short of it); the prune after it is the region's housekeeping
        and goes on after the fault's end."""
        ended = False
        for phase, detail in region.topology.migrate_steps(region.now, batch, prune=prune):
            if phase not in ("copy", "verify"):
                self.history.record(self.env.now, "migrate.phase", region=region.id, phase=phase, **detail)
            if phase == "cleaned":
                self._migrate_end(region)
                ended = True
            yield self.env.timeout({"settle": 1.0, "retry": 0.5}.get(phase, step_s))
        if not ended:
            self._migrate_end(region)

    def _migrate_end(self, region) -> None:
        st = region.topology.migration
        self.history.record(self.env.now, "fault.end", kind="migrate", target=region.id,
                            copied=st["copy"]["copied"], conflicts=st["copy"]["conflicts"],
                            missing=st["verify"]["missing"], different=st["verify"]["different"])

    def _demote(self, region, every_s: float, batch: int):
        while True:
            yield self.env.timeout(every_s)
            if region.up:
                out = region.topology.store.demote_step(region.now(), batch)
                if out.get("demoted"):
                    self.history.record(self.env.now, "tier.demoted", region=region.id, n=out["demoted"])

    def _fault_proc(self, f: dict):
        fault = faults.create(f)
        yield self.env.timeout(float(f["at_s"]))
        yield from fault.apply(self, True)
        dur = f.get("duration_s")
        if dur is not None and not fault.one_shot:
            yield self.env.timeout(float(dur))
            yield from fault.apply(self, False)

    def _nemesis(self):
        """The seeded nemesis (:func:`flk.sim.faults.nemesis_steps`) under SimPy time."""
        for step in faults.nemesis_steps(self.scenario.data["nemesis"], self.streams.get("nemesis"), self.duration,
                                         self.region_ids):
            if step.__class__ is float:
                yield self.env.timeout(step)
                continue
            self.fault_log.append(step)
            self.env.process(self._fault_proc({**step, "at_s": 0.0}))

    def _heal_all(self):
        yield self.env.timeout(self.duration)
        self.history.record(self.env.now, "phase", name="heal")
        self.net.heal()
        for a in self.agents:
            if not a.up:
                self.history.record(self.env.now, "fault.end", kind="agent_crash", target=a.id)
                a.restart()
        if self.repl:
            self.objects.available = True
            for rep in self.repl.values():
                rep.view.available = True
                rep.view.corrupt_next_segment = False
                if rep.view.corrupted:
                    self.history.record(self.env.now, "fault.end", kind="bitflip_shipped", target=rep.region.id,
                                        repaired=rep.view.repair())
                rep.ship_stopped = False
                rep.shipper.paused = False
        for r in self.regions.values():
            for shard in r.topology.shards.values():
                shard.available = True
            if r.topology.cold is not None:
                r.topology.cold.available = True
            r.store.available = True
            r.store_hangs(False)
            r.store_extra_ms = 0.0
            r.disk_factor = 1.0
            self.set_clock_offset(r.id, 0.0)
            if r.paused:
                r.resume()
            if not r.up and not r.restarting and r.wal_corruptions == 0:
                self.history.record(self.env.now, "fault.end", kind="crash", target=r.id)
                yield from r.restart()
        self.history.record(self.env.now, "phase", name="quiescence")

    def export_metrics(self) -> None:
        """Every region's process counts what its ``/metrics`` shows from now on
        (:class:`flk.sim.exporter.ProcessMetrics`): called by whoever scrapes it (the alert
        scraper, a scenario's operators). A run nobody scrapes does not count: its history,
        and so its digest, is the same either way."""
        for region in self.regions.values():
            region.export()

    # -- run -----------------------------------------------------------------
    def run(self) -> History:
        """Run every phase and record the final state, the collector paused
        (:func:`collector_paused`)."""
        with collector_paused():
            return self._run()

    def _run(self) -> History:
        env = self.env
        for a in self.agents:
            a.start()
        for f in self.scenario.data["faults"]:
            self.fault_log.append(dict(f))
            env.process(self._fault_proc(f))
        if self.scenario.data["nemesis"]["enabled"]:
            env.process(self._nemesis())
        if self.scenario.data.get("schedule"):  # explicit operations (flk.sim.schedule)
            env.process(schedule.run(self))
        env.process(self._heal_all())
        for rep in self.repl.values():
            env.process(rep.run())
        if self.router is not None:
            for rid in self.region_ids:
                env.process(self.router.run(rid))
        if self.repl:
            for bucket in self.objects.buckets.values():
                env.process(self.objects.run(bucket))
        for r in self.regions.values():
            env.process(r.run_checkpoints())  # flk serve's running WAL checkpoints
            if r.topology.kind == "tiered":
                env.process(self._demote(r, float(r.cfg.get("demote_every_s", 0.5)), int(r.cfg.get("demote_batch", 200))))
        if self.repl:
            env.process(self._sample())
        operator.start(self)  # the scenario's [[policies]] (sim/operator.py)
        run_until(env, self.duration + self.quiescence)
        self.history.record(env.now, "phase", name="final")
        entry_fields = ("region", "tenant", "pcs_id", "digest", "status", "body_sha")
        order, seen = KeyOrder(), {}  # one sort per tenant's key set; a shared outcome hashed once
        for rid in self.region_ids:
            region = self.regions[rid]
            snap = self.rewind_snapshots.get(rid)
            store = region.topology.store
            if snap is None and isinstance(store, SimMemoryStore):
                # the same rows as below, made as they are read (scan_all's order and entries)
                self.history.record_many(env.now, "final.entry", entry_fields,
                                         store.final_rows(rid, region.now(), order, seen))
                continue
            final = region.final_entries()
            self.history.record_many(env.now, "final.entry", entry_fields,
                                     ((rid, t, p, o.payload_digest, o.status, sha256(o.body).hexdigest()[:16])
                                      for t, p, o in final))  # body_sha, inline
            if snap is not None:
                now_map = {(t, p): body_sha(o.body) for t, p, o in final}
                changed = sorted(k for k, v in snap.items() if now_map.get(k) != v)
                self.history.record(env.now, "crr.rewind_check", region=rid, checked=len(snap),
                                    changed=len(changed), examples=[list(k) for k in changed[:3]])
            del final  # one region's final entries alive at a time (the run's peak memory)
        for rid, rep in self.repl.items():
            self.history.record_many(env.now, "final.auth", ("region", "tenant", "pcs_id", "digest", "origin",
                                                             "conflict"),
                                     rep.auth.final_auth_rows(rid, order, seen))  # sorted by key
        seen.clear()
        return self.history

    def _sample(self):
        """Once a simulated second: replication lag, key-count divergence, conflicts seen."""
        while True:
            yield self.env.timeout(1.0)
            now = self.env.now
            counts = [self.regions[r].topology.observed_count(SIM_EPOCH + now) for r in self.region_ids]
            lags = {rid: round(rep.lag_s(), 6) for rid, rep in self.repl.items()}
            self.history.record(now, "crr.sample", lag_s=max(lags.values()), by_region=lags,
                                divergence=max(counts) - min(counts), conflicts=len(self.conflicts_seen))


def run_until(env: simpy.Environment, until: float) -> None:
    """``env.run(until=until)`` for a number ``until``, with SimPy's ``step`` inlined in one loop
    (no method call per event): the same stop event (scheduled as ``run`` schedules it, with the
    same event id and callback), the same events in the same order, the same handling of a
    ``StopSimulation`` (the stopping event re-queued with its remaining callbacks) and the same
    crash on a failed event nobody defused. tests/sim/test_run_until.py compares it with ``run``."""
    at = float(until)
    if at <= env._now:
        raise ValueError(f"until ({at}) must be greater than the current simulation time")
    stop = Event(env)
    stop._ok, stop._value = True, None
    env.schedule(stop, URGENT, at - env._now)
    stop.callbacks.append(StopSimulation.callback)
    queue = env._queue
    while True:
        try:
            env._now, _, _, event = heappop(queue)
        except IndexError:
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {stop}') from None
        callbacks, event.callbacks = event.callbacks, None
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[callbacks.index(callback) + 1:]
            env.schedule(event, EventPriority(-1))
            return
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc
