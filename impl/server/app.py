"""The Starlette application: HTTP in, pipeline effects carried out, HTTP out.

Why this module exists: it is the *driver* of the sans-I/O verify pipeline
(:class:`flk.impl.verifier.pipeline.Verifier`) over real storage. It decides nothing
about the protocol -- parsing, verification, dedup decisions and the problem
responses are the pipeline's. What it does:

* admission before the pipeline: the body limit (413) and the AIMD
  concurrency limit (429 + ``Retry-After``) -- the only answers INV-WAL-FIRST
  allows before the inbox WAL record is durable;
* the rest of a submission runs in a batch (:mod:`.batchdriver`): one thread runs
  the pipeline's ``run_requests`` per batch -- the batch's inbox WAL records
  appended and synced once before any answer, dedup reads and writes in bulk
  behind a circuit breaker (a failure answers 503 + ``Retry-After``), metrics
  events counted -- and hands the answers back to the event loop in one call;
* on start, replay of this worker's inbox WAL through the same pipeline
  (idempotent: first-write-wins makes a second application a no-op,
  INV-IDEMPOTENT-REPLAY) *before* it serves a request; a record whose
  processing raises is quarantined (``quarantine.jsonl`` beside the WAL), never
  a reason not to start;
* a WAL that failed (ENOSPC, EIO) is probed with backoff and recovered in
  place (:class:`flk.impl.storage.walhealth.WalHealth`); meanwhile submissions
  get 503 + ``Retry-After`` before the WAL;
* on shutdown (after uvicorn drained the in-flight requests): the batch thread
  stops after its last batch, then fsync and close of WAL and store.

Other endpoints: ``GET /health`` (the process is alive and its WAL has not
been failing beyond the bounds), ``GET /ready`` (store ping + WAL usable; WAL
state and quarantine in the body), ``GET /metrics`` (Prometheus text), ``GET /openapi.json``
(``spec/openapi.yaml`` as JSON), the replication and shard ops routes. Who may
call which (the operator credential, signed tenant reads, one ``X-Tenant-Id``
rule) is :mod:`.auth`; :func:`protected_routes` puts every operator and
tenant-read route behind its check. The route table is honest: the submit
route's handler is :class:`SubmitEndpoint`, which the fast path also calls
directly; the HTTP protocol's direct path (:class:`DirectSubmit`,
:meth:`Server.submit_direct`) answers a submission whose body it holds whole the same
way without an ASGI task. Limits below the routes (header sizes, slow clients, connections)
are :mod:`.httpguard`'s. Every error, including 404 and 405, is
``application/problem+json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import pathlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..core import textdata
from ..core.tenantid import TENANT_ID_RULE, is_tenant_id
from ..dedup.base import READY_PING_TIMEOUT_S
from ..storage.quarantine import FILE_NAME as QUARANTINE_FILE
from ..storage.quarantine import Quarantine
from ..storage.threads import name_pool_thread
from ..storage.walformat import WalCorruption
from ..storage.walhealth import WalHealth
from ..verifier.admission import STATE_CODES, AdmissionSettings, build_admission
from ..verifier.metrics import HTTP_LATENCY_BUCKETS
from ..verifier.pipeline import MAX_TENANT_HEADER
from ..verifier.problems import SUBMIT_STATUSES, problem_body, problem_type
from .auth import OperatorAuth, Refusal, check_tenant_read, single_header
from .batchdriver import BatchDriver, GuardedStore, LoggedWal
from .config import ServerConfig
from .logs import JsonLogger
from .problems import PROBLEM_JSON, problem, problem_for_status
from .reload import TenantsReload

SPEC_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "spec"


def openapi_document() -> dict:
    """``spec/openapi.yaml`` as a dict (the served /openapi.json)."""
    import yaml

    path = SPEC_DIR / "openapi.yaml"
    if not path.exists():  # installed (non-editable) layout: flk.spec package data
        from importlib.resources import files

        return yaml.safe_load(files("flk.spec").joinpath("openapi.yaml").read_text(encoding="utf-8"))
    return yaml.safe_load(path.read_text(encoding="utf-8"))


GENERATION_FILE = "dedup-generation.json"
STORE_LOST_RECOVERY = ("writes are refused (503) until an operator recovers: restart the workers with "
                       "DEDUP_REBUILD=1 to accept the store as new and rebuild it from the inbox WAL "
                       "(SPEC.md 9.1), or restore the store's data and restart")


class WalDirBusy(RuntimeError):
    """Another live process holds this inbox WAL directory."""


class FailureWatch:
    """The dedup store as the submit batches call it, counting the calls that raised
    (a clean stop writes a WAL checkpoint only when none did)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.failures = 0
        if callable(getattr(store, "put_many_fresh_if_absent", None)):  # the SQLite store's fresh-outcome write
            self.put_many_fresh_if_absent = self._put_many_fresh

    def get_many(self, keys: list, now: float) -> list:
        try:
            return self.store.get_many(keys, now)
        except BaseException:
            self.failures += 1
            raise

    def put_many_if_absent(self, items: list, now: float, ttl_s: float | None = None) -> list:
        try:
            return self.store.put_many_if_absent(items, now, ttl_s)
        except BaseException:
            self.failures += 1
            raise

    def _put_many_fresh(self, items: list, fresh: tuple, now: float, ttl_s: float | None = None) -> list:
        try:
            return self.store.put_many_fresh_if_absent(items, fresh, now, ttl_s)
        except BaseException:
            self.failures += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def lock_wal_dir(wal_dir: str) -> int:
    """An exclusive ``flock`` on ``<wal_dir>.lock``; returns the fd (kept open for
    the worker's life). Two servers on one DATA_DIR would interleave appends to
    one log -- this refuses the second instead."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(wal_dir)), exist_ok=True)
    fd = os.open(wal_dir.rstrip("/") + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WalDirBusy(f"inbox WAL {wal_dir} is in use by another process") from None
    return fd


class ServerMetrics:
    """The driver's own metrics, registered next to the pipeline's."""

    def __init__(self, registry, worker: int) -> None:
        self.requests = Counter("flk_http_requests", "HTTP responses by route and status",
                                ["route", "status"], registry=registry)
        for status in SUBMIT_STATUSES:  # at 0 from the start: rate() sees the first 503s and 429s too
            self.requests.labels(route="/v1/pcs/submit", status=str(status))
        self.latency = Histogram("flk_http_latency_seconds", "Submit latency measured by the server",
                                 buckets=HTTP_LATENCY_BUCKETS,
                                 registry=registry)
        self.limit = Gauge("flk_inflight_limit", "AIMD concurrency limit", registry=registry)
        self.inflight = Gauge("flk_inflight", "Verifications in flight", registry=registry)
        self.overloaded = Counter("flk_overloaded", "Submissions refused by the concurrency limit (429)",
                                  registry=registry)
        self.breaker = Gauge("flk_store_breaker_state", "Dedup store breaker: 0 closed, 1 half-open, 2 open",
                             registry=registry)
        self.breaker_rejected = Gauge("flk_store_breaker_rejected", "Store calls refused by the open breaker "
                                      "(cumulative, this worker)", registry=registry)
        self.store_batches = Gauge("flk_store_batches", "Batched store calls (cumulative, this worker)",
                                   registry=registry)
        self.store_batched_items = Gauge("flk_store_batched_items", "Items in batched store calls "
                                         "(cumulative, this worker)", registry=registry)
        # the SQLite store's background checkpoint (flk.impl.dedup.sqlite: absent for other stores)
        self.checkpoints = Gauge("flk_store_checkpoints", "SQLite WAL checkpoints run by the store's own thread "
                                 "(cumulative, this worker)", ["outcome"], registry=registry)
        # a log-layout SQLite file's key index in this worker's memory (absent for other stores and layouts)
        self.index_keys = Gauge("flk_store_index_keys", "Rows the SQLite store's in-memory key index holds "
                                "(log layout, this worker)", registry=registry)
        self.index_bytes = Gauge("flk_store_index_bytes", "Bytes of the SQLite store's in-memory key index "
                                 "table (log layout with the compiled rows, this worker)", registry=registry)
        self.replayed = Counter("flk_wal_replayed", "Inbox WAL records replayed at start", registry=registry)
        self.quarantined = Counter("flk_wal_quarantined", "Inbox WAL records the start-up replay set aside as "
                                   "poison (quarantine.jsonl beside the WAL)", registry=registry)
        self.wal_recoveries = Counter("flk_wal_recoveries", "Inbox WAL recoveries after a failed write or fsync "
                                      "(without a restart)", registry=registry)
        self.worker = Gauge("flk_worker_info", "A worker whose series this answer carries", ["worker"],
                            registry=registry)
        self.worker.labels(worker=str(worker)).set(1)


class Server:
    """Per-worker state; built by the lifespan, used by the endpoints."""

    def __init__(self, cfg: ServerConfig, worker: int) -> None:
        self.cfg = cfg
        self.worker = worker
        self.log = JsonLogger(level=cfg.log_level, worker=worker, redact=cfg.redact)
        self.admission = build_admission(AdmissionSettings.from_config(cfg))  # the simulator's regions too
        self.limiter = self.admission.limiter
        self.breaker = self.admission.breaker
        self.executor: ThreadPoolExecutor | None = None
        self.store: Any = None
        self.batcher: GuardedStore | None = None  # the store as the submit batches call it (breaker, counts)
        self.wal: Any = None
        self.driver: BatchDriver | None = None  # the submit path: run_requests per batch on one thread
        self.pipeline: Any = None
        self.crr: Any = None  # flk.impl.replication.service.CrrService when replication is configured
        self.metrics: Any = None
        self.smetrics: ServerMetrics | None = None
        self.openapi: bytes = b"{}"
        self.ready = False
        self._counters: dict = {}
        self._wire: dict = {}  # pipeline header tuples -> ASGI header lists (see _wire_headers)
        self._wal_lock: int | None = None
        self.operator = OperatorAuth(cfg.operator_user, cfg.operator_pass)
        self.wal_fs: Any = None  # the inbox WAL's FileSystem (None: the OS); tests inject faults here
        self.wal_health = WalHealth()  # probes a failed WAL; /ready, /health and the submit gate read it
        self.wal_poll_s = 0.1
        self._wal_watch: asyncio.Task | None = None
        self._checkpoint_watch: asyncio.Task | None = None
        self.checkpointer: Any = None  # running WAL checkpoints (flk.impl.storage.checkpoint.Checkpointer)
        self.checkpoint_poll_s = 1.0
        self.quarantine: Any = None  # poison records of the start-up replay (flk.impl.storage.quarantine)
        self._quarantined: list[dict] = []  # this start's, for the audit log once replication runs
        self.generation: dict = {"checked": False}  # the dedup store's generation marker (data loss detection)
        self._store_watch: asyncio.Task | None = None
        self._lost_reported = False
        self.store_poll_s = 1.0
        self._submit_5xx = 0
        self._wal_ever_failed = False  # an append or fsync failed since the start: no checkpoint at stop
        self.siem: Any = None  # flk.impl.governance.siem.SiemForwarder when SIEM_ADDRESS is set
        self.scrape: Any = None  # several workers: /metrics carries all of them (flk.impl.server.workermetrics)
        self.tenants_reload: Any = None  # SIGHUP: flk.impl.server.reload.TenantsReload

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        from ..storage.wal import SegmentedLog
        from ..verifier.metrics import Metrics
        from .pipeline import build_pipeline

        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for d in (cfg.data_dir, cfg.wal_dir):
            os.makedirs(d, exist_ok=True)
        self.executor = ThreadPoolExecutor(cfg.store_threads, thread_name_prefix="dedup", initializer=name_pool_thread)
        self.metrics = Metrics(max_tenants=cfg.metrics_max_tenants)
        self.smetrics = ServerMetrics(self.metrics.registry, self.worker)
        # WAL disk use, dedup store call time, estimable KPIs (flk.impl.server.opsmetrics)
        from .opsmetrics import OpsCollector, counter_sum

        self.metrics.registry.register(OpsCollector(lambda: self.wal.dir if self.wal else None, lambda: self.batcher,
                                                    counter_sum(self.metrics.registry)))
        self.openapi = json.dumps(openapi_document()).encode()
        self.store = await loop.run_in_executor(self.executor, cfg.open_store, time.time())
        self.generation = await loop.run_in_executor(self.executor, self._adopt_generation)
        self.batcher = GuardedStore(FailureWatch(self.store), self.breaker, log=self.log.log)
        wal_dir = cfg.worker_wal_dir(self.worker)
        self._wal_lock = lock_wal_dir(wal_dir)  # one process per inbox WAL, released when it dies
        self.wal = await loop.run_in_executor(None, lambda: SegmentedLog(wal_dir, fs=self.wal_fs,
                                                                         preallocate=self.cfg.wal_preallocate))
        self.quarantine = Quarantine(os.path.join(wal_dir, QUARANTINE_FILE), self.wal.fs)
        if self.wal.recovery.get("torn_tail"):
            self.log.warning("wal_torn_tail_truncated", wal_dir=wal_dir,
                             bytes=self.wal.recovery["torn_tail"]["dropped_bytes"])
        self.tenants_reload = TenantsReload(cfg, self.log, self.metrics.registry,  # before the pipeline reads
                                            lambda: self.pipeline.verifier, self._use_verifier)
        self.pipeline = build_pipeline(cfg, self)
        tee = self._start_siem() if cfg.siem is not None else None
        self.driver = BatchDriver(self.pipeline.verifier, LoggedWal(lambda: self.wal, self.log.error), self.batcher,
                                  self.metrics,
                                  max_delay_s=cfg.wal_group_delay_ms / 1000.0, depth=cfg.wal_pipeline_depth, tee=tee)
        self.checkpointer = self._make_checkpointer()
        if self.store_lost() is None:
            from_index = self._replay_from()
            self.checkpointer.started_from(from_index)
            replayed = await self.pipeline.replay_wal(self.wal, from_index)
            replayed["from_index"] = from_index
            await loop.run_in_executor(self.executor, self._checkpoint)
        else:  # the WAL is kept for the rebuild (DEDUP_REBUILD=1); nothing is written meanwhile
            replayed = {"records": 0, "stored": 0, "errors": 0, "quarantined": 0}
            self.log.error("wal_replay_skipped", reason="dedup store lost its data",
                           detail="writes refused; restart with DEDUP_REBUILD=1 to rebuild it from the inbox WAL")
        self.smetrics.replayed.inc(replayed["records"])
        self.log.info("wal_replayed", wal_dir=wal_dir, records=replayed["records"], stored=replayed["stored"],
                      errors=replayed["errors"],
                      note=f"{replayed['quarantined']} record(s) quarantined; from index "
                           f"{replayed.get('from_index', 0)} (checkpoint)")
        await self._start_replication()
        if cfg.workers > 1 and multiprocessing.parent_process() is not None:  # a worker of the supervisor's
            from .workermetrics import WorkerScrape

            self.scrape = WorkerScrape(cfg.data_dir, self.worker, cfg.workers, self.metrics.exposition).start()
        self._wal_watch = asyncio.create_task(self._watch_wal())
        self._store_watch = asyncio.create_task(self._watch_store())
        self._checkpoint_watch = asyncio.create_task(self._watch_checkpoints())
        self._report_store_lost()
        self.tenants_reload.install(loop)  # SIGHUP: the tenants file read again (flk.impl.server.reload)
        self.ready = True
        self.log.info("worker_ready", pid=os.getpid(), dedup_backend=cfg.dedup_backend)

    async def _start_replication(self) -> None:
        """The replication service (None unless ``CRR_*`` is configured), told of this start's
        quarantined records."""
        from ..replication.service import start_for_server

        cfg = self.cfg
        crr = functools.partial(start_for_server, cfg.crr, wal=self.wal, store=self.store,
                                verifier=self.pipeline.verifier, data_dir=cfg.data_dir, worker=self.worker,
                                volatile_store=cfg.dedup_backend == "memory", log=self.log.warning,
                                registry=self.metrics.registry, seal_lock=self.driver.lock)
        self.crr = await asyncio.get_running_loop().run_in_executor(None, crr)
        if self.crr is not None:
            for entry in self._quarantined:
                self.crr.audit_quarantined(entry)

    def _use_verifier(self, verifier: Any) -> None:
        """(Event loop.) The reloaded tenants' verifier, for every holder: the next submit batch,
        tenant reads, and cross-region replay from the replication thread's next step."""
        self.pipeline.verifier = verifier
        self.driver.verifier = verifier
        if self.crr is not None:
            self.crr.set_verifier(verifier)

    async def stop(self) -> None:
        self.ready = False
        loop = asyncio.get_running_loop()
        if self.tenants_reload is not None:
            self.tenants_reload.uninstall()
        if self.scrape is not None:
            await loop.run_in_executor(None, self.scrape.stop)
        for task in (self._wal_watch, self._store_watch, self._checkpoint_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.crr is not None:  # before the WAL it ships is closed
            from ..replication.service import stop_for_server

            await loop.run_in_executor(None, stop_for_server, self.crr)
        if self.driver is not None:
            await loop.run_in_executor(None, self.driver.close)  # the last batches, each synced
            # where the submissions' time in the batch driver went (mean microseconds per request)
            self.log.info("submit_stages", **self.driver.stages.as_dict())
            if self.ready_to_checkpoint():  # every batch stored its outcomes: the next start replays nothing
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(None, self._checkpoint)
        if self.wal is not None:
            def close_wal() -> None:
                with contextlib.suppress(Exception):
                    self.wal.sync()
                self.wal.close()

            await loop.run_in_executor(None, close_wal)
        if self.siem is not None:  # after the last batch: its events are queued; drain them (5 s at most)
            await loop.run_in_executor(None, self.siem.close, 5.0)
            self.log.info("siem_stopped", acked=self.siem.acked(), pending=self.siem.pending(),
                          dropped=self.siem.dropped)
        if self._wal_lock is not None:
            os.close(self._wal_lock)  # releases the flock
            self._wal_lock = None
        if self.store is not None:
            await loop.run_in_executor(self.executor, self.store.close)
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.log.info("worker_stopped", pid=os.getpid())

    # -- audit streaming to a SIEM (SPEC.md 9.2 SIEM_*, GOVERNANCE.md "Audit streaming") -----
    def _start_siem(self) -> Any:
        """Start this worker's forwarder (stream ``<region>-w<worker>``, spool
        ``SIEM_SPOOL_DIR/worker-<n>``); the batch driver's tee sink. The tee only queues
        (:meth:`SiemForwarder.submit`): a SIEM that is down never slows or fails a submission."""
        import re
        import socket

        from ..governance.siem import SiemForwarder, SiemStream, Spool, pipeline_sink

        cfg, siem = self.cfg, self.cfg.siem
        hostname = re.sub(r"[^!-~]", "", socket.gethostname())[:48] or "flk"
        stream = SiemStream(Spool(os.path.join(siem.spool_dir, f"worker-{self.worker}")),
                            f"{cfg.region_id[:40]}-w{self.worker}", hostname)

        def dropped(count: int) -> None:
            self.log.warning("siem_events_dropped", dropped=count, max_events=siem.spool_max_events,
                             detail="the SIEM spool or inbox is full: new audit events are dropped until it drains")

        self.siem = SiemForwarder(stream, siem.host, siem.port, siem.tls_context(), server_name=siem.server_name,
                                  max_spool=siem.spool_max_events, on_drop=dropped).start()
        registry = self.metrics.registry
        Gauge("flk_siem_dropped_events", "Audit events dropped because the SIEM spool was full (since start)",
              registry=registry).set_function(lambda: self.siem.dropped)
        Gauge("flk_siem_pending_events", "Audit events not yet acknowledged by the SIEM",
              registry=registry).set_function(lambda: self.siem.pending())
        self.log.info("siem_streaming", address=f"{siem.host}:{siem.port}", stream=stream.stream,
                      spooled=stream.spool.last - stream.spool.acked)
        return pipeline_sink(self.siem.submit, cfg.region_id)

    def _siem_auth_failure(self, request: Request, refusal: Refusal) -> None:
        if self.siem is not None and refusal.slug in ("unauthorized", "forbidden"):
            client = request.scope.get("client")
            self.siem.submit("auth_failure", {"route": request.url.path, "method": request.method,
                                              "reason": refusal.slug, "client": client[0] if client else None,
                                              "region": self.cfg.region_id})

    # -- dedup store data loss (generation marker) ------------------------------------
    def _adopt_generation(self) -> dict:
        """(Worker thread, at start.) Compare the store's generation marker with the one
        this deployment recorded in ``DATA_DIR/dedup-generation.json``: write one on the
        store's first use (or adopt the store's when the data dir is new); a marker that
        is gone or different means the store lost or replaced its data -- writes are
        refused (``store.lost``) unless DEDUP_REBUILD=1, which stamps a new marker and
        lets the start-up replay rebuild the store from the inbox WAL."""
        import hashlib
        import uuid

        from ..dedup.base import generation_problem

        store, cfg = self.store, self.cfg
        if not hasattr(store, "expect_generation"):
            return {"checked": False, "why": f"{cfg.dedup_backend} keeps its data with the server's own disk"}
        path = os.path.join(cfg.data_dir, GENERATION_FILE)
        ident = hashlib.sha256(f"{cfg.dedup_backend}|{cfg.store_url()}|{cfg.dedup_namespace}".encode()).hexdigest()[:16]
        try:
            with open(path, encoding="utf-8") as fh:
                known_all = textdata.json_load(fh)
        except FileNotFoundError:
            known_all = {}
        except (OSError, ValueError):
            known_all = {}
        known = known_all.get(ident) if isinstance(known_all, dict) else None
        found = store.read_generation()
        status = {"checked": True, "rebuilt": False}
        if known is None:
            marker = store.create_generation(uuid.uuid4().hex)  # first use, or a new data dir adopts it
        elif found == known:
            marker = known
        elif cfg.dedup_rebuild:
            # the marker another worker of this rebuild may have written already is adopted
            # (stamping one per worker would make the others see a replaced store)
            marker = store.create_generation(uuid.uuid4().hex)
            store.lost = None
            status["rebuilt"] = True
            self.log.warning("dedup_store_rebuild", reason=generation_problem(known, found),
                             detail="DEDUP_REBUILD=1: new generation marker; the inbox WAL replay rebuilds the store")
        else:
            store.lost = generation_problem(known, found)
            store.expected_generation = known
            return {**status, "lost": store.lost}
        known_all = known_all if isinstance(known_all, dict) else {}
        known_all[ident] = marker
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(known_all, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        store.expect_generation(marker)
        return status

    # -- WAL checkpoints (the decision and the file: flk.impl.storage.checkpoint) --
    def _store_ident(self) -> str:
        import hashlib

        cfg = self.cfg
        return hashlib.sha256(f"{cfg.dedup_backend}|{cfg.store_url()}|{cfg.dedup_namespace}".encode()).hexdigest()[:16]

    def _checkpoint_trusted(self) -> bool:
        """A checkpoint may skip records only for a store that keeps its outcomes across
        restarts and whose identity is known (not memory or sharded; not while rebuilding)."""
        return (self.cfg.dedup_backend in ("sqlite", "redis", "postgres") and not self.generation.get("rebuilt")
                and self.store_lost() is None)

    def _replay_from(self) -> int:
        from ..storage.checkpoint import replay_start

        return replay_start(self.wal, self._store_ident(), getattr(self.store, "expected_generation", None),
                            self._checkpoint_trusted())

    def _checkpoint(self) -> bool:
        """(Worker thread; no batch running.) Seal, write the checkpoint at the log's next
        index once the store says its outcomes are durable, apply the retention policy."""
        return self.checkpointer.checkpoint_now(time.monotonic())  # the schedule's clock (SPEC 11.9 rule 8)

    def _make_checkpointer(self) -> Any:
        from ..storage.checkpoint import Checkpointer

        cfg = self.cfg
        return Checkpointer(lambda: self.wal, self.driver.lock, lambda: self.store, self._store_ident(),
                            lambda: getattr(self.store, "expected_generation", None), self._checkpoint_trusted,
                            self.ready_to_checkpoint, every_records=cfg.wal_checkpoint_records,
                            every_s=cfg.wal_checkpoint_s, policy=cfg.wal_retention, shipped=self._shipped)

    def _shipped(self) -> int | None:
        """The replication shipper's persisted watermark (None: no replication; 0 while the
        shipper has not started): no segment at or above it leaves the log."""
        if self.cfg.crr is None:
            return None
        shipper = getattr(self.crr, "shipper", None)
        return 0 if shipper is None else shipper.persisted_watermark()

    async def _watch_checkpoints(self) -> None:
        """Running WAL checkpoints (:class:`flk.impl.storage.checkpoint.Checkpointer`)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.checkpoint_poll_s)
            mono = time.monotonic()  # a wall-clock step moves no checkpoint (SPEC 11.9 rule 8)
            if self.wal is None or self.wal.failed is not None or not self.checkpointer.due(mono):
                continue
            try:
                done = await loop.run_in_executor(self.executor, self.checkpointer.tick, mono)
            except Exception as exc:  # noqa: BLE001 -- a failed checkpoint only means more replay
                self.log.warning("wal_checkpoint_failed", reason=type(exc).__name__)
                continue
            if done["checkpoint"] is not None or done["retired"]:
                self.log.info("wal_checkpoint", records=done["checkpoint"],
                              note=f"{len(done['retired'])} segment(s) retired ({self.cfg.wal_retention})")

    def ready_to_checkpoint(self) -> bool:
        """At a clean stop: no store call and no WAL append failed since the start, so every
        record of the WAL was answered with its outcome stored (or needed none)."""
        watch = self.batcher.store if self.batcher is not None else None
        return (watch is not None and watch.failures == 0 and self.batcher.breaker_rejected == 0
                and self._submit_5xx == 0
                and self.wal is not None and self.wal.failed is None and not self._wal_ever_failed)

    def store_lost(self) -> str | None:
        return getattr(self.store, "lost", None)

    def _report_store_lost(self) -> None:
        """Log (error) and audit, once, that the store lost its data."""
        reason = self.store_lost()
        if reason is None or self._lost_reported:
            return
        self._lost_reported = True
        self.generation = {**self.generation, "lost": reason}
        self.log.error("dedup_store_lost", reason=reason, detail=STORE_LOST_RECOVERY)
        crr = self.crr
        if crr is not None and getattr(crr, "audit_queue", None) is not None:
            import hashlib

            crr._enqueue_audit(tenant="_system", outcome="dedup_store_lost", pcs_id="dedup-generation",
                               payload_digest=hashlib.sha256(reason.encode()).hexdigest(), now=time.time(),
                               region=self.cfg.region_id)

    async def _watch_store(self) -> None:
        """Ping the store every ``store_poll_s`` (a ping compares the generation marker):
        a store that came back empty is noticed without traffic."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.store_poll_s)
            if self.store_lost() is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(loop.run_in_executor(self.executor, self.store.ping),
                                           self.cfg.store_timeout_s + 1)
            self._report_store_lost()

    # -- poison records and WAL recovery ----------------------------------------------
    def quarantine_record(self, wal: Any, index: int, payload: bytes, error: BaseException) -> None:
        """Set a record the start-up replay cannot process aside (file beside the
        WAL, metric, log line without payload; audit once replication runs)."""
        entry = self.quarantine.add("inbox", index, wal.segment_of(index), payload, error, time.time(),
                                    worker=self.worker)
        if entry is None:  # quarantined by an earlier start
            return
        self._quarantined.append(entry)
        self.smetrics.quarantined.inc()
        self.log.error("wal_record_quarantined", wal_dir=self.wal.dir, records=index, reason=entry["reason"],
                       detail=f"segment {entry['segment']}, sha256 {entry['digest']}, {entry['bytes']} bytes; "
                              f"record kept in {QUARANTINE_FILE}" + ("" if entry["persisted"] else " (NOT written)"))

    def wal_available(self) -> bool:
        """False while the inbox WAL is known to refuse appends (submissions get a cheap 503)."""
        return self.wal is not None and self.wal.failed is None and self.wal_health.available

    async def _watch_wal(self) -> None:
        """Notice a failed inbox WAL and probe it with backoff until it recovers."""
        from ..storage.wal import WalError

        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.wal_poll_s)
            failure = self.wal.failed
            now = time.monotonic()
            if failure is not None:
                self._wal_ever_failed = True
            if failure is not None and self.wal_health.available:
                self.wal_health.failed(f"{type(failure).__name__}: {failure}"[:200], now)
                self.log.error("wal_failed", reason=self.wal_health.reason, detail="probing with backoff")
            if not self.wal_health.probe_due(now):
                continue
            try:
                info = await loop.run_in_executor(None, self._recover_wal)
            except (WalError, OSError) as exc:
                was_alive = self.wal_health.alive
                self.wal_health.probe_failed(f"{type(exc).__name__}: {exc}"[:200], time.monotonic())
                level = "error" if was_alive and not self.wal_health.alive else "warning"
                self.log.log(level, "wal_probe_failed", reason=self.wal_health.reason,
                             state=self.wal_health.state, detail=f"probe {self.wal_health.probes}")
                continue
            self.wal_health.recovered(time.monotonic())
            self.smetrics.wal_recoveries.inc()
            self.log.warning("wal_recovered", records=info["dropped_records"],
                             detail="unacknowledged records dropped; appends accepted again")

    def _recover_wal(self) -> dict:
        """(Worker thread.) Recover the failed log in place, never beside a batch's
        append (the batch driver's lock)."""
        with self.driver.lock:
            return self.wal.recover()

    # -- endpoints ------------------------------------------------------------------
    async def submit_asgi(self, scope, receive, send) -> None:
        """POST /v1/pcs/submit as raw ASGI: the hot path skips the framework's
        request/response objects (routing, 404/405 and every other endpoint stay
        in Starlette). Any failure answers 500 problem+json, never a traceback."""
        try:
            t0 = time.perf_counter()
            status, headers, body, tenant = self._submit_head(scope["headers"])
            if not status:
                chunks, size, limit = [], 0, self.cfg.max_body_bytes
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        status, headers, body = self._problem("payload-too-large", f"body exceeds {limit} bytes")
                        break
                    chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
                if not status:  # 503 / 429 before the WAL, or admitted (one limiter slot)
                    status, headers, body = self._admit()
                if not status:  # the batch driver's answer (no coroutine of its own: one frame less)
                    try:
                        resp = await self.driver.submit(b"".join(chunks), tenant)
                    except Exception as exc:  # noqa: BLE001 -- never a traceback to the client
                        status, headers, body = self._driver_answer(None, exc, t0)
                    except BaseException:  # cancelled: the slot is given back all the same
                        self.limiter.release(time.monotonic(), time.perf_counter() - t0, True)
                        raise
                    else:
                        status, headers, body = self._driver_answer(resp, None, t0)
            await send({"type": "http.response.start", "status": status,
                        "headers": headers + [(b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            self._account("/v1/pcs/submit", status, scope["method"], t0, tenant)
        except Exception as exc:  # noqa: BLE001 -- answer 500 problem+json, never a traceback
            self._submit_5xx += 1
            self.log.error("unhandled", reason=type(exc).__name__, path="/v1/pcs/submit")
            await problem("internal", "internal error")(scope, receive, send)

    def _driver_answer(self, resp: Any, error: BaseException | None, t0: float) -> tuple:
        """``(status, headers, body)`` of the batch driver's response ``resp`` (``error``: the
        driver raised: 500, logged); the request's limiter slot is released with its latency."""
        if error is None:
            ok = resp.status != 503
            status, headers, body = resp.status, self._wire_headers(resp.headers), resp.body
        else:
            ok = False
            self.log.error("submit_failed", reason=type(error).__name__)
            status, headers, body = self._problem("internal", "internal error; the request may be retried")
        lat = time.perf_counter() - t0
        self.limiter.release(time.monotonic(), lat, ok)
        self.metrics.tally.observe(self.smetrics.latency, lat)
        return status, headers, body

    def submit_direct(self, raw_headers: list, body: bytes, respond: Any) -> None:
        """POST /v1/pcs/submit whose whole body the HTTP protocol already holds (its direct
        path, :class:`flk.impl.server.httpguard.GuardedHttpToolsProtocol`: a ``Content-Length``
        within :attr:`DirectSubmit.max_body`): what :meth:`submit_asgi` answers, without an ASGI
        task, receive or send. ``respond(status, headers, body)`` is called once -- at once for
        a refusal before the WAL, else when the batch driver answered; ``headers`` without
        ``content-length`` (the protocol writes it after them, from ``body``); nothing raises."""
        t0 = time.perf_counter()
        try:
            status, headers, out, tenant = self._submit_head(raw_headers)
            if not status and len(body) > self.cfg.max_body_bytes:
                status, headers, out = self._problem("payload-too-large", f"body exceeds {self.cfg.max_body_bytes} bytes")
            if not status:  # 503 / 429 before the WAL, or admitted (one limiter slot)
                status, headers, out = self._admit()
            if not status:
                try:  # the answer comes to _direct_done on this loop (no future: one hop fewer)
                    self.driver.submit_then(body, tenant, functools.partial(self._direct_done, respond, t0, tenant))
                except Exception as exc:  # noqa: BLE001 -- as submit_asgi: 500, the slot given back
                    status, headers, out = self._driver_answer(None, exc, t0)
                else:
                    return
            self._direct_respond(respond, status, headers, out, t0, tenant)
        except Exception as exc:  # noqa: BLE001 -- answer 500 problem+json, never a traceback
            self._direct_failed(respond, exc)

    def _direct_done(self, respond: Any, t0: float, tenant: str | None, resp: Any,
                     error: BaseException | None) -> None:
        """(Event loop.) The batch driver answered a direct submission (``resp``, or ``error``)."""
        try:
            status, headers, out = self._driver_answer(resp, error, t0)
            self._direct_respond(respond, status, headers, out, t0, tenant)
        except Exception as exc:  # noqa: BLE001 -- answer 500 problem+json, never a traceback
            self._direct_failed(respond, exc)

    def _direct_respond(self, respond: Any, status: int, headers: list, body: bytes, t0: float,
                        tenant: str | None) -> None:
        respond(status, headers, body)
        self._account("/v1/pcs/submit", status, "POST", t0, tenant)

    def _direct_failed(self, respond: Any, exc: BaseException) -> None:
        self._submit_5xx += 1
        self.log.error("unhandled", reason=type(exc).__name__, path="/v1/pcs/submit")
        status, headers, body = self._problem("internal", "internal error")
        respond(status, headers, body)

    def _submit_head(self, raw_headers) -> tuple:
        """``(status, headers, body, tenant)``: a refusal that reads no body (duplicated
        ``X-Tenant-Id``, ``Content-Length`` invalid or too large), or status 0."""
        length = None
        for k, v in raw_headers:
            if k == b"content-length":
                length = v
        tenant, refusal = single_header(raw_headers, b"x-tenant-id")
        if refusal is not None:
            return (*self._problem(refusal.slug, refusal.detail), tenant)
        if tenant is not None and len(tenant) > MAX_TENANT_HEADER:  # a header problem, not a body one
            return (*self._problem("headers-too-large", f"X-Tenant-Id longer than {MAX_TENANT_HEADER} characters"),
                    None)
        limit = self.cfg.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            return (*self._problem("payload-too-large", f"Content-Length invalid or above {limit} bytes"), tenant)
        return 0, [], b"", tenant

    @staticmethod
    def _problem(slug: str, detail: str, retry_after: int | None = None):
        headers = [(b"content-type", PROBLEM_JSON.encode())]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        return problem_type(slug).status, headers, problem_body(slug, detail)

    def _wire_headers(self, pairs: tuple) -> list:
        """The pipeline's ``(name, value)`` headers as ASGI bytes pairs (lower-case names);
        the few distinct header sets are converted once (callers never mutate the list)."""
        wire = self._wire.get(pairs)
        if wire is None:
            wire = [(k.lower().encode(), v.encode()) for k, v in pairs]
            if len(self._wire) < 64:
                self._wire[tuple(pairs)] = wire
        return wire

    def _admit(self) -> tuple:
        """``(status, headers, body)`` of a submission refused before the WAL -- 503 while the
        inbox WAL refuses appends (retries must not refill a full disk), 429 beyond the
        concurrency limit -- or ``(0, [], b"")``: admitted, one limiter slot taken (the caller
        releases it with the request's latency)."""
        if not self.wal_available():  # before the WAL: retries must not refill a full disk
            return self._problem("wal-unavailable", "the inbox WAL cannot record requests now "
                                 "(disk full or failing); nothing was recorded; retry after Retry-After",
                                 self.wal_health.retry_after(time.monotonic(), self.cfg.retry_after_s))
        if not self.limiter.try_acquire(time.monotonic()):
            self.smetrics.overloaded.inc()
            return self._problem("overloaded", "too many verifications in flight; retry later",
                                 self.limiter.retry_after())
        return 0, [], b""

    def refusal_response(self, request: Request, refusal: Refusal) -> Response:
        self._siem_auth_failure(request, refusal)
        return self._finish(request, time.perf_counter(), problem(refusal.slug, refusal.detail,
                                                                  headers=refusal.headers))

    def operator_refusal(self, request: Request) -> Refusal | None:
        """None when ``request`` carries the operator credential (SPEC.md 9.3); ``Authorization``
        given twice is ambiguous: 400 (the first one used to win)."""
        authorization, refusal = single_header(request.scope["headers"], b"authorization")
        if refusal is not None:
            return refusal
        return self.operator.check(authorization, request.scope.get("client"))

    def tenant_read_refusal(self, request: Request) -> Refusal | None:
        """None when ``request`` is a signed read of its own tenant, or an operator's (SPEC.md 9.3)."""
        raw = request.scope["headers"]
        tenant, refusal = single_header(raw, b"x-tenant-id")
        authorization, twice = single_header(raw, b"authorization")
        if refusal is not None or twice is not None:
            return refusal or twice
        operator = self.operator.check(authorization, request.scope.get("client"))
        if operator is None:  # the operator reads any tenant's record: it must name one, validly
            if tenant is None and self.cfg.multi_tenant:
                return Refusal("bad-request", "X-Tenant-Id is required in multi-tenant mode: the tenant "
                               "whose record to read")
            return None if tenant is None or is_tenant_id(tenant) else Refusal("bad-request",
                                                                              f"X-Tenant-Id: {TENANT_ID_RULE}")
        date, refusal = single_header(raw, b"x-flk-date")  # a signed read's headers once each, too
        signature, twice = single_header(raw, b"x-flk-signature")
        if refusal is not None or twice is not None:
            return refusal or twice
        registry = self.pipeline.verifier.tenants if self.pipeline is not None else None
        if registry is None:
            return Refusal("unauthorized", "tenant reads are not available before the worker is ready")
        return check_tenant_read(registry, request.method, request.url.path, tenant, date, signature, time.time(),
                                 self.cfg.read_auth_skew_s)

    def _finish(self, request: Request, t0: float, resp: Response) -> Response:
        self._account(request.scope["path"], resp.status_code, request.method, t0,
                      request.headers.get("x-tenant-id"))
        return resp

    def _account(self, path: str, status: int, method: str, t0: float, tenant: str | None) -> None:
        route = path if path in ROUTES else "other"
        if status >= 500 and route == "/v1/pcs/submit":
            self._submit_5xx += 1  # a request in the WAL may lack its outcome: no checkpoint at stop
        child = self._counters.get((route, status))
        if child is None:
            child = self._counters[(route, status)] = self.smetrics.requests.labels(route=route, status=str(status))
        self.metrics.tally.inc(child)
        # one line per request at debug; 5xx at warning. 4xx stay at debug so a flood of bad
        # requests cannot turn the log into an amplifier (they are counted in the metrics).
        level = "warning" if status >= 500 else "debug"
        if self.log.enabled(level):
            self.log.log(level, "request", method=method, path=route, status=status,
                         latency_ms=round((time.perf_counter() - t0) * 1000, 3), tenant=tenant)

    async def health(self, request: Request) -> Response:
        if not self.wal_health.alive:  # the inbox WAL failed and did not recover within the bounds
            status = self.wal_health.status(time.monotonic())
            return self._finish(request, time.perf_counter(), problem(
                "wal-unavailable", f"inbox WAL failed {status['failed_for_s']} s ago and {status['probes']} "
                f"probes did not recover it ({status['reason']}); free disk space or replace the volume, "
                "then restart the worker", wal=status))
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def ready_check(self, request: Request) -> Response:
        t0 = time.perf_counter()
        if not self.ready:
            return self._finish(request, t0, problem("not-ready", "starting or stopping"))
        wal_ok = self.wal_available()
        detail = {"wal": self.wal_health.status(time.monotonic()), "quarantine": self.quarantine.status()}
        disk = self.disk_status()
        detail["disk"] = disk
        loop = asyncio.get_running_loop()
        try:
            store_ok = await asyncio.wait_for(loop.run_in_executor(self.executor, self.store.ping),
                                              READY_PING_TIMEOUT_S)
        except Exception:  # noqa: BLE001 -- any failure means not ready
            store_ok = False
        lost = self.store_lost()
        if lost is not None:
            self._report_store_lost()
            store_ok = False
            detail["store_generation"] = {"lost": lost, "recovery": STORE_LOST_RECOVERY}
        if not (wal_ok and store_ok and disk["ok"]):
            what = [n for n, good in (("dedup store", store_ok), ("inbox WAL", wal_ok),
                                      (f"inbox WAL disk ({disk['free_bytes']} bytes free, "
                                       f"{disk['min_free_bytes']} needed)", disk["ok"])) if not good]
            retry = self.wal_health.retry_after(time.monotonic()) if not wal_ok else 1
            return self._finish(request, t0, problem(
                "not-ready", f"{' and '.join(what)} not usable", headers={"Retry-After": str(retry)}, **detail))
        body = {"status": "ready", "worker": self.worker, "store": self.cfg.dedup_backend,
                "breaker": self.breaker.state, **detail}
        return self._finish(request, t0, Response(json.dumps(body).encode(), media_type="application/json"))

    def disk_status(self) -> dict:
        """Free space of the inbox WAL's file system against what one more request needs
        (two bodies of MAX_BODY_BYTES plus 64 KiB of framing and segment metadata): a
        full disk makes /ready 503 before an append fails, not after."""
        need = 2 * self.cfg.max_body_bytes + 64 * 1024
        try:
            free = shutil.disk_usage(self.wal.dir).free
        except OSError:
            return {"ok": False, "free_bytes": None, "min_free_bytes": need}
        return {"ok": free >= need, "free_bytes": free, "min_free_bytes": need}

    async def metrics_endpoint(self, request: Request) -> Response:
        refusal = self.operator_refusal(request)
        if refusal is not None:
            return self.refusal_response(request, refusal)
        self.smetrics.limit.set(self.limiter.limit)
        self.smetrics.inflight.set(self.limiter.inflight)
        self.smetrics.breaker.set(STATE_CODES[self.breaker.state])
        if self.batcher is not None:
            self.smetrics.breaker_rejected.set(self.batcher.breaker_rejected)
            self.smetrics.store_batches.set(self.batcher.batches)
            self.smetrics.store_batched_items.set(self.batcher.batched_items)
        stats = self.store.checkpoint_stats() if hasattr(self.store, "checkpoint_stats") else None  # SQLite's
        for outcome, n in (stats or {}).items():  # done, restart, failed
            self.smetrics.checkpoints.labels(outcome=outcome).set(n)
        index = self.store.index_stats() if hasattr(self.store, "index_stats") else None  # a log-layout file's
        if index is not None:
            self.smetrics.index_keys.set(index["keys"])
            if index["bytes"] is not None:
                self.smetrics.index_bytes.set(index["bytes"])
        # rendered on a thread, not the event loop (the series are bounded by METRICS_MAX_TENANTS); with
        # several workers, every worker's series, each labelled worker (flk.impl.server.workermetrics)
        render = self.scrape.answer if self.scrape is not None else self.metrics.exposition
        text = await asyncio.get_running_loop().run_in_executor(None, render)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi_endpoint(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")


ROUTES = ("/v1/pcs/submit", "/health", "/ready", "/metrics", "/openapi.json")


class DirectSubmit:
    """The submit route as the HTTP protocol's direct path calls it (``app.direct_submit``):
    ``POST`` to :attr:`path` with a ``Content-Length`` of at most :attr:`max_body` bytes and
    the whole body read -- :meth:`Server.submit_direct`, the same answers as the ASGI route
    without its task and messages. Everything else (chunked, ``Expect: 100-continue``, a
    larger or missing length) takes the ASGI route."""

    path = "/v1/pcs/submit"

    def __init__(self, srv: Server, max_body: int) -> None:
        self.srv = srv
        self.max_body = max_body

    def __call__(self, raw_headers: list, body: bytes, respond: Any) -> None:
        self.srv.submit_direct(raw_headers, body, respond)


class SubmitEndpoint:
    """``POST /v1/pcs/submit`` as a raw ASGI endpoint (the route table's handler;
    the app's fast path calls the same object without Starlette's routing). A call
    returns :meth:`Server.submit_asgi`'s coroutine itself: no frame of its own."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv

    def __call__(self, scope, receive, send):
        return self.srv.submit_asgi(scope, receive, send)


def guarded(route: Route, check: Any, srv: Server) -> Route:
    """``route`` with ``check(request) -> Refusal | None`` run before its endpoint."""
    endpoint = route.endpoint

    async def run(request: Request) -> Response:
        refusal = check(request)
        if refusal is not None:
            return srv.refusal_response(request, refusal)
        return await endpoint(request)

    return Route(route.path, run, methods=sorted(route.methods - {"HEAD"}) if route.methods else None,
                 name=route.name)


def protected_routes(srv: Server, routes: list) -> list:
    """Operator endpoints behind the operator credential; the authoritative read behind
    the tenant's signed-read proof (SPEC.md 9.3)."""
    out = []
    for route in routes:
        if route.path.endswith("/authoritative"):
            out.append(guarded(route, srv.tenant_read_refusal, srv))
        else:
            out.append(guarded(route, srv.operator_refusal, srv))
    return out


def create_app(cfg: ServerConfig, worker: int = 0) -> Any:
    from ..dedup.sharded import routes as shard_routes
    from ..replication.service import routes as crr_routes
    from .operatorroutes import routes as operator_routes

    srv = Server(cfg, worker)
    submit = SubmitEndpoint(srv)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            await srv.start()
        except Exception as exc:
            hint = {"wal_dir": cfg.worker_wal_dir(worker), "note": "the log does not open with damage in it (SPEC "
                    "12.3): flk wal verify WAL_DIR lists every problem"} if isinstance(exc, WalCorruption) else {}
            srv.log.error("startup_failed", reason=cfg.redact(f"{type(exc).__name__}: {str(exc)[:180]}"), **hint)
            raise
        try:
            yield
        finally:
            await srv.stop()

    async def http_error(request: Request, exc: HTTPException) -> Response:
        t0 = time.perf_counter()
        if exc.status_code == 404:
            resp = problem("not-found", f"no route {request.url.path[:100]}")
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            resp = problem("method-not-allowed", f"{request.method} not allowed here",
                           headers={"Allow": allow} if allow else None)
        else:
            resp = problem_for_status(exc.status_code, str(exc.detail)[:200])
        return srv._finish(request, t0, resp) if srv.smetrics else resp

    async def server_error(request: Request, exc: Exception) -> Response:
        srv.log.error("unhandled", reason=type(exc).__name__, path=request.url.path[:100])
        return problem("internal", "internal error")

    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # the body never completed (the client left, or the HTTP guard dropped the request
        # for a body timeout or malformed framing): nothing was processed, nobody listens
        return problem("bad-request", "request body incomplete")

    app = Starlette(
        routes=[
            Route("/v1/pcs/submit", submit, methods=["POST"]),
            Route("/health", srv.health, methods=["GET"]),
            Route("/ready", srv.ready_check, methods=["GET"]),
            Route("/metrics", srv.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", srv.openapi_endpoint, methods=["GET"]),
            *protected_routes(srv, [
                *crr_routes(lambda: srv.crr),  # /v1/pcs/{pcs_id}/authoritative, /v1/crr/* (SPEC 11.8)
                *shard_routes(lambda: srv.store, time.time, problem),  # /api/shards/* (SPEC 13)
                *operator_routes(lambda: srv, problem),  # /api/operator/* (spec/OPERATOR.md)
            ]),
        ],
        exception_handlers={HTTPException: http_error, ClientDisconnect: client_gone, Exception: server_error},
        lifespan=lifespan,
    )
    # no 307 to the path with its trailing slash toggled: its Location came from the client's
    # Host header (/health/ -> http://<Host>/health); an unknown path is 404 problem+json (SPEC 9.1)
    app.router.redirect_slashes = False
    app.state.server = srv
    return fast_path(app, submit)


def _startup_failure_without_traceback(send: Any) -> Any:
    """The lifespan's ``send`` without the traceback Starlette writes into
    ``lifespan.startup.failed`` (uvicorn prints it): the lifespan logged ``startup_failed``
    with the reason as one JSON line, and uvicorn still says "Application startup failed".
    A refused start -- a damaged inbox WAL the log will not open (SPEC 12.3), a store gone --
    is the operator's to read, not a stack of frames."""

    async def quiet(message):
        if message.get("type") == "lifespan.startup.failed":
            message = {**message, "message": ""}
        await send(message)

    return quiet


def fast_path(app: Any, submit: SubmitEndpoint) -> Any:
    """The ASGI callable: ``POST /v1/pcs/submit`` straight to its handler (without the
    routing cost), everything else through ``app``; an exception Starlette re-raises after
    its 500 answer (server_error logged it) is not handed to uvicorn (no traceback)."""

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/pcs/submit":
            await submit(scope, receive, send)  # the route's own handler, without the routing cost
            return
        if scope["type"] == "lifespan":
            await app(scope, receive, _startup_failure_without_traceback(send))
            return
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        except Exception:  # noqa: BLE001 -- server_error logged it and answered 500; no traceback
            pass

    # the HTTP protocol's direct path for a submission whose body it holds whole (httpguard);
    # bodies above 64 KiB stream through the ASGI route (the protocol pauses reading there)
    asgi.direct_submit = DirectSubmit(submit.srv, min(submit.srv.cfg.max_body_bytes, 65536))  # type: ignore[attr-defined]
    asgi.state = app.state  # type: ignore[attr-defined]
    asgi.routes = app.routes  # type: ignore[attr-defined]  # the route table (tests and docs read it)
    return asgi
