"""The thread driver that runs cross-region replication inside ``flk serve``.

Why this module exists: the shipper, reader and applier (:mod:`flk.impl.replication.shipping`,
:mod:`flk.impl.replication.reading`, :mod:`flk.impl.replication.applying`) and
:mod:`flk.impl.replication.reconcile` are
sans-I/O (``step(now) -> next_wakeup``); a server needs a thread that calls
them with the wall clock, its configuration, and an
HTTP surface. The simulator drives the same ``step`` functions with simulated
time instead.

Configuration: the ``CRR_*`` rows of the server's settings table
(:mod:`flk.impl.server.config`, which hands this module a :class:`CrrConfig`;
absent ``CRR_STORE_DIR``/``CRR_STORE_URL`` = replication off):

=====================  ==================================================================
``REGION_ID``          this region (the server's ``region_id``)
``CRR_STORE_DIR``      shared object-store directory (or ``CRR_STORE_URL``: ``file://``,
                       ``s3://bucket/prefix?endpoint=...``, ``memory://``)
``CRR_PEERS``          peers to read: ``eu,us`` (full) or ``eu:ta+tb,us`` (selective per
                       tenant); default none (ship only). The region always reads its own
                       stream too, so its reconciler sees its own outcomes.
``CRR_SHIP_INTERVAL_S``  seal + upload period (default 1.0)
``CRR_READ_INTERVAL_S``  peer polling period (default: the ship interval)
``CRR_MODE``           ``auto-safe`` (default) or ``manual``
``CRR_DIVERGENCE_INTERVAL_S``  divergence check period (default 60)
``CRR_DIVERGENCE_SETTLE_S``  how young a key a peer lacks may be and still be lag (default
                        2 x (ship + read interval) + 3 s)
``CRR_ANCHOR_EVERY``   anchor the reconcile audit log every N entries (default 64)
=====================  ==================================================================

State lives in ``DATA_DIR/crr/`` (watermarks, ``authoritative.sqlite3``, the
reconciler's audit log ``audit/`` fed through a durable audit queue
``audit-queue/`` (dead letters ``audit-dlq/``, processed ids
``audit-ids.sqlite3``) and anchored in batches into ``anchors/``). A file ``DATA_DIR/crr.pause`` pauses both
shipping and reading (an operator's or a test's network partition) until it is
removed; a file ``DATA_DIR/crr.pause-ship`` pauses the shipper alone (this region's records stop
leaving it, with no failure to report, while it reads, reconciles and checks divergence on: the
simulator's ``ship_stop`` fault, and an operator holding a region's uploads). A file
``DATA_DIR/crr.rewind`` is a one-shot order: at its next step the reader forgets its watermarks
and re-reads every shipped segment (a repair after a restored dedup store; the simulator's
``reader_rewind``), logs ``crr_reader_rewound`` and removes the file.

With ``WORKERS=N`` every worker ships its own inbox WAL (stream
``<region>/w<k>``); only worker 0 reads peers and reconciles; every worker
answers ``GET /v1/pcs/{pcs_id}/authoritative`` from the shared SQLite file.

Two threads: ``crr-ship-w<k>`` steps the shipper alone (:meth:`CrrService.ship_step`),
``crr-w0`` the reading worker's reader, audit queue and divergence detector
(:meth:`CrrService.read_step`). A region's uploads therefore never wait behind the replay
of its peers' backlog: after a partition heals, that replay runs for seconds, and with one
thread its shipping paused 5-8 s at a time (spec/CALIBRATION.md, clock-skew-replicated),
which the simulator -- whose reader takes no simulated time -- never showed.
:meth:`CrrService.step` runs both in turn, for a caller that drives the service itself.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.backoff import Backoff
from ..core.errors import InvalidInput
from ..governance.auditworkers import (
    AuditItem,
    AuditQueue,
    SqliteIdempotencyStore,
    anchor_fn,
    audit_log_handler,
)
from ..storage.objectstore import ObjectStore, open_object_store
from ..storage.quarantine import describe_error
from ..storage.threads import NamedThread
from ..verifier.wire import parse_strict
from .applying import ReplayApplier
from .divergence import Alert, DivergenceDetector, settle_time, severity_level
from .reading import Reader, Topology
from .reconcile import Reconciler, SqliteAuthoritativeStore, authoritative_app, problem_response
from .shipping import Shipper
from .stream import SegmentRejected, stream_name

if TYPE_CHECKING:  # the types of start_for_server's parts (no import at run time)
    from prometheus_client import CollectorRegistry

    from ..dedup.base import DedupStore
    from ..storage.wal import SegmentedLog
    from ..verifier.pipeline import Verifier


@dataclass(frozen=True)
class CrrConfig:
    """The replication settings (built by :func:`flk.impl.server.config.load_config`
    from the ``CRR_*`` rows of the server's settings table)."""

    region: str
    store_url: str
    peers: str = ""
    ship_interval_s: float = 1.0
    read_interval_s: float = 1.0
    mode: str = "auto-safe"
    divergence_interval_s: float = 60.0
    anchor_every: int = 64
    divergence_settle_s: float | None = None  # None: default_settle_s of the two intervals


class CrrService:
    """Shipper on its own thread (+ reader, reconciler, audit queue and divergence detector on
    a second thread of the reading worker)."""

    def __init__(self, cfg: CrrConfig, *, wal: Any, dedup_store: Any, verifier: Any, data_dir: str,
                 worker: int = 0, objects: ObjectStore | None = None, clock: Callable[[], float] = time.time,
                 log: Callable[..., None] | None = None, volatile_store: bool = False,
                 seal_lock: Any = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        """``volatile_store``: the dedup store does not survive a restart (the
        memory backend), so the reader forgets its watermarks and re-reads
        every stream (idempotent) instead of trusting them. ``clock``: the wall clock every
        component is driven by; ``monotonic``: the clock the ship-lag gauge ages on (a step of
        the wall clock does not move it: :meth:`flk.impl.replication.shipping.Shipper.lag_s`)."""
        self.cfg, self.worker, self.clock, self.monotonic = cfg, worker, clock, monotonic
        self.data_dir = data_dir
        self.state_dir = os.path.join(data_dir, "crr")
        os.makedirs(self.state_dir, exist_ok=True)
        self.pause_file = os.path.join(data_dir, "crr.pause")
        self.ship_pause_file = os.path.join(data_dir, "crr.pause-ship")
        self.rewind_file = os.path.join(data_dir, "crr.rewind")  # one-shot: the reader re-reads everything
        self.objects = objects if objects is not None else open_object_store(cfg.store_url)
        self._log = log or (lambda event, **kw: None)
        self.shipper = Shipper(wal, self.objects, stream_name(cfg.region, worker),
                               os.path.join(self.state_dir, f"ship-w{worker}.json"),
                               interval_s=cfg.ship_interval_s, backoff=Backoff(0.25, 10.0),
                               seal_lock=seal_lock)
        self.auth_store = SqliteAuthoritativeStore(os.path.join(self.state_dir, "authoritative.sqlite3"))
        self.reader: Reader | None = None
        self.reconciler = Reconciler(cfg.region, store=self.auth_store, mode=cfg.mode)
        self.audit_log = None
        self.audit_queue: AuditQueue | None = None
        self.divergence: DivergenceDetector | None = None
        self._journals: list = []
        if worker == 0:
            from ..agent.outbox import Outbox
            from ..governance.audit import AttestationStore, AuditLog

            # reconcile decisions -> durable audit queue -> WORM audit log, anchored in batches
            self.audit_log = AuditLog(os.path.join(self.state_dir, "audit"))
            journal = Outbox(os.path.join(self.state_dir, "audit-queue"))
            dlq = Outbox(os.path.join(self.state_dir, "audit-dlq"))
            self._journals = [journal, dlq]
            self.audit_queue = AuditQueue(
                audit_log_handler(self.audit_log), SqliteIdempotencyStore(os.path.join(self.state_dir, "audit-ids.sqlite3")),
                backoff=Backoff(0.25, 30.0), max_attempts=8, journal=journal, dlq_journal=dlq,
                anchor=anchor_fn(self.audit_log, AttestationStore(os.path.join(self.state_dir, "anchors"))),
                anchor_every=cfg.anchor_every)
            self.audit_queue.recover(clock())
            self.reconciler.audit = self._enqueue_audit
            topo = Topology.parse(cfg.peers, cfg.region)
            read_state = os.path.join(self.state_dir, "read.json")
            if volatile_store and os.path.exists(read_state):
                os.remove(read_state)
            applier = ReplayApplier(verifier, dedup_store, self.reconciler.observe,
                                    observe_batch=self.reconciler.observe_batch)
            self.reader = Reader(self.objects, topo, applier, read_state, interval_s=cfg.read_interval_s,
                                 backoff=Backoff(0.25, 10.0), on_reject=self._rejected,
                                 on_quarantine=self._quarantined)
            self.divergence = DivergenceDetector(
                cfg.region, dedup_store, self.objects, list(topo.sources), interval_s=cfg.divergence_interval_s,
                on_alert=self._alert, open_conflicts=lambda: self.reconciler.metrics()["open_conflicts"],
                topology=lambda: self.reader.topology,  # the reader's CRR policy (an operator's change too)
                settle_s=settle_time(cfg.divergence_settle_s, cfg.ship_interval_s, cfg.read_interval_s))
        self._next_divergence = 0.0
        self.pending: list[Callable[[], None]] = []  # changes run on the reading thread at its next step (call_soon)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors_lock = threading.Lock()  # both threads count their failed steps
        self.errors = 0
        self.last_error: str | None = None  # the last step that raised (type and code location)

    def _enqueue_audit(self, **entry: Any) -> None:
        iid = "|".join(str(entry.get(k, "")) for k in ("region", "tenant", "pcs_id", "outcome", "payload_digest"))
        # due on this region's clock: the entry's ``now`` may be another region's stamp, in
        # this clock's future, and would hold the item back until this clock passed it
        self.audit_queue.enqueue(AuditItem(iid, entry), self.clock())

    def _alert(self, alert: Alert) -> None:
        c = alert.comparison
        self._log("crr_divergence", severity=alert.severity, peer=c.region2 if c.region1 == self.cfg.region
                  else c.region1, count_divergence=round(c.count_divergence, 4),
                  sample_mismatch=round(c.sample_mismatch, 4), open_conflicts=alert.open_conflicts)

    def _rejected(self, rej: SegmentRejected) -> None:
        self._log("crr_segment_rejected", stream=rej.stream, segment=rej.segment, problems=rej.problems[:3],
                  reason="; ".join(rej.problems[:3]), detail=f"{rej.stream}/{rej.segment}")

    def _quarantined(self, entry: dict[str, Any]) -> None:
        """A replicated record whose replay raised: logged (no payload) and audited."""
        self._log("crr_record_quarantined", reason=entry["reason"], records=entry["index"],
                  tenant=entry.get("tenant"), detail=f"{entry['source']}/{entry['segment']} sha256 {entry['digest']}; "
                                                     "replication continues past it")
        self.audit_quarantined(entry)

    def audit_quarantined(self, entry: dict[str, Any]) -> None:
        """An audit entry for a quarantined record (``outcome`` ``quarantined``,
        ``pcs_id`` names the log position; ``payload_digest`` is the record's SHA-256)."""
        if self.audit_queue is None:
            return
        self._enqueue_audit(tenant=entry.get("tenant") or "_unknown", outcome="quarantined",
                            pcs_id=f"{entry['source']}#{entry['index']}", payload_digest=entry["digest"],
                            now=entry["at"], region=self.cfg.region)

    def call_soon(self, change: Callable[[], None]) -> None:
        """Run ``change`` on the reading thread before its next step (an operator's new reader
        topology: the reader is never changed under a running step)."""
        self.pending.append(change)

    def _rewind(self) -> None:
        """``DATA_DIR/crr.rewind`` appeared: the reader forgets its watermarks and re-reads every
        shipped segment (:meth:`flk.impl.replication.reading.Reader.rewind`), then the file is
        removed (an operator waits for that). A crash in between rewinds again at the next start:
        harmless, a replay changes no stored answer."""
        self.reader.rewind()
        self._log("crr_reader_rewound", detail="every shipped segment is read again")
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.rewind_file)

    def set_verifier(self, verifier: Any) -> None:
        """The tenants were reloaded: peers' records replay with ``verifier`` from the next step
        (:meth:`flk.impl.replication.applying.ReplayApplier.set_verifier`, on this thread)."""
        if self.reader is not None:
            applier = self.reader.applier
            self.call_soon(lambda: applier.set_verifier(verifier))

    def step(self, now: float, mono: float | None = None) -> float:
        """One step of every component at wall-clock ``now`` (``mono``: the monotonic clock at the
        same moment; read from ``monotonic`` when not given): :meth:`ship_step`, then
        :meth:`read_step`; returns when to step again."""
        nxt = self.ship_step(now, mono)
        due = self.read_step(now)
        return nxt if due is None else min(nxt, due)

    def ship_step(self, now: float, mono: float | None = None) -> float:
        """The shipper's step (its own thread): seal, upload, the lag gauge; returns when it is due again."""
        if mono is None:
            mono = self.monotonic()
        self.shipper.paused = os.path.exists(self.pause_file) or os.path.exists(self.ship_pause_file)
        return self.shipper.step(now, mono)

    def read_step(self, now: float) -> float | None:
        """The reading worker's step (its own thread): the changes handed to :meth:`call_soon`, a
        rewind order, the reader, the audit queue and the divergence detector; returns when it is
        due again (None: this worker reads nothing)."""
        while self.pending:
            self.pending.pop(0)()
        if self.reader is not None and os.path.exists(self.rewind_file):  # the reading worker's order
            self._rewind()
        paused = os.path.exists(self.pause_file)
        nxt = None
        if self.reader is not None:
            self.reader.paused = paused
            nxt = self.reader.step(now)
        if self.audit_queue is not None:
            due = self.audit_queue.step(now)
            if due is not None:
                nxt = due if nxt is None else min(nxt, due)
        if self.divergence is not None and self._next_divergence - now > self.divergence.interval_s + 1.0:
            self._next_divergence = now  # left ahead by a clock step back: due now (SPEC 11.9 rule 5)
        if self.divergence is not None and not paused:
            if now >= self._next_divergence:
                self._next_divergence = self.divergence.step(now)  # publish, or compare half a period later
            nxt = self._next_divergence if nxt is None else min(nxt, self._next_divergence)
        return nxt

    def _reads(self) -> bool:
        """This worker runs a read side: the reading worker (0) has a reader, and with it the audit
        queue and the divergence detector (built together in ``__init__``)."""
        return self.reader is not None

    def _run(self, step: Callable[[float], float | None]) -> None:
        while not self._stop.is_set():
            try:
                nxt = step(self.clock())
            except Exception as exc:  # noqa: BLE001 -- keep replicating; report, back off
                reason = describe_error(exc)  # type and code location: never a payload
                with self._errors_lock:
                    self.errors += 1
                    self.last_error = reason
                self._log("crr_error", reason=reason, detail="replication step failed; retrying in 1 s")
                nxt = None
            if nxt is None:  # failed, or nothing of its own is due: look again in a second
                nxt = self.clock() + 1.0
            self._stop.wait(max(0.01, min(5.0, nxt - self.clock())))

    def start(self) -> CrrService:
        """Start the shipping thread, and on the reading worker the reading thread."""
        loops = [(f"crr-ship-w{self.worker}", self.ship_step)]
        if self._reads():
            loops.append((f"crr-w{self.worker}", self.read_step))
        for name, step in loops:
            thread = NamedThread(target=self._run, args=(step,), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, final_ship: bool = True) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        if final_ship and not os.path.exists(self.pause_file) and not os.path.exists(self.ship_pause_file):
            try:
                self.shipper._next_seal = None
                self.shipper._retry_at = 0.0
                self.shipper.step(self.clock(), self.monotonic())
            except Exception as exc:  # noqa: BLE001
                self._log("crr_error", reason=describe_error(exc), detail="final ship failed")
        if self.audit_queue is not None:
            with contextlib.suppress(Exception):
                self.audit_queue.step(self.clock())
        for j in self._journals:
            j.close()
        if self.audit_log is not None:
            self.audit_log.close()
        self.auth_store.close()

    def metrics(self) -> dict[str, Any]:
        now = self.clock()
        out: dict[str, Any] = {"region": self.cfg.region, "worker": self.worker,
                               "paused": os.path.exists(self.pause_file),
                               "ship_paused": os.path.exists(self.ship_pause_file),
                               "ship": self.shipper.metrics(now, self.monotonic()),
                               "errors": self.errors, "last_error": self.last_error}
        if self.reader is not None:
            out["read"] = self.reader.metrics(now)
            out["reconcile"] = self.reconciler.metrics()
        if self.audit_queue is not None:
            out["audit_queue"] = self.audit_queue.metrics()
        if self.divergence is not None:
            out["divergence"] = [
                {"severity": a.severity, "regions": [a.comparison.region1, a.comparison.region2],
                 "count_divergence": a.comparison.count_divergence, "sample_mismatch": a.comparison.sample_mismatch,
                 "comparable": a.comparison.comparable, "out_of_scope": a.comparison.out_of_scope,
                 "count_compared": a.comparison.count_compared, "count_inexact": list(a.comparison.count_inexact),
                 "open_conflicts": a.open_conflicts, "reasons": list(a.reasons)}
                for a in self.divergence.last]
            # per peer: consecutive periods compared without its summary (0: seen in the last check)
            out["divergence_unseen"] = dict(self.divergence.unseen)
            # per peer: summaries read that were not a summary (corrupt or foreign bytes; counted unseen)
            out["divergence_unreadable"] = dict(self.divergence.unreadable)
            # this region's dedup key count at its last divergence summary (taken each period)
            counted = self.divergence.counted
            out["divergence_count"] = None if counted is None else {"keys": counted[0], "taken_at": counted[1]}
        return out

    def asgi_app(self):
        return authoritative_app(lambda: self.reconciler)


# -- Prometheus --------------------------------------------------------------------------------

class CrrCollector:
    """A ``prometheus_client`` collector reading :meth:`CrrService.metrics` at scrape time."""

    def __init__(self, svc: CrrService) -> None:
        self.svc = svc

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.svc.metrics()
        w = str(self.svc.worker)
        ship = m["ship"]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["worker"])
            g.add_metric([w], float(value or 0.0))
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["worker"])
            c.add_metric([w], float(value))
            return c

        yield gauge("flk_crr_replication_lag_seconds", "Age of the oldest inbox record not yet shipped "
                    "(on the monotonic clock: a wall-clock step does not move it)", ship["lag_s"])
        yield gauge("flk_crr_replication_lag_p50_seconds", "Median upload time minus received_at (recent records)",
                    ship["lag_p50_s"])
        yield counter("flk_crr_shipped_records", "Inbox records uploaded to the object store", ship["shipped_records"])
        yield gauge("flk_crr_ship_failures", "Consecutive shipping failures (backing off)", ship["failures"])
        yield gauge("flk_crr_paused", "1 while crr.pause exists", 1.0 if m["paused"] else 0.0)
        if "read" in m:
            rd, rc = m["read"], m["reconcile"]
            yield counter("flk_crr_applied_records", "Replicated records replayed here", rd["applied_records"])
            yield gauge("flk_crr_rejected_streams", "Streams stopped at a rejected segment", len(rd["rejected"]))
            yield gauge("flk_crr_read_stalled_seconds", "Seconds the dedup store has refused the replicated "
                        "records waiting to be applied (0: the reader makes progress)", rd["stalled_s"])
            yield gauge("flk_crr_read_parked_records", "Replicated records a partial dedup store answer refused "
                        "(one shard down), retried with a backoff while the others are applied", rd["parked"])
            yield counter("flk_crr_quarantined_records", "Replicated records whose replay raised, set aside "
                          "(read-quarantine.jsonl) while the stream went on", rd["quarantine"]["count"])
            yield counter("flk_crr_conflicts", "Keys seen with two or more payload digests", rc["conflicts"])
            yield gauge("flk_crr_open_conflicts", "Conflicts awaiting review", rc["open_conflicts"])
            yield counter("flk_crr_authoritative_changes", "Authoritative outcomes replaced by an earlier one",
                          rc["authoritative_changes"])
        if "audit_queue" in m:
            yield gauge("flk_crr_audit_backlog", "Audit items queued or waiting for a retry", m["audit_queue"]["backlog"])
            yield gauge("flk_crr_audit_dead_letters", "Audit items in the dead-letter queue",
                        m["audit_queue"]["dead_letters"])
        if "divergence" in m:
            yield gauge("flk_crr_divergence_severity", "Worst divergence severity (0 ok, 1 warning, 2 critical)",
                        severity_level(d["severity"] for d in m["divergence"]))
            unseen = GaugeMetricFamily("flk_crr_peer_unseen_periods", "Consecutive divergence periods checked "
                                       "without this peer region's summary (down, cut off, or another period)",
                                       labels=["worker", "peer"])
            for peer, periods in sorted(m["divergence_unseen"].items()):
                unseen.add_metric([w, peer], float(periods))
            yield unseen


# -- the server's hooks (call from Server.start / Server.stop) --------------------------------

def start_for_server(cfg: CrrConfig | None, *, wal: SegmentedLog, store: DedupStore, verifier: Verifier,
                     data_dir: str, worker: int = 0, volatile_store: bool = False,
                     log: Callable[..., None] | None = None,
                     registry: CollectorRegistry | None = None, seal_lock: Any = None) -> CrrService | None:
    """Start replication for one ``flk serve`` worker if configured (``cfg`` not None; else None).

    It takes exactly what replication needs, not the whole server: the worker's inbox
    ``wal``, its dedup ``store``, the ``verifier`` that replays peers' records, ``data_dir``
    (replication state), ``worker`` (its stream), ``volatile_store`` (a memory store: the
    reader restarts from the beginning), ``log(event, **fields)`` for warnings, the
    Prometheus ``registry`` that /metrics serves (the ``flk_crr_*`` families) and the
    submit batch driver's lock (``seal_lock``: a seal waits for the running batch, so a
    sealed segment's manifest carries the answers of all its records)."""
    if cfg is None:
        return None

    def warn(event: str, **kw: Any) -> None:
        if log is not None:
            log(event, **kw)

    svc = CrrService(cfg, wal=wal, dedup_store=store, verifier=verifier, data_dir=data_dir, worker=worker,
                     log=warn, volatile_store=volatile_store, seal_lock=seal_lock)
    if registry is not None:
        registry.register(CrrCollector(svc))
    return svc.start()


def stop_for_server(svc: CrrService | None) -> None:
    if svc is not None:
        svc.stop()


def mount_app(get_service: Callable[[], CrrService | None]):
    """The ASGI app to mount for ``GET /v1/pcs/{pcs_id}/authoritative``,
    ``GET /v1/crr/conflicts`` and ``GET /v1/crr/status`` (503 problem+json
    while replication is off)."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    app = authoritative_app(lambda: (s.reconciler if (s := get_service()) is not None else None))

    async def status(request):
        svc = get_service()
        if svc is None:
            return problem_response("replication-disabled", "cross-region replication is not configured")
        return JSONResponse(svc.metrics())

    app.router.routes.append(Route("/v1/crr/status", status, methods=["GET"]))
    app.router.routes.append(Route("/v1/crr/decisions", decision_endpoint(get_service), methods=["POST"]))
    return app


def decision_endpoint(get_service: Callable[[], CrrService | None]):
    """``POST /v1/crr/decisions`` ``{"tenant", "pcs_id", "approve": bool, "by"}``: an
    operator's review decision on a queued conflict (:meth:`Reconciler.decide`) ->
    200 the updated record; 400 ``invalid-query`` for a malformed body, 409
    ``no-review-pending`` when the key has no conflict awaiting review, 503 while
    replication is off."""

    from starlette.responses import JSONResponse

    async def decide(request):
        svc = get_service()
        if svc is None:
            return problem_response("replication-disabled", "cross-region replication is not configured")
        try:
            doc = parse_strict(await request.body())  # strict JSON: no duplicate keys (openapi)
        except ValueError:
            doc = None
        fields = {"tenant": str, "pcs_id": str, "approve": bool, "by": str}
        if not isinstance(doc, dict) or set(doc) != set(fields) or any(
                not isinstance(doc[k], t) or (t is str and not doc[k]) for k, t in fields.items()):
            return problem_response("invalid-query", 'body must be {"tenant": str, "pcs_id": str, '
                                    '"approve": bool, "by": str} with non-empty strings')
        try:
            rec = svc.reconciler.decide(doc["tenant"], doc["pcs_id"], doc["approve"], doc["by"][:200],
                                        svc.clock())
        except InvalidInput:
            return problem_response("no-review-pending", "no conflict awaiting review for this tenant and pcs_id")
        return JSONResponse({"tenant": doc["tenant"], "pcs_id": doc["pcs_id"], **rec.as_dict()})

    return decide


def routes(get_service: Callable[[], CrrService | None]) -> list:
    """Starlette routes to add to the server's route list (same endpoints as :func:`mount_app`)."""
    return list(mount_app(get_service).router.routes)


def handles(path: str) -> bool:
    """True for the paths :func:`mount_app` serves."""
    return path.startswith("/v1/crr/") or (path.startswith("/v1/pcs/") and path.endswith("/authoritative"))
