"""A simulated region: the server's verification core, batch formation, WAL and dedup
store under simulated time, disk and faults.

The region is a *driver* of :class:`flk.impl.verifier.core.VerifyBatch`, the core the
server's submit batches run (:mod:`flk.impl.server.batchdriver`), and forms batches by
the server's own rule, :class:`flk.impl.verifier.batching.BatchFormation` (a batch
starts ``group_commit_ms`` -- the server's ``WAL_GROUP_DELAY_MS`` -- after its oldest
request, or at once when as many wait as the last batch held, at most ``max_batch`` = 256;
one batch at a time), driven here under SimPy time. Per batch, in the server's order:

* step 1 (413 / the tenants' 429) on the batch's ``now``;
* the inbox WAL records -> :class:`flk.impl.storage.wal.SegmentedLog` on a
  :class:`flk.impl.testing.crashfs.CrashableMemoryFileSystem`: the segment rolls only
  between batches, ONE fsync (sampled latency) makes the batch durable before anything
  else (INV-WAL-FIRST);
* steps 3-4 (and 6) at ``verify_ms`` CPU time per request, on the batch;
* ONE ``get_many`` -- only where the batch needs it (a verifier with hooks), as the
  server's batches skip it otherwise (put-if-absent answers a held key as the lookup
  would) -- and ONE ``put_many_if_absent`` on the region's real store (memory,
  sharded, tiered or migrating: :mod:`flk.sim.stores`) behind
  :class:`flk.impl.testing.outage.OutageStore` (whole-store outages) and the server's
  breaker wrapping (:class:`flk.impl.verifier.admission.GuardedStore`: an open breaker
  answers 503 at once, no store call), each after a sampled store latency;
* every answer, and the batch's home answers handed to the WAL for the segment's
  manifest (they travel with the records to the other regions).

Admission is the server's: :func:`flk.impl.verifier.admission.build_admission`
makes the AIMD concurrency limit (429 + ``Retry-After`` before a request is queued),
the dedup breaker and the tenants' token buckets from the region's settings
(``max_inflight`` is the server's ``MAX_INFLIGHT``; every other parameter is the
server's default), so an overload scenario studies the policy ``flk serve`` runs.

A crash loses whatever the disk had not fsynced (torn tails included), drops every
queued and in-flight request (the batch process notices the new incarnation and
stops), and a restart reopens the WAL (recovery) and replays it through the same
core, one batch per run of records received at one time (``replay``), from the
checkpoint as ``flk serve`` does (:func:`flk.impl.storage.checkpoint.replay_start`), then
writes a checkpoint. The region takes ``flk serve``'s running WAL checkpoints with the
server's own :class:`flk.impl.storage.checkpoint.Checkpointer` (``wal_checkpoint_s``,
``wal_checkpoint_records``, ``wal_retention``: :meth:`Region.run_checkpoints`), so a
restart late in a long study replays what a real one replays, not the whole run. The dedup
store models an external database: it survives region crashes.
"""

from __future__ import annotations

import hashlib
import sys
from functools import partial

from flk.impl.dedup import StoreUnavailable, answered_part
from flk.impl.replication.shipping import SEAL_RETRY_S
from flk.impl.storage.checkpoint import Checkpointer, replay_start
from flk.impl.storage.inbox import decode_inbox_record
from flk.impl.storage.wal import SegmentedLog, WalError
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.impl.testing.outage import OutageStore
from flk.impl.verifier.admission import AdmissionSettings, GuardedStore, build_admission
from flk.impl.verifier.batching import BatchFormation
from flk.impl.verifier.core import VerifyBatch, append_inbox, same_time_runs
from flk.impl.verifier.pipeline import Request

from .exporter import ProcessMetrics
from .net import call_later
from .rng import sampler
from .stores import StoreTopology

SIM_EPOCH = 1_800_000_000.0  # simulated wall-clock origin (seconds since the Unix epoch)
WAL_DIR = "/wal"
CHECKPOINT_POLL_S = 1.0  # flk serve's checkpoint watch period (flk.impl.server.app: checkpoint_poll_s)


# the bodies hashed lately, by identity -> (the body, kept alive so its id stays its own; its
# hash): a batch's puts hash its items' bodies, then its answers hand the very same objects out
_SHAS: dict[int, tuple[bytes, str]] = {}
_SHAS_CAP = 1024  # > the largest batch (MAX_BATCH): a batch's answers find its puts' hashes


def body_sha(body: bytes) -> str:
    """The history's ``body_sha``: the first 16 hex digits of SHA-256 of ``body``."""
    hit = _SHAS.get(id(body))
    if hit is not None and hit[0] is body:
        return hit[1]
    sha = hashlib.sha256(body).hexdigest()[:16]
    if len(_SHAS) >= _SHAS_CAP:
        _SHAS.clear()
    _SHAS[id(body)] = (body, sha)
    return sha


# answers' header tuples read lately, by identity -> (the headers, kept alive so the id stays
# theirs; what _replay_and_retry_after read): most answers share a few constant tuples
_HEADERS_READ: dict[int, tuple] = {}


def _replay_and_retry_after(headers) -> tuple[bool, str | None]:
    """``(header("Idempotent-Replayed") == "true", header("Retry-After"))`` of an answer's
    headers in one pass (the first of each name, case-insensitive, as ``Response.header``)."""
    hit = _HEADERS_READ.get(id(headers))
    if hit is not None and hit[0] is headers:
        return hit[1]
    got = _read_replay_and_retry_after(headers)
    if headers.__class__ is tuple:  # immutable: what it says cannot change while it is kept
        if len(_HEADERS_READ) >= _SHAS_CAP:
            _HEADERS_READ.clear()
        _HEADERS_READ[id(headers)] = (headers, got)
    return got


def _read_replay_and_retry_after(headers) -> tuple[bool, str | None]:
    replay = retry_after = None
    for key, value in headers:
        name = key.lower()
        if name == "idempotent-replayed":
            if replay is None:
                replay = value
        elif name == "retry-after" and retry_after is None:
            retry_after = value
    return replay == "true", retry_after


def _wake(sleeper: list, region, _timer) -> None:
    """A sleeping batch thread's deadline: wake it unless a full batch did first."""
    gen = sleeper[0]
    if gen is not None:
        sleeper[0] = None
        region._drive(gen)


class _Sleep:
    """What the batch thread yields to sleep ``delay`` until the next batch is due (a plain
    float is a delay nothing else can cut short)."""

    __slots__ = ("delay",)

    def __init__(self, delay: float) -> None:
        self.delay = delay


_WRITTEN: dict = {}  # what _lookup_and_record answers a batch of requests (never changed)

MAX_BATCH = 256  # the server's batch size (flk.impl.server.batchdriver.BatchDriver)


class SealLock:
    """The shipper's seal lock in simulated time: held while a batch runs (its records are
    appended and their answers not yet handed to the WAL); ``acquire`` never blocks, it
    answers False while held (the shipper then seals right after the batch)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.held:
            return False
        self.held = True
        return True

    def release(self) -> None:
        self.held = False

    def __enter__(self) -> SealLock:
        """(The checkpointer's seal.) Its driver ticks only between batches: a held lock here is a bug."""
        if not self.acquire():
            raise RuntimeError("the seal lock is held: a batch is between its records and their answers")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Region:
    def __init__(self, world, spec: dict) -> None:
        self.world = world
        self.env = world.env
        self.id = spec["id"]
        self.cfg = {**world.scenario.data["region_defaults"], **spec}
        self.rng = world.streams.get(f"region/{self.id}")
        self._store_ms, self._fsync_ms = sampler(self.cfg["store_ms"], 0.3), sampler(self.cfg["fsync_ms"], 1.0)
        self.fs = CrashableMemoryFileSystem(rng=world.streams.get(f"disk/{self.id}"),
                                            torn_writes=bool(self.cfg["torn_writes"]))
        self.topology = StoreTopology(self.cfg)
        self.store = OutageStore(self.topology.store)  # available=False: the whole store is unreachable
        self.store_extra_ms = 0.0  # latency injection
        self.store_timeout_s = float(self.cfg["store_timeout_s"])
        self.hang: object | None = None  # while the store hangs (store_down mode = "hang"): the event of its return
        self.mailbox = world.net.register(self.id, group=self.id, handler=self.on_message)
        self.refuses = self.cfg.get("dead_process", "silent") == "refuse"  # what its dead process's host does
        world.net.on_down[self.id] = self._refuse
        self._start_s = float(self.cfg["start_s"])
        self.backlog: list | None = None  # a start's listen backlog: listening, not yet serving
        self.batch_jobs: list = []  # the requests of the batch the batch thread runs
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
        self.seal_lock = SealLock()  # the shipper's (flk.impl.replication.shipping.Shipper) seal lock
        self.store_id = f"sim-{self.id}"  # the store a checkpoint names (flk serve: a hash of its backend and URL)
        self.admission_settings = AdmissionSettings.from_mapping(self.cfg)
        self.admission = build_admission(self.admission_settings)  # volatile: a restart forgets it
        self.exported: ProcessMetrics | None = None  # the process's /metrics counters (World.export_metrics)
        self._verify_ms = float(self.cfg["verify_ms"])  # the verification time per request
        h = world.history  # the per-request events, field order fixed (History.recorder)
        self._rec_recv = h.recorder("srv.recv", ("region", "d", "req", "attempt", "tenant"))
        self._rec_durable = h.recorder("srv.wal_durable", ("region", "d", "idx", "inc"))
        self._rec_get = h.recorder("srv.dedup_get", ("region", "d", "tenant", "pcs_id"))
        self._rec_put = h.recorder("srv.dedup_put", ("d", "region", "tenant", "pcs_id", "stored", "digest", "status",
                                                     "body_sha"))
        self._rec_respond = h.recorder("srv.respond", ("region", "d", "req", "status", "replay", "body_sha"))
        self._rec_respond_key = h.recorder("srv.respond", ("region", "d", "req", "status", "replay", "body_sha",
                                                           "key"))
        self._open()
        # flk serve's start: the (empty) start-up replay, then a checkpoint at the log's next index,
        # so its first running checkpoint is wal_checkpoint_s later (flk.impl.server.app)
        self.checkpointer.started_from(0)
        self.checkpointer.checkpoint_now(self.env._now)

    # -- lifecycle --------------------------------------------------------
    def _open(self) -> None:
        self.topology.new_process()
        self.fs.makedirs(WAL_DIR)
        self.wal = SegmentedLog(WAL_DIR, fs=self.fs, segment_bytes=int(self.cfg.get("segment_bytes", 1 << 20)))
        self.verifier = self.world.verifier_cls(self.world.tenants, region=self.id, limiter=self.admission.buckets)
        self.guarded = GuardedStore(self.store, self.admission.breaker, lambda: self.env._now)
        self.formation = BatchFormation(float(self.cfg["group_commit_ms"]) / 1000.0, MAX_BATCH)
        # the process's 5xx answers (a WAL, store or breaker failure among them): after one, no
        # checkpoint until a restart's replay repaired what failed (the server's ready_to_checkpoint)
        self.failures = 0
        cfg = self.cfg
        self.checkpointer = Checkpointer(
            lambda: self.wal, self.seal_lock, lambda: self.store, self.store_id, lambda: None,
            self.checkpoint_trusted, lambda: self.failures == 0, every_records=int(cfg["wal_checkpoint_records"]),
            every_s=float(cfg["wal_checkpoint_s"]), policy=str(cfg["wal_retention"]), shipped=self._shipped)
        self.queue: list = []  # (payload, delivery number, arrival) waiting for a batch
        self.sleeper: list | None = None  # [the sleeping batch thread] (None once woken)
        self.batching = False  # the batch thread runs
        self.seal_lock.held = False
        if self.exported is not None:  # a new process: its counters start at zero
            self.exported = ProcessMetrics()

    def checkpoint_trusted(self) -> bool:
        """A checkpoint may skip records: the store keeps its outcomes across the process's
        restarts and one store answers for every key (``dedup = memory``: an external database
        such as SQLite, Redis, PostgreSQL, which flk serve trusts); not a sharded, tiered or
        migrating store, which flk serve does not trust either (every start replays everything)."""
        return self.topology.kind == "memory"

    def _replay_skips(self) -> bool:
        """The start-up replay begins above the log's first record: the checkpoint covers those."""
        return self.replay_from > self.wal.first_index

    def _shipped(self) -> int | None:
        """The replication shipper's persisted watermark (None: no replication; 0 during a start,
        before replication runs): no segment at or above it leaves the log."""
        repl = getattr(self.world, "repl", None) or {}
        rep = repl.get(self.id)
        if rep is None:
            return None
        return rep.shipper.persisted_watermark() if self.up else 0

    def run_checkpoints(self):
        """flk serve's checkpoint watch: every CHECKPOINT_POLL_S, a due tick of the region's
        :class:`flk.impl.storage.checkpoint.Checkpointer` on its monotonic clock -- simulated time, which
        no clock fault moves, as flk serve passes ``time.monotonic()`` (mark: seal the active
        segment; checkpoint the previous mark; retire below it and the shipped watermark). A tick
        that finds a batch between its records and their answers waits for it, as the server's
        waits for its batch driver's lock; a stopped (paused) or dead process ticks nothing."""
        env = self.env
        while True:
            yield env.timeout(CHECKPOINT_POLL_S)
            if not self.up or self.paused or not self.checkpointer.due(env._now):
                continue
            inc = self.incarnation
            while self.seal_lock.held:
                yield env.timeout(SEAL_RETRY_S)
            if inc != self.incarnation or not self.up or self.paused:
                continue
            try:
                done = self.checkpointer.tick(env._now)
            except (WalError, OSError) as exc:  # flk serve: logged, the next tick tries again
                self.world.history.record(env.now, "srv.checkpoint_failed", region=self.id, reason=str(exc)[:120])
                continue
            if done["checkpoint"] is not None or done["retired"]:
                self.world.history.record(env.now, "srv.checkpoint", region=self.id, index=done["checkpoint"],
                                          retired=len(done["retired"]))

    def export(self) -> None:
        """Count what this process's ``/metrics`` shows from now on (a scraped run)."""
        if self.exported is None:
            self.exported = ProcessMetrics()

    def now(self) -> float:
        return SIM_EPOCH + self.env._now + self.clock_offset

    def crash(self) -> dict:
        inflight = self.inflight
        self.incarnation += 1
        self.up = False
        self.inflight = 0
        self.world.net.down.add(self.id)
        # with dead_process = refuse, the kernel resets a killed process's connections: every request
        # it held (queued, in the running batch, held by a pause) fails at its client at once
        if self.refuses:
            for p in [job[0] for job in (*self.batch_jobs, *self.queue)] + [m.payload for m in self.paused_queue]:
                self._reset(p, "ConnectionResetError")
        self.batch_jobs = []
        report = self.fs.crash()
        self.admission = build_admission(self.admission_settings)
        self.queue = []
        # a paused process that is killed never answers what the pause held (SIGSTOP then
        # SIGKILL: the kernel resets those connections); the restarted process is not paused
        self.paused = False
        self.paused_queue = []
        self.formation.forget()
        self.seal_lock.held = False
        return {"inflight": inflight, "torn": len(report["torn"])}

    def restart(self):
        """Start the region's process again (once, however many parties -- a fault's end, the
        heal phase -- ask for it): recover the WAL from the disk and replay it through the core.
        A start fails where flk serve's does -- its dedup store does not answer a ping (it exits:
        "does not answer a ping"), or refuses a record of the start-up replay (the replay stops
        at the first refusal and the worker exits, SPEC 11.2 "Poison records"): the region stays
        down and the process manager starts it again ``restart_delay_s`` later, until a start
        succeeds (or the WAL on the disk is damaged). A failed start never serves: a process
        with an un-replayed WAL answers nothing."""
        if self.up or self.restarting:
            return
        self.restarting = True
        try:
            first = True
            while (yield from self._restart(first)) is False:
                first = False
                yield self.env.timeout(float(self.cfg.get("restart_delay_s", 1.0)))
        finally:
            self.restarting = False

    def _restart(self, first: bool = True):
        """One start of the process: True (it serves), False (the start failed: tried again
        later) or None (it stays down: a damaged WAL, or the region crashed meanwhile)."""
        crashed_inc = self.incarnation - 1  # crash() already moved past the incarnation that died
        self.incarnation += 1
        inc = self.incarnation
        if not first:  # a new process: its admission (breaker, limiter, buckets) starts afresh
            self.admission = build_admission(self.admission_settings)
        yield self.env.timeout(self._start_s)  # the process boots (its host refuses a connect meanwhile)
        if inc != self.incarnation:
            return None
        try:
            self._open()
        except WalError as exc:
            self.wal_corruptions += 1
            self.world.history.record(self.env.now, "srv.wal_corrupt", region=self.id, reason=str(exc)[:120])
            # an operator would restore from a replica; the simulator keeps the region down
            return None
        # where the start-up replay begins: flk serve's checkpoint (0 or the log's first record: everything)
        self.replay_from = replay_start(self.wal, self.store_id, None, self.checkpoint_trusted())
        if first:  # ground truth for INV-WAL-FIRST: records of the crashed incarnation at or past this index were lost
            self.world.history.record(self.env.now, "srv.wal_recovered", region=self.id, inc=crashed_inc,
                                      next_index=self.wal.next_index,
                                      **({"replay_from": self.replay_from} if self._replay_skips() else {}))
        if self.hang is not None:  # the start's ping waits for a frozen store (flk serve: its timeout)
            yield from self._store_wait(False)
            if inc != self.incarnation:
                return None
        if not self.store_answers():
            return self._start_failed("its dedup store does not answer a ping", 0)
        self._listen()
        return (yield from self._replay(inc))

    def _replay(self, inc: int):
        """The start-up replay of the whole inbox WAL through the core, then serve (True); False
        where the store refused a record (the start failed), None where the region crashed meanwhile."""
        first = self.replay_from  # flk serve's: from its checkpoint (_restart)
        skipped = self._replay_skips()
        self.checkpointer.started_from(first)
        entries = [(index, decode_inbox_record(payload)) for index, payload in self.wal.records(first)]
        segments = self.wal.segments()
        active_first = segments[-1].first_index if segments else 0
        records = [rec for _, rec in entries]
        n = 0
        notes: list = []
        for start, end in same_time_runs(records):
            batch = self.world.core_cls.from_records(self.verifier, records[start:end], records[start].received_at,
                                             indexes=[index for index, _ in entries[start:end]])
            results = yield from self._lookup_and_record(batch, inc, None)
            if results is None:
                return None
            refused = False
            for item in batch.items:
                resp = batch.responses[item.pos]
                if item.who is not None:
                    stored = results.get(id(item), (False,))[0]
                    self.world.history.record(self.env.now, "srv.replay", region=self.id, tenant=item.who.tenant_id,
                                              pcs_id=item.pcs_id, stored=stored, status=resp.status,
                                              body_sha=body_sha(resp.body))
                refused = refused or resp.status == 503
                n += 1
            if refused:  # flk serve's replay stops at the first refusal and the worker exits
                return self._start_failed("its dedup store refused a record of the start-up WAL replay", n)
            notes += [note for note in batch.notes() if note.index >= active_first]
        self.wal.note_answers(notes)
        self.world.history.record(self.env.now, "srv.recovered", region=self.id, replayed=n, **(
            {"from_index": first} if skipped else {}))
        if self.checkpointer.checkpoint_now(self.env._now):  # flk serve: a checkpoint right after its replay
            self.world.history.record(self.env.now, "srv.checkpoint", region=self.id, index=self.checkpointer.index,
                                      retired=0)
        self.up = True
        held, self.backlog = self.backlog or [], None
        for msg in held:  # what waited in the listen backlog, in its order (the limiter takes them as they come)
            self.on_message(msg)
        return True

    def _listen(self) -> None:
        """The start's ping passed: the process listens before its replay (as flk serve's workers:
        :mod:`flk.impl.server.supervisor`), so a connect made now succeeds and its request waits in
        the backlog until the replay is over; a start that fails after this resets them."""
        self.backlog = []
        self.world.net.down.discard(self.id)
        self.world.history.record(self.env.now, "srv.listening", region=self.id)

    def _unlisten(self) -> None:
        """The process that listened exits (a failed start or a crash): the kernel resets what its
        backlog held, and its host refuses (or, silent, drops) what comes next."""
        held, self.backlog = self.backlog, None
        if held is None:
            return
        self.world.net.down.add(self.id)
        if self.host_refuses():
            for msg in held:
                if msg.kind == "submit":
                    self._reset(msg.payload, "ConnectionResetError")

    def host_refuses(self) -> bool:
        """A connect to this region's server port is refused at once (not dropped): its process is
        dead on a live host (``dead_process = refuse``), or between the starts of a restart (the
        crash is over: the host runs, the process manager starts the process again)."""
        return self.refuses or (self.restarting and self.backlog is None)

    def store_answers(self) -> bool:
        try:
            return bool(self.store.ping())
        except Exception:  # noqa: BLE001 -- any failure to ping is an outage (as flk serve's start)
            return False

    def _start_failed(self, reason: str, replayed: int) -> bool:
        self._unlisten()
        self.world.history.record(self.env.now, "srv.start_failed", region=self.id, reason=reason, replayed=replayed)
        return False

    def _refuse(self, msg) -> None:
        """A request reached the host of the dead process: its connect is refused (or dropped: a silent host)."""
        if msg.kind == "submit" and self.host_refuses():
            self._reset(msg.payload, "ConnectionRefusedError")

    def _reset(self, p: dict, error: str) -> None:
        """The client of request ``p`` learns at once (a round trip) that its connection failed."""
        self.world.net.send(self.id, p["reply_to"], "refused",
                            {"req": p["req"], "attempt": p["attempt"], "inc": p.get("inc", 0), "error": error}, size=64)

    # -- request handling -----------------------------------------------------
    def on_message(self, msg) -> None:
        """A request arrived: held while a start replays, dropped while down, queued while paused, else handled."""
        if not self.up:
            if self.backlog is not None:
                self.backlog.append(msg)
            return
        if self.paused:
            self.paused_queue.append(msg)
            return
        self.handle(msg)

    def resume(self) -> None:
        self.paused = False
        queued, self.paused_queue = self.paused_queue, []
        if not self.up:  # crashed while paused: what the pause held died with the process
            return
        for msg in queued:
            self.handle(msg)

    def _store_delay(self) -> float:
        return (self._store_ms(self.rng) + self.store_extra_ms) / 1000.0

    def store_hangs(self, on: bool) -> None:
        """The store stops answering (``on``) or answers again: a call waiting on it gets its answer now."""
        if on and self.hang is None:
            self.hang = self.env.event()
        elif not on and self.hang is not None:
            self.hang.succeed()
            self.hang = None

    def _store_wait(self, plain: bool):
        """Wait for one store call's answer: its latency (a float where ``plain``: the batch thread's
        plain delay, else a timeout); while the store hangs, its timeout or the store's return,
        whichever comes first (a SIGSTOPped Redis answers what it was sent once it runs again) --
        also for a call on its way when the store froze."""
        hang = self.hang
        if hang is None:
            yield self._store_delay() if plain else self.env.timeout(self._store_delay())
            hang = self.hang
            if hang is None:
                return
        yield self.env.any_of([self.env.timeout(self.store_timeout_s), hang])

    def handle(self, msg) -> None:
        """Admission (the AIMD limit: 429 before the WAL), then the request waits for a batch."""
        env = self.env
        now = env._now
        p = msg.payload
        self.deliveries += 1
        d = self.deliveries
        self._rec_recv(now, self.id, d, p["req"], p["attempt"], p["tenant"])
        limiter = self.admission.limiter
        if not limiter.try_acquire(now):
            self._respond(p, d, 429, False, b"", None, retry_after=str(limiter.retry_after()), before_wal=True)
            if self.exported is not None:
                self.exported.shed()
            return
        self.inflight += 1
        self.queue.append((p, d, now))
        self.formation.add(now)
        if not self.batching:
            self.batching = True
            self._drive(self._batches(self.incarnation))
        else:
            sleeper = self.sleeper
            if sleeper is not None and sleeper[0] is not None and self.formation.due(now):
                # a full batch: do not sleep out the delay (woken by an event at this time, after
                # what is already due now, as a woken process would be)
                gen, sleeper[0] = sleeper[0], None
                wake = env.event()
                wake.callbacks.append(partial(self._resume, gen))
                wake.succeed()

    def _drive(self, gen, _event=None) -> None:
        """Run the batch thread ``gen`` to its next wait: a float is a plain delay (an fsync, the
        verification time, a store call), queued where ``env.timeout(delay)`` made at the yield
        would be (:func:`call_later`: the same queue entry, no Timeout); a :class:`_Sleep` is a sleep
        until the next batch is due (:meth:`_sleep`); any other yield is a SimPy event whose
        callback resumes it. A light stand-in for a SimPy process (no process, start or end
        events; the same order of steps)."""
        try:
            waiting = gen.send(None)
        except StopIteration:
            return
        kind = waiting.__class__
        if kind is float:
            call_later(self.env, waiting, partial(self._drive, gen))
        elif kind is _Sleep:
            self._sleep(gen, waiting.delay)
        else:
            waiting.callbacks.append(partial(self._drive, gen))

    def _resume(self, gen, _event=None) -> None:
        self._drive(gen)

    def _sleep(self, gen, delay: float) -> None:
        """The batch thread sleeps ``delay``: its deadline's timeout wakes it, unless a full
        batch (:meth:`handle`) did first."""
        sleeper = self.sleeper = [gen]
        call_later(self.env, delay, partial(_wake, sleeper, self))  # a timeout without the Timeout

    def _batches(self, inc: int):
        """The batch thread: sleep until a batch is due (BatchFormation), run it, until idle
        (driven by :meth:`_drive`; it yields SimPy events, or a float to sleep)."""
        env, formation = self.env, self.formation
        while (deadline := formation.deadline()) is not None:
            if not formation.due(env._now):
                yield _Sleep(max(0.0, deadline - env._now))
                self.sleeper = None
                if inc != self.incarnation:
                    return
                continue
            n = formation.take(env._now)
            queue = self.queue
            jobs, self.queue = (queue, []) if n == len(queue) else (queue[:n], queue[n:])
            self.seal_lock.held = True
            self.batch_jobs = jobs
            done = yield from self._run_batch(jobs, inc)
            if not done:
                return
            self.batch_jobs = []
            self.seal_lock.held = False
            formation.done()
        self.batching = False

    def _run_batch(self, jobs: list, inc: int):
        """One batch through the core; False if the region died meanwhile."""
        env = self.env
        exported = self.exported
        batch = self.world.core_cls(self.verifier, self.now(), sink=None if exported is None else exported.pipeline)
        appends = batch.admit([Request(p["body"], p["tenant"]) for p, _, _ in jobs])
        if appends:
            wal = self.wal
            try:
                if wal.active_full:  # roll_if_full's own test, without its two locks per batch
                    wal.roll_if_full()  # between batches only: the batch's answers reach its segment's manifest
                first = append_inbox(wal, appends, False)  # the server's call: frame_records, the same bytes
            except WalError:
                batch.wal_failed()
            else:
                synced = yield from self._make_durable(inc)
                if synced is None:
                    return False
                if not synced:
                    batch.wal_failed()
                else:
                    batch.wal_written(first)
                    rec, now, rid = self._rec_durable, env._now, self.id
                    for item in batch.items:
                        rec(now, rid, jobs[item.pos][1], item.wal_index, inc)
        if batch.items and not all(batch.responses[item.pos] is not None for item in batch.items):
            yield len(batch.items) * self._verify_ms / 1000.0  # a float: a plain delay (see _drive)
            if inc != self.incarnation:
                return False
        results = yield from self._lookup_and_record(batch, inc, jobs)
        if results is None:
            return False
        limiter = self.admission.limiter
        # every request that authenticated reached the dedup step (its key), whatever the store said
        keys = {item.pos: [item.who.tenant_id, item.pcs_id] for item in batch.items if item.who is not None}
        now, responses = env._now, batch.responses
        for pos, (p, d, started) in enumerate(jobs):
            resp = responses[pos]
            self.inflight -= 1
            status = resp.status
            limiter.release(now, now - started, ok=status != 503)
            if status >= 500:
                self.failures += 1
            replay, retry_after = _replay_and_retry_after(resp.headers)
            self._respond(p, d, status, replay, resp.body, keys.get(pos), retry_after=retry_after)
            if exported is not None:
                exported.answered(status, now - started)
        self.wal.note_answers(batch.notes())
        return True

    def _make_durable(self, inc: int):
        """ONE fsync (sampled latency) of everything appended: True, False (it failed) or
        None (the region died meanwhile)."""
        yield self.disk_factor * self._fsync_ms(self.rng) / 1000.0  # a float (x / 1000.0): a plain delay (see _drive)
        if inc != self.incarnation:
            return None
        try:
            self.wal.sync()
        except WalError:
            return False
        return True

    def _breaker_refused(self, jobs: list | None, items: list) -> None:
        """The open breaker refused a batch's store call: its requests are answered 503 with
        no store call (``srv.breaker_refused``, the deliveries ``ds``; a replay's: not recorded)."""
        if jobs is not None:
            self.world.history.record(self.env.now, "srv.breaker_refused", region=self.id,
                                      ds=[jobs[item.pos][1] for item in items])

    def _lookup(self, batch: VerifyBatch, keys: list, inc: int, jobs: list | None):
        """Step 5: one ``get_many`` after a store latency, behind the breaker. True when the batch
        goes on to its writes; None if the region died meanwhile; ``{}`` when the lookup failed
        (the batch is answered)."""
        pending, guarded = batch.pending, self.guarded
        try:
            guarded.admit(len(keys))
        except StoreUnavailable:
            self._breaker_refused(jobs, pending)
            batch.lookup_failed()
            return {}
        yield from self._store_wait(jobs is not None)  # a float where it can be (see _drive)
        if inc != self.incarnation:
            return None
        if jobs is not None:
            rec, t, rid = self._rec_get, self.env._now, self.id
            for item in pending:
                rec(t, rid, jobs[item.pos][1], item.who.tenant_id, item.pcs_id)
        try:
            found = guarded.call(self.store.get_many, keys, batch.now)
        except StoreUnavailable as exc:
            part = answered_part(exc, keys)  # a shard down: the other keys are answered (SPEC 13.1)
            if part is None:
                batch.lookup_failed()
                return {}
            batch.found(*part)
        else:
            batch.found(found)
        return True

    def _lookup_and_record(self, batch: VerifyBatch, inc: int, jobs: list | None):
        """Steps 3-8 of ``batch`` with one ``get_many`` -- only when the batch needs it
        (:attr:`flk.impl.verifier.core.VerifyBatch.needs_lookup`: the verifier has hooks), as
        the server's batches and start-up replay (``flk.impl.verifier.core._lookup_and_record``)
        -- and one ``put_many_if_absent``, each after a store latency, behind the breaker; None
        if the region died meanwhile, else for a replay (``jobs`` None: no history of its calls)
        ``{id(item): (stored, winner)}`` of the writes (a batch of requests: an empty mapping --
        its answers say what the writes did)."""
        env, guarded = self.env, self.guarded
        now = batch.now
        keys = batch.verify()
        if not keys:
            return {}
        if batch.needs_lookup:
            looked = yield from self._lookup(batch, keys, inc, jobs)
            if looked is not True:
                return looked
        else:  # no hooks: put-if-absent answers a held key as the lookup would (the server skips it too)
            batch.skip_lookup()
        writes = batch.writes()
        if not writes:
            return {}
        writing = batch.pending
        try:
            guarded.admit(len(writes))
        except StoreUnavailable:
            self._breaker_refused(jobs, writing)
            batch.record_failed()
            return {}
        yield from self._store_wait(jobs is not None)  # a float where it can be (see _drive)
        if inc != self.incarnation:
            return None
        items = [(t, sys.intern(p), o) for t, p, o in writes]  # one pcs_id string per key across regions: memory
        failed: frozenset[int] | tuple = ()
        try:
            results = guarded.call(self.store.put_many_if_absent, items, now, self.verifier.limits.ttl_s)
        except StoreUnavailable as exc:
            part = answered_part(exc, items)  # a shard down: the other writes happened
            if part is None:
                batch.record_failed()
                return {}
            results, failed = part
        batch.recorded(results, failed)
        done = zip(writing, results, strict=True) if not failed else \
            [(item, result) for k, (item, result) in enumerate(zip(writing, results, strict=True)) if k not in failed]
        if jobs is None:  # a replay reads what each write did
            return {id(item): result for item, result in done}
        rec, t, rid = self._rec_put, env._now, self.id
        for item, (stored, winner) in done:
            rec(t, jobs[item.pos][1], rid, item.who.tenant_id, item.pcs_id, stored, winner.payload_digest,
                winner.status, body_sha(winner.body))
        return _WRITTEN

    def _respond(self, p, d, status, replay, body, key, retry_after=None, before_wal=False) -> None:
        sha = body_sha(body)
        if before_wal:
            fields = dict(region=self.id, d=d, req=p["req"], status=status, replay=replay, body_sha=sha)
            if key is not None:
                fields["key"] = key
            fields["before_wal"] = True
            self.world.history.record(self.env.now, "srv.respond", **fields)
        elif key is not None:
            self._rec_respond_key(self.env._now, self.id, d, p["req"], status, replay, sha, key)
        else:
            self._rec_respond(self.env._now, self.id, d, p["req"], status, replay, sha)
        self.world.net.send(self.id, p["reply_to"], "response",
                            {"req": p["req"], "attempt": p["attempt"], "inc": p.get("inc", 0), "status": status,
                             "replay": replay,
                             "body_sha": sha, "retry_after": retry_after}, size=len(body) + 64)

    def final_entries(self) -> list:
        return self.topology.scan_all(self.now())
