"""A simulated region: the real verifier pipeline, WAL and dedup store under
simulated time, disk and faults.

The region is a *driver* of :meth:`flk.impl.verifier.pipeline.Verifier.handle`: it
carries out the effects the pipeline yields --

* ``WalAppend`` -> :class:`flk.impl.storage.wal.SegmentedLog` on a
  :class:`flk.impl.testing.crashfs.CrashableMemoryFileSystem`; the reply is sent only once a
  simulated group commit (max delay + sampled fsync latency) made the record
  durable;
* ``DedupGet`` / ``DedupPut`` -> the region's real store (memory, sharded, tiered or
  migrating: :mod:`flk.sim.stores`) behind :class:`flk.impl.testing.outage.OutageStore`
  for whole-store outages (``StoreUnavailable``), after a sampled store latency;
* ``Emit`` -> nothing (the history is written here, from the effects themselves).

A crash loses whatever the disk had not fsynced (torn tails included), drops
every in-flight request (their processes notice the new incarnation and stop),
and a restart reopens the WAL (recovery) and replays it through the same
pipeline (``replay=True``). The dedup store models an external database: it
survives region crashes.
"""

from __future__ import annotations

import hashlib

from flk.impl.dedup import StoreUnavailable
from flk.impl.storage.wal import (
    InboxRecord,
    SegmentedLog,
    WalError,
    decode_inbox_record,
    encode_inbox_record,
)
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.impl.testing.outage import OutageStore
from flk.impl.verifier.pipeline import DedupGet, DedupPut, Emit, Request, WalAppend, WalUnavailable
from flk.impl.verifier.tenants import Limiter

from .rng import sample
from .stores import StoreTopology

SIM_EPOCH = 1_800_000_000.0  # simulated wall-clock origin (seconds since the Unix epoch)
WAL_DIR = "/wal"


def body_sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


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
        self.mailbox = world.net.register(self.id, group=self.id)
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
        self.limiter = Limiter()  # volatile: a restart forgets the buckets, as a real process would
        self._open()

    # -- lifecycle --------------------------------------------------------
    def _open(self) -> None:
        self.fs.makedirs(WAL_DIR)
        self.wal = SegmentedLog(WAL_DIR, fs=self.fs, segment_bytes=int(self.cfg.get("segment_bytes", 1 << 20)))
        self.verifier = self.world.verifier_cls(self.world.tenants, region=self.id, limiter=self.limiter)
        self.waiters: list[tuple[int, object]] = []
        self.commit_scheduled = False

    def now(self) -> float:
        return SIM_EPOCH + self.env.now + self.clock_offset

    def crash(self) -> dict:
        inflight = self.inflight + len(self.waiters)
        self.incarnation += 1
        self.up = False
        self.inflight = 0
        self.world.net.down.add(self.id)
        report = self.fs.crash()
        self.limiter = Limiter()
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

    # -- group commit -------------------------------------------------------
    def _wait_durable(self, index: int):
        ev = self.env.event()
        self.waiters.append((index, ev))
        if not self.commit_scheduled:
            self.commit_scheduled = True
            self.env.process(self._group_commit(self.incarnation))
        return ev

    def _group_commit(self, inc: int):
        yield self.env.timeout(float(self.cfg["group_commit_ms"]) / 1000.0)
        if inc != self.incarnation:
            return
        yield self.env.timeout(self.disk_factor * sample(self.cfg["fsync_ms"], self.rng, 1.0) / 1000.0)
        if inc != self.incarnation:
            return
        self.commit_scheduled = False
        try:
            durable = self.wal.sync()
        except WalError:
            for _, ev in self.waiters:
                ev.fail(WalUnavailable("fsync failed"))
            self.waiters = []
            return
        keep = []
        for idx, ev in self.waiters:
            if idx < durable:
                ev.succeed(idx)
            else:
                keep.append((idx, ev))
        self.waiters = keep
        if keep and not self.commit_scheduled:
            self.commit_scheduled = True
            self.env.process(self._group_commit(inc))

    # -- request handling -----------------------------------------------------
    def serve(self):
        while True:
            msg = yield self.mailbox.get()
            if not self.up:
                continue
            if self.paused:
                self.paused_queue.append(msg)
                continue
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
        hist, env = self.world.history, self.env
        send, throw, key, stored_new = None, None, None, False
        while True:
            try:
                eff = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as stop:
                return stop.value, key, stored_new
            send, throw = None, None
            if isinstance(eff, WalAppend):
                try:
                    idx = self.wal.append(encode_inbox_record(
                        InboxRecord(eff.tenant, eff.received_at, eff.region, eff.body)))
                except WalError:
                    throw = WalUnavailable("append failed")
                    continue
                ev = self._wait_durable(idx)
                try:
                    send = yield ev
                except WalUnavailable as exc:
                    throw = exc
                    continue
                if inc != self.incarnation:
                    return None
                hist.record(env.now, "srv.wal_durable", region=self.id, d=d, idx=send, inc=inc)
            elif isinstance(eff, DedupGet):
                key = [eff.tenant, eff.pcs_id]
                yield env.timeout(self._store_delay())
                if inc != self.incarnation:
                    return None
                if not replay:
                    hist.record(env.now, "srv.dedup_get", region=self.id, d=d, tenant=eff.tenant, pcs_id=eff.pcs_id)
                try:
                    send = self.store.get(eff.tenant, eff.pcs_id, eff.now)
                except StoreUnavailable as exc:
                    throw = exc
            elif isinstance(eff, DedupPut):
                key = [eff.tenant, eff.pcs_id]
                yield env.timeout(self._store_delay())
                if inc != self.incarnation:
                    return None
                try:
                    stored, winner = self.store.put_if_absent(eff.tenant, eff.pcs_id, eff.outcome, eff.now, eff.ttl_s)
                except StoreUnavailable as exc:
                    throw = exc
                    continue
                send = (stored, winner)
                stored_new = stored
                if not replay:
                    hist.record(env.now, "srv.dedup_put", d=d, region=self.id, tenant=eff.tenant,
                                pcs_id=eff.pcs_id, stored=stored, digest=winner.payload_digest,
                                status=winner.status, body_sha=body_sha(winner.body))
            elif isinstance(eff, Emit):
                send = None
            else:  # pragma: no cover - the pipeline yields nothing else
                raise TypeError(f"unknown effect {type(eff).__name__}")

    def handle(self, msg):
        env, hist = self.env, self.world.history
        inc = self.incarnation
        p = msg.payload
        self.deliveries += 1
        d = self.deliveries
        hist.record(env.now, "srv.recv", region=self.id, d=d, req=p["req"], attempt=p["attempt"], tenant=p["tenant"])
        if self.inflight >= int(self.cfg["max_inflight"]):
            self._respond(p, d, 429, False, b"", None, retry_after="1", before_wal=True)
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
