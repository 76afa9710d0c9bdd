"""Replay a model counterexample on the implementation: model bug, implementation bug, or both.

Why this module exists: a counterexample of ``flk check model`` is a sequence of
the model's actions. This driver carries the same sequence out on real
implementation regions -- the verification core
(:class:`flk.impl.verifier.core.VerifyBatch`, the only production decision path,
its steps called one by one as the server's batch driver calls them), the inbox WAL (:class:`SegmentedLog` on the
crashable disk :class:`flk.impl.testing.crashfs.CrashableMemoryFileSystem`),
a dedup store, the shipper, one reader + replay applier per peer
(:mod:`flk.impl.replication.shipping`, ``reading``, ``applying``) and the reconciler -- sharing one object
store, and checks after every step what the implementation's observable state
says about the same invariants. It only *calls* the implementation's public
classes; it lives in ``impl/lab`` because ``model`` may import nothing of flk.

Action mapping (model -> implementation):

* ``submit r key d kind``: a PCS of that tenant and pcs_id, payload variant
  ``d``, signed with the tenant's current key (good), a key nobody has
  (forged) or another tenant's key (other), sent with ``X-Tenant-Id`` of its
  tenant; a one-request core batch is admitted (step 1) and its record
  appended to the WAL *without* fsync (step 2 then says where); the client waits.
* ``sync r``: ``SegmentedLog.sync()``. ``process r``: every waiting batch
  whose record is durable runs steps 3-8 (``verify``, ONE ``get_many``,
  ``found``, ONE ``put_many_if_absent``, ``recorded``) and is answered, in WAL
  order; its home answers go to the WAL for the segment's manifest.
* ``ship r``: the shipper seals (which fsyncs) and uploads sealed segments.
  ``replay dst<-src``: dst's reader of src's stream polls and applies.
* ``crash r``: power cut of the disk (unsynced bytes lost), the WAL, shipper
  and readers reopen from durable state, waiting clients are lost; the dedup
  store and the reconciler are separate services and keep their state (the
  model's durable store). ``restart r``: the server's start-up replay of the
  whole inbox WAL through the core (``VerifyBatch.from_records``, one batch per
  run of records received at one time, as the server and the simulator do).
* ``partition`` / ``heal``: the region's shipper and readers are not called
  while partitioned. ``rotate t``: a new key for the tenant in every region,
  old keys stay valid.

Invariants checked on the implementation after every step: INV-FWW (a stored
outcome never changes), INV-NO-ACKED-LOSS (every 200/202 answer's payload is
stored for its key), INV-TENANT-ISOLATION and INV-VERIFY-BEFORE-DEDUP (every
stored outcome is the payload of a submission of that tenant with a good
signature), INV-WAL-FIRST (nothing answered or shipped beyond the durable WAL
index); at the end INV-CONVERGENCE after a heal-and-quiesce phase (every
region's reconciler holds the same authoritative map, the earliest stored
outcome per key), and every check once more after it.

The same steps run on the simulator (:func:`simulate_counterexample`) as a
scenario with an explicit schedule (:func:`schedule_scenario`: ``[[schedule]]``
submit / ship / read and ``[[faults]]`` at explicit times, checked by the one
scenario schema), judged by the in-sim checkers, the black-box history checker
and the model's trace check (:mod:`flk.sim.tracecheck`). Implementation bugs
are planted by name (:data:`IMPL_PLANTS`) through the same seams in both
drivers where the simulator has one. Each verdict is against the reference
model (no planted bug) on the same steps: *model bug*, *implementation bug* or
*both*.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from ..agent import factory
from ..core.backoff import Backoff
from ..dedup import iter_entries, open_store
from ..replication.applying import ReplayApplier
from ..replication.reading import Reader, Topology
from ..replication.reconcile import Reconciler
from ..replication.shipping import Shipper
from ..replication.stream import stream_name
from ..storage.inbox import InboxRecord, decode_inbox_record, encode_inbox_record
from ..storage.objectstore import MemoryObjectStore
from ..storage.wal import SegmentedLog
from ..testing.crashfs import CrashableMemoryFileSystem
from ..verifier import pipeline as _pipeline
from ..verifier.core import VerifyBatch, same_time_runs
from ..verifier.pipeline import (
    Request,
    Response,
    Verifier,
    payload_digest,
)
from ..verifier.tenants import from_mapping

T0 = 1_700_000_000.0
COH = (0.73, 0.74, 0.75, 0.76, 0.77, 0.78, 0.79, 0.80, 0.81)


class _TrustingVerifier(Verifier):
    """Planted: a signature that does not verify is taken as verified (the tenant named by the record)."""

    def authenticate(self, doc, tenant, now):
        who = super().authenticate(doc, tenant, now)
        if isinstance(who, Response) and who.status == 401 and tenant is not None:
            return _pipeline._Authenticated(tenant.tenant_id, factory.profile_of(doc), payload_digest(doc))
        return who


def _trusting(v: Verifier) -> Verifier:
    return _TrustingVerifier(v.tenants, v.policy, v.region, v.limits, v.hooks, v.limiter, v.reject_status)


class _ReplaySkipsVerifyApplier(ReplayApplier):
    """Planted implementation bug: records replayed from a peer are not signature-checked."""

    def _verifier(self, region: str) -> Verifier:
        return _trusting(super()._verifier(region))


class RestartReplayTrusts(VerifyBatch):
    """Planted implementation bug in the verification core: a replay batch (the start-up
    replay of the inbox WAL) takes a bad signature of a known tenant as verified, so a
    restart stores what the live path answered 401. The simulator's checkers judge only
    live dedup calls for INV-VERIFY-BEFORE-DEDUP; the model's trace check sees it."""

    def __init__(self, verifier: Verifier, now: float, **kwargs) -> None:
        super().__init__(_trusting(verifier) if kwargs.get("replay") else verifier, now, **kwargs)


@dataclass(frozen=True)
class ImplPlant:
    """A named implementation bug: how :class:`ImplWorld` and the simulator's ``World`` plant it
    (``sim``: ``World`` keyword arguments; None: the simulator has no seam for it)."""

    doc: str
    verifier_cls: type = Verifier
    core_cls: type = VerifyBatch
    applier_cls: type = ReplayApplier
    sim: dict | None = None


IMPL_PLANTS = {
    "replay-skips-verify": ImplPlant("the replay applier trusts a peer's records without verifying their signature",
                                     applier_cls=_ReplaySkipsVerifyApplier),
    "verify-trusts-tenant": ImplPlant("step 4 of the core takes a known tenant's bad signature as verified",
                                      verifier_cls=_TrustingVerifier, sim={"verifier_cls": _TrustingVerifier}),
    "restart-replay-trusts": ImplPlant("the core's start-up WAL replay takes a known tenant's bad signature as verified",
                                       core_cls=RestartReplayTrusts, sim={"core_cls": RestartReplayTrusts}),
}
IMPL_PLANTED = {name: p.doc for name, p in IMPL_PLANTS.items()}


class _Region:
    def __init__(self, world: ImplWorld, name: str) -> None:
        self.w, self.name = world, name
        self.fs = CrashableMemoryFileSystem()
        self.store = open_store("memory")
        self.reconciler = Reconciler(name)
        self.up = True
        self.partitioned = False
        self.waiting: list[tuple[int, Any, int]] = []  # (wal index, generator, model sub index)
        self.answers: dict[int, int] = {}
        self.first: dict[tuple[str, str], tuple] = {}
        self._open()

    def verifier(self) -> Verifier:
        return self.w.plant.verifier_cls(self.w.tenants, region=self.name)

    def _open(self) -> None:
        self.log = SegmentedLog(f"/{self.name}/wal", fs=self.fs)
        self.shipper = Shipper(self.log, self.w.objects, stream_name(self.name), f"/{self.name}/ship.json",
                               fs=self.fs, interval_s=1.0, backoff=Backoff(0.5, 8.0))
        self.open_readers()

    def open_readers(self) -> None:
        cls = self.w.plant.applier_cls
        self.readers = {}
        for src in self.w.names:  # one reader per stream (its own too: its reconciler hears it)
            applier = cls(self.verifier(), self.store, self.reconciler.observe)
            self.readers[src] = Reader(self.w.objects, Topology.selective(self.name, {src: None}, include_self=False),
                                       applier, f"/{self.name}/read-{src}.json", fs=self.fs, interval_s=1.0,
                                       backoff=Backoff(0.5, 8.0))

    def local(self) -> dict:
        return {(t, p): o for t, p, o in iter_entries(self.store, T0 + 10**6, 500)}


class ImplWorld:
    """Implementation regions for one model scope; :meth:`do` carries out one model action."""

    def __init__(self, scope, impl_plant: str | None = None) -> None:
        from ...model.explore import REGION_NAMES, TENANT_NAMES

        if impl_plant is not None and impl_plant not in IMPL_PLANTED:
            raise ValueError(f"unknown implementation bug {impl_plant!r}; known: {', '.join(IMPL_PLANTED)}")
        self.scope, self.impl_plant = scope, impl_plant
        self.plant = IMPL_PLANTS[impl_plant] if impl_plant is not None else ImplPlant("")
        self.core_cls = self.plant.core_cls
        self.names = list(REGION_NAMES[: scope.regions])
        self.tenant_names = list(TENANT_NAMES[: scope.tenants])
        self.gens = [0] * scope.tenants
        self.tenants = self._registry()
        self.objects = MemoryObjectStore()
        self.regions = {n: _Region(self, n) for n in self.names}
        self.subs: list[dict] = []
        self.now = T0
        self.violations: dict[str, str] = {}

    # -- keys and documents ---------------------------------------------------
    @staticmethod
    def _secret(tenant: str, gen: int) -> bytes:
        return hashlib.sha256(f"flk-model-replay/{tenant}/k{gen}".encode()).hexdigest()[:32].encode()

    def _registry(self):
        return from_mapping({"tenants": {
            t: {"alg": "hmac", "keys": [{"id": f"k{g}", "secret": self._secret(t, g).decode()}
                                        for g in range(self.gens[i] + 1)]}
            for i, t in enumerate(self.tenant_names)}})

    def _doc(self, key: int, d: int, kind: int) -> tuple[str, dict]:
        t, p = divmod(key, self.scope.keys)
        tenant = self.tenant_names[t]
        root = hashlib.sha256(f"model/{tenant}/p{p + 1}".encode()).hexdigest()
        doc = factory.synthetic_pcs(root, "shard-001", 1, coh=COH[d], r=0.87)
        if kind == 0:
            secret = self._secret(tenant, self.gens[t])
        elif kind == 1:
            secret = b"forged-secret-nobody-holds"
        else:
            secret = self._secret(self.tenant_names[(t + 1) % len(self.tenant_names)], 0) \
                if len(self.tenant_names) > 1 else b"key-of-a-tenant-not-configured"
        return tenant, factory.sign(doc, secret)

    # -- driving the verification core (flk.impl.verifier.core: the production decision path) --
    def _steps_3_to_8(self, r: _Region, batch: VerifyBatch) -> None:
        """Steps 3-8 of ``batch`` on the region's store: ONE ``get_many``, ONE
        ``put_many_if_absent`` (as :func:`flk.impl.verifier.core.run_requests` does);
        the batch's home answers go to the WAL for its segment's manifest."""
        keys = batch.verify()
        if keys:
            batch.found(r.store.get_many(keys, batch.now))
            writes = batch.writes()
            if writes:
                batch.recorded(r.store.put_many_if_absent(writes, batch.now, batch.v.limits.ttl_s))
        r.log.note_answers(batch.notes())

    def _restart(self, r: _Region) -> None:
        """The server's start-up replay of the whole inbox WAL through the core: one
        replay batch per run of records received at one time (``now = received_at``)."""
        r.up = True
        entries = [(i, decode_inbox_record(p)) for i, p in r.log.records(0)]
        records = [rec for _, rec in entries]
        for start, end in same_time_runs(records):
            batch = self.core_cls.from_records(r.verifier(), records[start:end], records[start].received_at,
                                               indexes=[i for i, _ in entries[start:end]])
            self._steps_3_to_8(r, batch)

    def do(self, kind: str, args: tuple) -> None:
        self.now += 1.0
        now = self.now
        if kind == "rotate":
            self.gens[args[0]] += 1
            self.tenants = self._registry()
            for r in self.regions.values():  # readers reopen from their durable watermarks with the new keys
                r.open_readers()
            return
        if kind == "replay":
            dst, src = self.regions[self.names[args[0]]], self.names[args[1]]
            if dst.up and not dst.partitioned:
                dst.readers[src].poll(now)
            return
        r = self.regions[self.names[args[0]]]
        if kind == "submit":
            _r, key, d, k = args
            tenant, doc = self._doc(key, d, k)
            i = len(self.subs)
            self.subs.append({"region": r.name, "tenant": tenant, "pcs_id": doc["pcs_id"],
                              "digest": payload_digest(doc), "good": k == 0})
            batch = self.core_cls(r.verifier(), now)
            appends = batch.admit([Request(json.dumps(doc).encode(), tenant)])
            if appends:  # step 2 without the fsync: the model's ``sync`` makes it durable
                a = appends[0]
                idx = r.log.append(encode_inbox_record(InboxRecord(a.tenant, a.received_at, a.region, a.body)))
                batch.wal_written(idx)
                r.waiting.append((idx, batch, i))
            else:  # refused before the WAL (not expected for these requests)
                r.answers[i] = batch.responses[0].status
        elif kind == "sync":
            r.log.sync()
        elif kind == "process":
            still = []
            for idx, batch, i in r.waiting:
                if idx < r.log.durable_index:
                    self._steps_3_to_8(r, batch)
                    r.answers[i] = batch.responses[0].status
                else:
                    still.append((idx, batch, i))
            r.waiting = still
        elif kind == "ship":
            if r.up and not r.partitioned:
                r.shipper.log.seal()
                r.shipper.ship_sealed(now)
        elif kind == "crash":
            r.fs.crash()
            r.up = False
            r.waiting = []
            r._open()
        elif kind == "restart":
            self._restart(r)
        elif kind == "partition":
            r.partitioned = True
        elif kind == "heal":
            r.partitioned = False
        else:  # pragma: no cover
            raise ValueError(kind)

    # -- invariants on the implementation's observable state ------------------------
    def check(self, step: int) -> None:
        good = {(s["tenant"], s["pcs_id"], s["digest"]) for s in self.subs if s["good"]}

        def bad(inv: str, why: str) -> None:
            self.violations.setdefault(inv, f"after step {step}: {why}")

        for r in self.regions.values():
            local = r.local()
            for k, o in local.items():
                first = r.first.setdefault(k, (o.payload_digest, o.status, o.first_seen, o.region))
                if first != (o.payload_digest, o.status, o.first_seen, o.region):
                    bad("INV-FWW", f"{r.name} changed the stored outcome of {k[0]}/{k[1][:8]}")
                if (k[0], k[1], o.payload_digest) not in good:
                    why = f"{r.name} stored {k[0]}/{k[1][:8]} with a payload no good signature covers"
                    bad("INV-VERIFY-BEFORE-DEDUP", why)
                    bad("INV-TENANT-ISOLATION", why)
            for i, status in r.answers.items():
                s = self.subs[i]
                if status in (200, 202):
                    o = local.get((s["tenant"], s["pcs_id"]))
                    if o is None or o.payload_digest != s["digest"]:
                        bad("INV-NO-ACKED-LOSS", f"{r.name} acknowledged request #{i + 1} and lost its outcome")
            if r.shipper.watermark > r.log.durable_index:
                bad("INV-WAL-FIRST", f"{r.name} shipped records beyond its durable WAL")

    def quiesce_and_check_convergence(self) -> None:
        for r in self.regions.values():
            r.partitioned = False
            if not r.up:
                self._restart(r)
            self.do("sync", (self.names.index(r.name),))
            self.do("process", (self.names.index(r.name),))
        for _ in range(2):
            for i in range(len(self.names)):
                self.do("ship", (i,))
            for d in range(len(self.names)):
                for s in range(len(self.names)):
                    self.do("replay", (d, s))
        maps = [{k: (o.payload_digest, o.first_seen, o.region) for k, o in r.reconciler.authoritative_map().items()}
                for r in self.regions.values()]
        stored: dict = {}
        for r in self.regions.values():
            for k, o in r.local().items():
                prev = stored.get(k)
                cand = (o.first_seen, o.region, o.payload_digest)
                stored[k] = cand if prev is None or cand < prev else prev
        want = {k: (v[2], v[0], v[1]) for k, v in stored.items()}
        if any(m != maps[0] for m in maps) or maps[0] != want:
            self.violations.setdefault("INV-CONVERGENCE", "after heal and quiescence the regions' authoritative "
                                       "outcomes differ or are not the earliest stored outcome")


def _reference_model(scope, steps: list[str]) -> tuple[set[str], str | None]:
    """Invariants the reference model (no planted bug) violates on the same steps, and the
    first step it cannot take (None when it takes them all)."""
    from ...model.explore import Machine

    m = Machine(replace(scope, plant=None))
    by_label = {a.label(m): i for i, a in enumerate(m.actions)}
    st = m.initial()
    bad: set[str] = set()
    for n, label in enumerate(steps, 1):
        a = by_label[label]
        if not m.enabled(a, st):
            return bad, f"step {n} ({label}) is not enabled in the reference model"
        st = m.apply(a, st)
        bad |= {name for name, pred in m.safety().items() if not pred(st)}
    return bad, None


def _verdict(model_v: set, impl_v: set, ref_v: set, who: str = "implementation") -> str:
    """Who shows a violation: the model under check, ``who`` (the lockstep implementation or
    the simulator), both -- judged against the reference model on the same steps."""
    shown = ", ".join(sorted(impl_v))
    if impl_v and not ref_v:
        return (f"implementation bug: the {who} violates {shown} on a trace the reference model keeps"
                + (" (the model under check shows it too)" if impl_v & model_v else ""))
    if model_v & impl_v:
        return f"both: the {who} shows the same violation"
    if model_v and not impl_v:
        return f"model bug: the {who} keeps every checked invariant on this trace"
    if impl_v:
        return f"both, different invariants ({who}: {shown})"
    return "neither"


def replay_counterexample(scope, cex: dict, impl_plant: str | None = None, simulator: bool = True) -> dict:
    """Carry out ``cex``'s steps on the implementation (lockstep, :class:`ImplWorld`) and, with
    ``simulator``, on the simulator as a scenario with an explicit schedule
    (:func:`simulate_counterexample`); each verdict says who shows a violation: the model under
    check, the implementation, both (against the reference model on the same steps)."""
    from ...model.explore import Machine

    m = Machine(scope)
    by_label = {a.label(m): a for a in m.actions}
    world = ImplWorld(scope, impl_plant)
    labels = [step["action"] for step in cex["steps"]]
    for n, label in enumerate(labels, 1):
        act = by_label[label]
        world.do(act.kind, act.args)
        world.check(n)
    world.quiesce_and_check_convergence()
    world.check("heal and quiescence")  # type: ignore[arg-type]
    model_v = {cex["invariant"]} if cex.get("kind") == "safety" else set()
    ref_v, ref_stuck = _reference_model(scope, labels)
    impl_v = set(world.violations)
    out = {"verdict": _verdict(model_v, impl_v, ref_v), "model_violated": sorted(model_v),
           "impl_violated": sorted(impl_v), "reference_model_violated": sorted(ref_v),
           "reference_model_note": ref_stuck, "impl_details": world.violations, "steps": len(labels),
           "impl_plant": impl_plant,
           "answers": {r.name: {f"#{i + 1}": s for i, s in sorted(r.answers.items())}
                       for r in world.regions.values()}}
    if simulator:
        sim = simulate_counterexample(scope, labels, impl_plant)
        if sim.get("violated") is not None:
            sim["verdict"] = _verdict(model_v, set(sim["violated"]), ref_v, "simulator")
        out["simulator"] = sim
    return out


SLOT_S = 0.25  # simulated seconds per model step (a request is answered within ~20 ms)
LOST_S = 0.003  # after its submit: the record is appended, not yet fsynced (fsync_ms = 5)
UNANSWERED_S = 0.008  # after its submit: durable, not yet answered (two 5 ms store calls to go)


def schedule_scenario(scope, labels: list[str]) -> tuple[dict, list[str]]:
    """The model steps ``labels`` as a simulator scenario with an explicit schedule (raw
    scenario data, not yet merged with the defaults) and the notes on the mapping.

    One step per :data:`SLOT_S`. ``submit`` -> a ``[[schedule]]`` submit; ``ship`` -> ship;
    ``replay d<-s`` -> d's reader polls (every stream); ``crash`` / ``restart`` / ``partition``
    (until its ``heal``) / ``rotate`` -> ``[[faults]]`` at the step's time. ``sync`` and
    ``process`` have no operation: a simulated region fsyncs a batch and answers it by itself
    within the step; a ``crash`` that the model takes before them is placed
    :data:`LOST_S` / :data:`UNANSWERED_S` after the submit instead. Latencies are constants,
    the shipper and readers run by themselves only after the schedule (their interval is the
    schedule's length), so the steps happen in the model's order."""
    from ...model.explore import KINDS, REGION_NAMES, Machine

    m = Machine(replace(scope, plant=None))
    by_label = {a.label(m): a for a in m.actions}
    names = list(REGION_NAMES[: scope.regions])
    schedule: list[dict] = []
    faults: list[dict] = []
    notes: list[str] = []
    pending: dict[int, tuple[str, float]] = {}
    parts: dict[int, float] = {}
    for n, label in enumerate(labels, 1):
        act, t = by_label[label], round(n * SLOT_S, 6)
        k, a = act.kind, act.args
        if k == "submit":
            r, key, d, kind = a
            t_i, p = divmod(key, scope.keys)
            schedule.append({"at_s": t, "op": "submit", "region": names[r], "tenant": f"t{t_i}", "pcs": p + 1,
                             "payload": d + 1, "signature": KINDS[kind]})
            pending[r] = ("appended", t)
        elif k == "sync":
            if r_p := pending.get(a[0]):
                pending[a[0]] = ("durable", r_p[1])
        elif k == "process":
            pending.pop(a[0], None)
        elif k == "crash":
            state = pending.pop(a[0], None)
            at = t if state is None else round(state[1] + (LOST_S if state[0] == "appended" else UNANSWERED_S), 6)
            if state is not None:
                notes.append(f"step {n} ({label}) placed {1000 * (at - state[1]):.0f} ms after its region's submit "
                             f"({'before the fsync' if state[0] == 'appended' else 'durable, before the answer'})")
            faults.append({"kind": "crash", "at_s": at, "target": names[a[0]]})
        elif k == "restart":
            faults.append({"kind": "restart", "at_s": t, "target": names[a[0]]})
        elif k == "partition":
            parts[a[0]] = t
        elif k == "heal":
            start = parts.pop(a[0])
            faults.append(_partition(names, a[0], start, t))
        elif k == "ship":
            schedule.append({"at_s": t, "op": "ship", "region": names[a[0]]})
        elif k == "replay":
            schedule.append({"at_s": t, "op": "read", "region": names[a[0]]})
            notes.append(f"step {n} ({label}): {names[a[0]]}'s reader polls every stream")
        elif k == "rotate":
            faults.append({"kind": "rotate_key", "at_s": t, "tenant": f"t{a[0]}"})
    for r, start in parts.items():  # healed by the heal phase after the schedule
        faults.append(_partition(names, r, start, None))
    return _scenario_data(scope, names, len(labels), schedule, faults), notes


def _scenario_data(scope, names: list[str], steps: int, schedule: list[dict], faults: list[dict]) -> dict:
    """Constant latencies, one agent that sends nothing by itself, replication that runs by
    itself only after the schedule, old keys valid for the whole run (as in the model)."""
    duration = round((steps + 1) * SLOT_S, 6)
    return {
        "scenario": {"name": "model-counterexample", "description": "a model counterexample as an explicit "
                     "schedule (flk check model --replay)", "duration_s": duration,
                     "quiescence_s": round(2 * duration + 2.0, 6)},
        "region_defaults": {"group_commit_ms": 0.0, "fsync_ms": 5.0, "store_ms": 5.0, "torn_writes": False},
        "network": {"latency_ms": 1.0, "region_latency_ms": 1.0},
        "workload": {"agents": 1, "rate_per_s": 0.0, "tenants": scope.tenants, "max_attempts": 1,
                     "rotation_overlap_s": 1_000_000.0},
        "replication": {"enabled": scope.regions > 1, "ship_interval_s": duration, "read_interval_s": duration,
                        "upload_ms": 5.0, "copy_retry_s": 0.01},
        "regions": [{"id": name} for name in names],
        "faults": sorted(faults, key=lambda f: f["at_s"]),
        "schedule": schedule,
    }


def _partition(names: list[str], r: int, start: float, end: float | None) -> dict:
    f = {"kind": "partition", "at_s": start, "a": [names[r]], "b": [x for x in names if x != names[r]]}
    if end is not None:
        f["duration_s"] = round(end - start, 6)
    return f


def simulate_counterexample(scope, labels: list[str], impl_plant: str | None = None) -> dict:
    """Run the model steps ``labels`` on the simulator (:func:`schedule_scenario`) with the
    implementation bug ``impl_plant`` planted through the simulator's seams, and judge the run
    three ways (in-sim checkers, black-box history checker, the model's trace check:
    :func:`flk.sim.tracecheck.three_verdicts`); ``violated``: the invariants any judge finds
    violated (None: the bug cannot be planted in the simulator)."""
    import copy

    import tomli_w

    from ...sim import api
    from ...sim.scenario import DEFAULTS, Scenario, validate

    raw, notes = schedule_scenario(scope, labels)
    data = copy.deepcopy(DEFAULTS)
    for name, value in raw.items():
        if isinstance(value, dict):
            data[name].update(value)
        else:
            data[name] = value
    validate(data)
    plant = IMPL_PLANTS[impl_plant] if impl_plant is not None else ImplPlant("", sim={})
    out: dict = {"scenario_toml": tomli_w.dumps(data), "mapping_notes": notes}
    if plant.sim is None:
        return out | {"violated": None, "verdict": f"not run: the simulator has no seam for {impl_plant!r}"}
    res = api.run(Scenario("model-counterexample", "", data), seed=1, plots=False, check_model=True, **plant.sim)
    from ...model.explore import Machine

    m = Machine(replace(scope, plant=None))
    expressed = set(m.safety()) | set(m.liveness())  # what the model speaks to (not the client's retries)
    rows = res.results["verdicts"]["by_invariant"]
    violated = {inv for inv, row in rows.items() if "VIOLATED" in row.values()}
    return out | {"violated": sorted(violated & expressed), "not_in_the_model": sorted(violated - expressed),
                  "by_invariant": rows, "digest": res.digest,
                  "model_trace": {k: res.results["verdicts"]["model"][k] for k in ("verdict", "steps", "unmapped")},
                  "answers": {e["req"]: e["status"] for e in res.history.events if e["type"] == "client.recv"}}
