"""A simulated region: the real verifier pipeline, WAL and dedup store under
simulated time, disk and faults.

The region is a *driver* of :meth:`flk.impl.verifier.pipeline.Verifier.handle`: it
carries out the effects the pipeline yields --

* ``WalAppend`` -> :class:`flk.impl.storage.wal.SegmentedLog` on a
  :class:`flk.impl.testing.crashfs.CrashableMemoryFileSystem`; the reply is sent only once a
  simulated group commit made the record durable -- when to fsync and whom it
  releases is the server's own :class:`flk.impl.storage.groupcommit.GroupCommit`,
  driven here under SimPy time (sampled fsync latency);
* ``DedupGet`` / ``DedupPut`` -> the region's real store (memory, sharded, tiered or
  migrating: :mod:`flk.sim.stores`) behind :class:`flk.impl.testing.outage.OutageStore`
  for whole-store outages (``StoreUnavailable``), after a sampled store latency,
  behind the server's circuit breaker (an open breaker answers 503 at once);
* ``Emit`` -> nothing (the history is written here, from the effects themselves).

Admission is the server's: :func:`flk.impl.verifier.admission.build_admission`
makes the AIMD concurrency limit (429 + ``Retry-After``), the dedup breaker and
the tenants' token buckets from the region's settings (``max_inflight`` is the
server's ``MAX_INFLIGHT``; every other parameter is the server's default), so
an overload scenario studies the policy ``flk serve`` runs.

A crash loses whatever the disk had not fsynced (torn tails included), drops
every in-flight request (their processes notice the new incarnation and stop),
and a restart reopens the WAL (recovery) and replays it through the same
pipeline (``replay=True``). The dedup store models an external database: it
survives region crashes.
"""

from __future__ import annotations

import hashlib
import sys

from flk.impl.dedup import StoreUnavailable
from flk.impl.storage.groupcommit import GroupCommit, Release
from flk.impl.storage.wal import (
    InboxRecord,
    SegmentedLog,
    WalError,
    decode_inbox_record,
    encode_inbox_record,
)
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.impl.testing.outage import OutageStore
from flk.impl.verifier.admission import AdmissionSettings, build_admission
from flk.impl.verifier.pipeline import DedupGet, DedupPut, Emit, Request, WalAppend, WalUnavailable

from .rng import sample
from .stores import StoreTopology

SIM_EPOCH = 1_800_000_000.0  # simulated wall-clock origin (seconds since the Unix epoch)
WAL_DIR = "/wal"


_LAST_BODY: list = [None, ""]  # the last body hashed and its hash (a request's put and answer share one)


def body_sha(body: bytes) -> str:
    if body is _LAST_BODY[0]:
        return _LAST_BODY[1]
    sha = hashlib.sha256(body).hexdigest()[:16]
    _LAST_BODY[0], _LAST_BODY[1] = body, sha
    return sha


class Region:
    def __init__(self, world, spec: dict) -> None:
        self.world = world
        self.env = world.env
        self.id = spec["id"]
        self.cfg = {**world.scenario.data["region_defaults"], **spec}
        self.rng = world.streams.get(f"region/{self.id}")
        self.fs = CrashableMemoryFileSystem(rng=world.streams.get(f"disk/{self.id}"),
                                            torn_writes=bool(self.cfg["torn_writes"]))
        self.topology = StoreTopology(self.cfg)
        self.store = OutageStore(self.topology.store)  # available=False: the whole store is unreachable
        self.store_extra_ms = 0.0  # latency injection
        self.mailbox = world.net.register(self.id, group=self.id, handler=self.on_message)
        self.incarnation = 0
        self.up = True
        self.restarting = False
        self.paused = False
        self.paused_queue: list = []
        self.clock_offset = 0.0
        self.disk_factor = 1.0
        self.inflight = 0
        self.deliveries = 0
        self.wal_corruptions = 0
        self.admission_settings = AdmissionSettings.from_mapping(self.cfg)
        self.admission = build_admission(self.admission_settings)  # volatile: a restart forgets it
        self._open()

    # -- lifecycle --------------------------------------------------------
    def _open(self) -> None:
        self.fs.makedirs(WAL_DIR)
        self.wal = SegmentedLog(WAL_DIR, fs=self.fs, segment_bytes=int(self.cfg.get("segment_bytes", 1 << 20)))
        self.verifier = self.world.verifier_cls(self.world.tenants, region=self.id, limiter=self.admission.buckets)
        self.group_commit = GroupCommit(float(self.cfg["group_commit_ms"]) / 1000.0, durable=self.wal.durable_index)
        self.commit_scheduled = False
        self.commit_wake = None  # an event the sleeping commit process waits on besides its deadline

    def now(self) -> float:
        return SIM_EPOCH + self.env.now + self.clock_offset

    def crash(self) -> dict:
        inflight = self.inflight + self.group_commit.waiting()
        self.incarnation += 1
        self.up = False
        self.inflight = 0
        self.world.net.down.add(self.id)
        report = self.fs.crash()
        self.admission = build_admission(self.admission_settings)
        return {"inflight": inflight, "torn": len(report["torn"])}

    def restart(self):
        """Recover the WAL from the disk and replay it through the pipeline (once, however
        many parties -- a fault's end, the heal phase -- ask for it)."""
        if self.up or self.restarting:
            return
        self.restarting = True
        try:
            yield from self._restart()
        finally:
            self.restarting = False

    def _restart(self):
        crashed_inc = self.incarnation - 1  # crash() already moved past the incarnation that died
        self.incarnation += 1
        try:
            self._open()
        except WalError as exc:
            self.wal_corruptions += 1
            self.world.history.record(self.env.now, "srv.wal_corrupt", region=self.id, reason=str(exc)[:120])
            # an operator would restore from a replica; the simulator keeps the region down
            return
        inc = self.incarnation
        # ground truth for INV-WAL-FIRST: records of the crashed incarnation at or past this index were lost
        self.world.history.record(self.env.now, "srv.wal_recovered", region=self.id, inc=crashed_inc,
                                  next_index=self.wal.next_index)
        n = 0
        for _, payload in list(self.wal.records(0)):
            rec = decode_inbox_record(payload)
            gen = self.verifier.handle(Request(rec.body, rec.tenant or None), rec.received_at, replay=True)
            result = yield from self._drive(gen, inc, d=None, replay=True)
            if result is None:
                return
            resp, key, stored = result
            if key is not None:
                self.world.history.record(self.env.now, "srv.replay", region=self.id, tenant=key[0],
                                          pcs_id=key[1], stored=stored, status=resp.status,
                                          body_sha=body_sha(resp.body))
            n += 1
        self.world.history.record(self.env.now, "srv.recovered", region=self.id, replayed=n)
        self.up = True
        self.world.net.down.discard(self.id)

    # -- group commit (the SimPy driver of the pure state machine) ------------------------
    def _wait_durable(self, index: int):
        env, machine = self.env, self.group_commit
        event = env.event()
        if machine.append(index, env.now) and self.commit_wake is not None and not self.commit_wake.triggered:
            self.commit_wake.succeed()  # a full batch: do not sleep out the delay
        release = machine.wait(index, event, env.now)
        if release is not None:
            self._settle([release])
        elif not self.commit_scheduled:
            self.commit_scheduled = True
            env.process(self._group_commit(self.incarnation))
        return event

    def _group_commit(self, inc: int):
        """Sleep until the machine's deadline, fsync (sampled latency), release; until idle."""
        env, machine = self.env, self.group_commit
        while (deadline := machine.next_deadline()) is not None:
            if deadline > env.now:
                self.commit_wake = env.event()
                yield env.timeout(deadline - env.now) | self.commit_wake
                if inc != self.incarnation:
                    return
                self.commit_wake = None
            machine.start_sync(env.now)
            yield env.timeout(self.disk_factor * sample(self.cfg["fsync_ms"], self.rng, 1.0) / 1000.0)
            if inc != self.incarnation:
                return
            try:
                durable = self.wal.sync()
            except WalError:
                self._settle(machine.sync_failed(WalUnavailable("fsync failed"), env.now))
                break
            self._settle(machine.synced(durable, env.now))
        self.commit_scheduled = False

    @staticmethod
    def _settle(releases: list[Release]) -> None:
        for release in releases:
            if release.error is None:
                release.waiter.succeed(release.index)
            else:
                release.waiter.fail(release.error)

    # -- request handling -----------------------------------------------------
    def on_message(self, msg) -> None:
        """A request arrived: dropped while down, queued while paused, else handled."""
        if not self.up:
            return
        if self.paused:
            self.paused_queue.append(msg)
            return
        self.env.process(self.handle(msg))

    def resume(self) -> None:
        self.paused = False
        queued, self.paused_queue = self.paused_queue, []
        for msg in queued:
            self.env.process(self.handle(msg))

    def _store_delay(self) -> float:
        return (sample(self.cfg["store_ms"], self.rng, 0.3) + self.store_extra_ms) / 1000.0

    def _drive(self, gen, inc: int, d: int | None, replay: bool = False):
        """Carry out the pipeline's effects; returns (response, dedup key, stored-new flag),
        or None if the region died meanwhile."""
        send, throw, key, stored_new = None, None, None, False
        while True:
            try:
                eff = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as stop:
                return stop.value, key, stored_new
            if isinstance(eff, WalAppend):
                outcome = yield from self._wal_append(eff, inc, d)
            elif isinstance(eff, (DedupGet, DedupPut)):
                key = [eff.tenant, eff.pcs_id]
                outcome = yield from self._dedup_call(eff, inc, d, replay)
                if isinstance(eff, DedupPut) and outcome is not None and outcome[1] is None:
                    stored_new = outcome[0][0]
            elif isinstance(eff, Emit):
                outcome = (None, None)
            else:  # pragma: no cover - the pipeline yields nothing else
                raise TypeError(f"unknown effect {type(eff).__name__}")
            if outcome is None:
                return None
            send, throw = outcome

    def _wal_append(self, eff: WalAppend, inc: int, d: int | None):
        """Append the inbox record and wait for its group commit: (index, None),
        (None, WalUnavailable) or None if the region died meanwhile."""
        try:
            index = self.wal.append(encode_inbox_record(InboxRecord(eff.tenant, eff.received_at, eff.region, eff.body)))
        except WalError:
            return None, WalUnavailable("append failed")
        try:
            index = yield self._wait_durable(index)
        except WalUnavailable as exc:
            return None, exc
        if inc != self.incarnation:
            return None
        self.world.history.record(self.env.now, "srv.wal_durable", region=self.id, d=d, idx=index, inc=inc)
        return index, None

    def _dedup_call(self, eff: DedupGet | DedupPut, inc: int, d: int | None, replay: bool):
        """One store call behind the server's breaker (open: 503 at once, no call):
        (reply, None), (None, StoreUnavailable) or None if the region died meanwhile."""
        env, hist, breaker = self.env, self.world.history, self.admission.breaker
        if not breaker.allow(env.now):
            return None, StoreUnavailable(f"dedup store circuit open (retry in {breaker.retry_after(env.now)} s)")
        yield env.timeout(self._store_delay())
        if inc != self.incarnation:
            return None
        try:
            if isinstance(eff, DedupGet):
                if not replay:
                    hist.record(env.now, "srv.dedup_get", region=self.id, d=d, tenant=eff.tenant, pcs_id=eff.pcs_id)
                reply = self.store.get(eff.tenant, eff.pcs_id, eff.now)
            else:
                # one pcs_id string per key across regions (sys.intern): memory only
                reply = self.store.put_if_absent(eff.tenant, sys.intern(eff.pcs_id), eff.outcome, eff.now, eff.ttl_s)
        except StoreUnavailable as exc:
            breaker.on_failure(env.now)
            return None, exc
        breaker.on_success(env.now)
        if isinstance(eff, DedupPut) and not replay:
            stored, winner = reply
            hist.record(env.now, "srv.dedup_put", d=d, region=self.id, tenant=eff.tenant,
                        pcs_id=eff.pcs_id, stored=stored, digest=winner.payload_digest,
                        status=winner.status, body_sha=body_sha(winner.body))
        return reply, None

    def handle(self, msg):
        env, hist = self.env, self.world.history
        inc = self.incarnation
        p = msg.payload
        self.deliveries += 1
        d = self.deliveries
        hist.record(env.now, "srv.recv", region=self.id, d=d, req=p["req"], attempt=p["attempt"], tenant=p["tenant"])
        limiter, started = self.admission.limiter, env.now
        if not limiter.try_acquire(started):
            self._respond(p, d, 429, False, b"", None, retry_after=str(limiter.retry_after()), before_wal=True)
            return
        self.inflight += 1
        yield env.timeout(float(self.cfg["verify_ms"]) / 1000.0)
        if inc != self.incarnation:
            return
        gen = self.verifier.handle(Request(p["body"], p["tenant"]), self.now())
        result = yield from self._drive(gen, inc, d)
        if result is None or inc != self.incarnation:
            return
        self.inflight -= 1
        resp, key, _ = result
        limiter.release(env.now, env.now - started, ok=resp.status != 503)
        self._respond(p, d, resp.status, resp.header("Idempotent-Replayed") == "true", resp.body, key,
                      retry_after=resp.header("Retry-After"))

    def _respond(self, p, d, status, replay, body, key, retry_after=None, before_wal=False) -> None:
        sha = body_sha(body)
        fields = dict(region=self.id, d=d, req=p["req"], status=status, replay=replay, body_sha=sha)
        if key is not None:
            fields["key"] = key
        if before_wal:
            fields["before_wal"] = True
        self.world.history.record(self.env.now, "srv.respond", **fields)
        self.world.net.send(self.id, p["reply_to"], "response",
                            {"req": p["req"], "attempt": p["attempt"], "inc": p.get("inc", 0), "status": status,
                             "replay": replay,
                             "body_sha": sha, "retry_after": retry_after}, size=len(body) + 64)

    def final_entries(self) -> list:
        return self.topology.scan_all(self.now())
