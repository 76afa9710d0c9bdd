"""``flk bench verify``: in-process verify-pipeline throughput (PCS/s) per dedup store.

Every run pushes ``n`` distinct, validly signed PCS (built before timing starts)
through the full pipeline -- body limit, rate-limit hook, a *real* inbox WAL on
disk (:class:`flk.impl.storage.wal.SegmentedLog`, fsync per group), strict parse and
validation, HMAC verification, dedup lookup, signal recomputation, atomic
put-if-absent -- with :func:`flk.impl.verifier.core.run_requests` (the batch
driver without generators; ``run_batch`` over ``Verifier.handle`` generators is its
reference and answers the same): requests go in batches of ``batch`` that share one
WAL group commit and one store transaction (per-request exact; see the verifier's
docstring). Each run starts from an
empty store and an empty WAL. Figures are medians over ``repeat`` runs; the
ratio of each store to the memory store shows what the store costs.

``*_pcs_per_s`` is wall-clock throughput (the figure the goal is about);
``*_pcs_per_cpu_s`` divides by this process's CPU time instead, which on a
shared, loaded machine estimates what one free core would do (it leaves out
time spent waiting for fsync and -- for Redis/Postgres -- in the server). The
1-minute load average at the start is reported with the figures.

Redis and Postgres come from ``FLK_BENCH_REDIS_URL`` / ``FLK_BENCH_POSTGRES_DSN``
or else ``.services.env`` (``bash scripts/services.sh up``); a store that is not
reachable is reported as skipped, never faked.

Two kinds of PCS are pushed: *realistic* ones -- what ``flk agent
build`` emits and the submit client sends: compact JSON with the optional
``seed`` (a uint64), ``sig_alg``, nine-digit signals, a two-component
``v_star``, then ``attempt`` and ``sent_at`` (every third one also ``meta``,
every second ``ft``) -- and *minimal* ones (the fifteen required fields only).
``{store}_pcs_per_s`` is the realistic figure (the goal is about it),
``{store}_minimal_pcs_per_s`` the minimal one; ``{store}_us_per_pcs_cpu`` is
CPU microseconds per realistic PCS. Beside them the physical limits measured in
the same run: ``fsync_prealloc_ms_p50`` (a write of one batch's bytes + fsync on the
WAL's disk, into zeros written ahead as the inbox WAL writes; ``fsync_ms_p50``
appended), ``fsync_ceiling_pcs_per_s`` (one batch per fsync) and
``sqlite_one_core_ceiling_pcs_per_s`` (one free core at the measured CPU per
PCS); ``sqlite_ceiling_pcs_per_s`` is the lower of the two and
``goal_sqlite_within_ceiling`` says whether the goal fits under it (False: out of
reach at the measured CPU cost and disk). ``core_path`` says whether the compiled
core or the pure-Python one ran (``FLK_PURE=1`` forces the pure one);
``sqlite_rows_path`` whether the SQLite store's batch rows were the compiled ones
(``flk.impl.dedup._fastsqlite``) or their pure reference; ``sqlite_store_us_per_pcs_cpu``
is the SQLite store's own CPU cost per realistic PCS (its CPU per PCS minus the memory
store's, same run). The driver is one thread: the SQLite work the compiled rows do
without the GIL is still this thread's CPU time, so the one-core ceiling counts it.

The pipelined figure: ``sqlite_pipelined_pcs_per_s`` (with ``_us_per_pcs_cpu``, ``_runs``,
``_one_core_ceiling_pcs_per_s``, ``_ceiling_pcs_per_s``) drives the same core the way ``flk
serve`` drives it -- its own :class:`flk.impl.server.batchdriver.BatchDriver` (``LoggedWal``,
``GuardedStore``, a null metrics object) at ``WAL_PIPELINE_DEPTH`` 2, every realistic body
submitted at once on an asyncio loop and answered through futures: batch N+1 is appended
and verified while batch N's fsync runs on the driver's sync thread (the compiled rows
release the GIL). Its CPU per PCS counts every thread and includes what the server's
driver adds (futures, events, thread hand-offs). ``goal_sqlite_figure`` names the figure
``goal_sqlite_met`` / ``goal_sqlite_within_ceiling`` check (the one-thread ``sqlite_pcs_per_s``:
one durable fsync per batch before its answers, as the pipelined one);
``goal_sqlite_pipelined_met`` / ``goal_sqlite_pipelined_within_ceiling`` check the pipelined one.

The same-run anchor: ``anchor_us_per_pcs_cpu`` is the CPU time of the least any
verifier must do per realistic PCS -- ``json.loads`` of the body and one
HMAC-SHA256 over it, in a bare loop (no WAL, no store, no validation) -- measured
in the same run (median of ``repeat``); ``{store}_cpu_ratio_to_anchor`` divides a
store's CPU microseconds per PCS by it, a figure that holds across machines and
load better than PCS/s.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import hmac
import json
import os
import pathlib
import random
import shutil
import statistics
import tempfile
import time
import uuid

from ...agent import factory
from ...agent.client import prepare, rfc3339
from ...core import accel
from ...core.canonical import CORE_PATH, round9
from ...dedup import open_store
from ...dedup.sqlite import OPEN_ROWS
from ...server.supervisor import freeze_started_heap
from ...verifier.core import run_requests
from ...verifier.pipeline import Request, Verifier
from ...verifier.tenants import from_mapping

KEY = b"bench-tenant-key-0123456789"
NOW = 1_700_000_000.0
GOAL_SQLITE_PCS_PER_S = 50_000
PIPELINE_DEPTH = 2  # the server's WAL_PIPELINE_DEPTH of the pipelined figure
KINDS = ("memory", "sqlite", "redis", "postgres")


def _bodies(n: int, tag: str) -> list[bytes]:
    """``n`` minimal PCS bodies: the fifteen required fields, signed."""
    out = []
    for i in range(n):
        root = hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()
        doc = factory.synthetic_pcs(root, "shard-001", i, coh=0.5 + (i % 40) / 100, r=0.3 + (i % 50) / 100)
        out.append(json.dumps(factory.sign(doc, KEY)).encode())
    return out


def _realistic_bodies(n: int, tag: str) -> list[bytes]:
    """``n`` PCS bodies as an agent sends them (see the module docstring), signed."""
    rng = random.Random(tag)
    out = []
    for i in range(n):
        root = hashlib.sha256(f"{tag}-r{i}".encode()).hexdigest()
        doc = factory.synthetic_pcs(root, f"sensor-{i % 97:03d}.eu-west:2", i, **factory.random_signals(rng))
        doc["v_star"] = [round9(0.6 + (i % 7) * 1e-9), round9(-0.8 + (i % 11) * 1e-9)]  # published via round9
        doc["seed"] = rng.getrandbits(64)
        if i % 3 == 2:
            doc["meta"] = {"source": "line-4", "fw": "2.1.0"}
        doc = factory.sign(doc, KEY, set_alg=True)
        if i % 2:
            doc["ft"] = {"attempt": 1, "path": "edge-3"}
        head = prepare(doc).head  # what the submit client sends: attempt and sent_at appended
        out.append(head + b"%d" % (1 + i % 3) + b',"sent_at":"' + rfc3339(NOW + i / 1000).encode() + b'"}')
    return out


def _service(name: str) -> str | None:
    env_name = {"redis": "FLK_BENCH_REDIS_URL", "postgres": "FLK_BENCH_POSTGRES_DSN"}[name]
    if os.environ.get(env_name):
        return os.environ[env_name]
    key = {"redis": "FLK_TEST_REDIS_URL", "postgres": "FLK_TEST_POSTGRES_DSN"}[name]
    if os.environ.get(key):
        return os.environ[key]
    for root in (os.getcwd(), str(pathlib.Path(__file__).resolve().parents[3])):
        path = os.path.join(root, ".services.env")
        if os.path.exists(path):
            for line in open(path).read().splitlines():
                k, _, v = line.partition("=")
                if k.strip() == key:
                    return v.strip()
    return None


def _open(kind: str, tmp: str, run: str):
    if kind == "memory":
        return open_store("memory"), lambda s: None
    if kind == "sqlite":
        return open_store(f"sqlite:///{tmp}/dedup-{run}.db"), lambda s: None
    if kind == "redis":
        url = _service("redis")
        prefix = f"flkbench:{run}:"
        store = open_store(url, prefix=prefix)

        def clean(s):
            keys = list(s._r.scan_iter(match=prefix + "*", count=5000))
            for i in range(0, len(keys), 5000):
                s._r.delete(*keys[i:i + 5000])
        return store, clean
    dsn = _service("postgres")
    store = open_store(dsn, table=f"flkbench_{run}")
    return store, lambda s: s.drop_table()


@contextlib.contextmanager
def _fresh_setup(kind: str, tmp: str):
    """A run's verifier (tenant ``bench``), empty ``kind`` store and empty durable WAL
    (:class:`flk.impl.storage.wal.SegmentedLog`) under ``tmp``; closed and removed after."""
    from ...storage.wal import DEFAULT_PREALLOCATE, SegmentedLog

    run = uuid.uuid4().hex[:12]
    tenants = from_mapping({"tenants": {"bench": {"alg": "hmac", "keys": [{"secret": KEY.decode()}]}}})
    store, clean = _open(kind, tmp, run)
    wal_dir = os.path.join(tmp, f"wal-{run}")
    log = SegmentedLog(wal_dir, preallocate=DEFAULT_PREALLOCATE)  # flk serve's inbox WAL
    try:
        yield Verifier(tenants, region="bench"), store, log
    finally:
        log.close()
        clean(store)
        store.close()
        shutil.rmtree(wal_dir, ignore_errors=True)


def _one_run(kind: str, bodies: list[bytes], batch: int, tmp: str) -> tuple[float, float]:
    with _fresh_setup(kind, tmp) as (v, store, log):
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, len(bodies), batch):
            out = run_requests(v, [Request(b, "bench") for b in bodies[start:start + batch]], NOW, log, store)
            if out[0].status != 200 or out[-1].status != 200:
                raise RuntimeError(f"bench request failed with {out[0].status}/{out[-1].status}")
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        if store.count(NOW) != len(bodies):
            raise RuntimeError("bench store lost entries")
    return len(bodies) / dt, len(bodies) / cpu if cpu > 0 else float("inf")


class _NullMetrics:
    """The server's metrics object as the batch driver calls it, counting nothing (the
    metrics are the server's cost, not the verification core's; ``flk bench serve`` has them)."""

    def __call__(self, event) -> None:
        pass

    def count_many(self, events) -> None:
        pass

    def observe_latencies(self, observed) -> None:
        pass


def _driven_run(kind: str, bodies: list[bytes], batch: int, tmp: str, depth: int) -> tuple[float, float]:
    """One run through the server's own submit driver (:class:`flk.impl.server.batchdriver.BatchDriver`
    with its ``LoggedWal`` and ``GuardedStore``, at ``depth``): every body submitted at once on an
    asyncio loop, batches of at most ``batch`` formed by the driver, answered through futures.
    At depth 2 batch N+1 is appended (and verified) while batch N's fsync runs on the sync thread."""
    with _fresh_setup(kind, tmp) as (v, store, log):
        return _driven(v, store, log, bodies, batch, depth)


def _driven(v, store, log, bodies: list[bytes], batch: int, depth: int) -> tuple[float, float]:
    import asyncio

    from ...server.batchdriver import BatchDriver, GuardedStore, LoggedWal
    from ...verifier.admission import CircuitBreaker

    driver = BatchDriver(v, LoggedWal(lambda: log, lambda *a, **k: None), GuardedStore(store, CircuitBreaker()),
                         _NullMetrics(), max_delay_s=0.0005, max_batch=batch, depth=depth)

    async def submit_all():
        futures = [driver.submit(b, "bench") for b in bodies]
        for fut in reversed(futures):  # batches are answered in WAL order: the last is answered last
            await fut
        return [f.result() for f in futures]

    try:
        t0, c0 = time.perf_counter(), time.process_time()
        out = asyncio.run(submit_all())
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        if any(r.status not in (200, 202) for r in out):
            bad = next(r for r in out if r.status not in (200, 202))
            raise RuntimeError(f"bench request failed through the batch driver: {bad.status} {bytes(bad.body[:200])!r}")
        if store.count(time.time()) != len(bodies):
            raise RuntimeError("bench store lost entries")
    finally:
        driver.close()
    return len(bodies) / dt, len(bodies) / cpu if cpu > 0 else float("inf")


def _measure(kind: str, bodies: dict[str, list[bytes]], batch: int, repeat: int, tmp: str, figures: dict) -> None:
    """Median wall and CPU figures of ``repeat`` runs per body kind (runs alternate between the kinds)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in bodies}
    pipelined = kind == "sqlite"  # beside the one-thread figure: the server's driver at depth 2
    if pipelined:
        runs["pipelined"] = []
    for _ in range(repeat):
        for name, pcs_bodies in bodies.items():
            runs[name].append(_one_run(kind, pcs_bodies, batch, tmp))
        if pipelined:
            runs["pipelined"].append(_driven_run(kind, bodies["realistic"], batch, tmp, PIPELINE_DEPTH))
    for name, got in runs.items():
        label = kind if name == "realistic" else f"{kind}_{name}"
        figures[f"{label}_pcs_per_s"] = round(statistics.median(r for r, _ in got))
        figures[f"{label}_runs"] = [round(r) for r, _ in got]
        cpu = statistics.median(c for _, c in got)
        figures[f"{label}_pcs_per_cpu_s"] = round(cpu)
        figures[f"{label}_us_per_pcs_cpu"] = round(1e6 / cpu, 2) if cpu > 0 else 0.0


def _anchor_run(bodies: list[bytes]) -> float:
    """CPU microseconds per body of the bare anchor loop: ``json.loads`` + one HMAC-SHA256."""
    loads, new, sha256 = json.loads, hmac.new, hashlib.sha256
    c0 = time.process_time()
    for body in bodies:
        loads(body)
        new(KEY, body, sha256).digest()
    cpu = time.process_time() - c0
    return cpu * 1e6 / len(bodies)


def run(repeat: int = 5, quick: bool = False) -> dict:
    n = 2_000 if quick else 20_000
    batch = 512
    tag = uuid.uuid4().hex
    bodies = {"realistic": _realistic_bodies(n, tag), "minimal": _bodies(n, tag)}
    figures: dict = {"core_path": CORE_PATH, "sqlite_rows_path": "pure" if accel.active(OPEN_ROWS.name) is None else "compiled",
                     "n_per_run": n, "batch": batch, "repeat": repeat,
                     "goal_sqlite_pcs_per_s": GOAL_SQLITE_PCS_PER_S,
                     "realistic_body_bytes": round(statistics.mean(map(len, bodies["realistic"]))),
                     "minimal_body_bytes": round(statistics.mean(map(len, bodies["minimal"]))),
                     "wal": "SegmentedLog on local disk, one fsync per batch",
                     "driver": "run_requests (batch driver without generators)",
                     "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    tmp = tempfile.mkdtemp(prefix="flk-bench-verify-")
    freeze_started_heap()  # the heap as a started server worker holds it (unfrozen after the runs)
    try:
        for kind in KINDS:
            if kind in ("redis", "postgres") and _service(kind) is None:
                figures[f"{kind}_skipped"] = "service not configured (bash scripts/services.sh up)"
                continue
            try:
                _measure(kind, bodies, batch, repeat, tmp, figures)
            except Exception as exc:  # noqa: BLE001 - report, do not fake
                figures[f"{kind}_skipped"] = f"{type(exc).__name__}: {exc}"[:200]
                continue
        figures["anchor"] = "json.loads + one HMAC-SHA256 per realistic body, bare loop, same run"
        anchor = statistics.median(_anchor_run(bodies["realistic"]) for _ in range(repeat))
        figures["anchor_us_per_pcs_cpu"] = round(anchor, 2)
        for kind in KINDS:
            if figures.get(f"{kind}_us_per_pcs_cpu") and anchor > 0:
                figures[f"{kind}_cpu_ratio_to_anchor"] = round(figures[f"{kind}_us_per_pcs_cpu"] / anchor, 2)
        if figures.get("sqlite_us_per_pcs_cpu") and figures.get("memory_us_per_pcs_cpu"):
            figures["sqlite_store_us_per_pcs_cpu"] = round(figures["sqlite_us_per_pcs_cpu"]
                                                           - figures["memory_us_per_pcs_cpu"], 2)
        mem = figures.get("memory_pcs_per_s")
        for kind in KINDS[1:]:
            if mem and f"{kind}_pcs_per_s" in figures:
                figures[f"{kind}_ratio_to_memory"] = round(figures[f"{kind}_pcs_per_s"] / mem, 3)
        # the goal figure: the core on one thread (run_requests, one durable fsync per batch before
        # its answers); beside it the same goal against the server's driver at depth 2
        goal_figure = "sqlite_pcs_per_s"
        if goal_figure in figures:
            figures["goal_sqlite_figure"] = goal_figure
            figures["goal_sqlite_met"] = figures[goal_figure] >= GOAL_SQLITE_PCS_PER_S
        if "sqlite_pipelined_pcs_per_s" in figures:
            figures["goal_sqlite_pipelined_met"] = figures["sqlite_pipelined_pcs_per_s"] >= GOAL_SQLITE_PCS_PER_S
        # the physical limits next to the figure: what fsyncs of this disk allow (one per batch)
        # and what one free core allows (the CPU per PCS measured above)
        from .serve import fsync_latency

        figures.update(fsync_latency(tmp, figures["realistic_body_bytes"], batch, rounds=50 if quick else 200))
        figures["fsync_ceiling_pcs_per_s"] = round(batch / (figures["fsync_prealloc_ms_p50"] / 1000))
        for label in ("sqlite", "sqlite_pipelined"):
            if figures.get(f"{label}_us_per_pcs_cpu"):
                # one free core at the measured CPU per PCS (every thread's CPU: the batch thread
                # holds the GIL for all but the SQLite work, so the work does not spread over cores)
                figures[f"{label}_one_core_ceiling_pcs_per_s"] = round(1e6 / figures[f"{label}_us_per_pcs_cpu"])
                # the lower of the two measured limits of that driver (one fsync per batch at best)
                figures[f"{label}_ceiling_pcs_per_s"] = min(figures[f"{label}_one_core_ceiling_pcs_per_s"],
                                                            figures["fsync_ceiling_pcs_per_s"])
        for label, goal in (("sqlite", "goal_sqlite"), ("sqlite_pipelined", "goal_sqlite_pipelined")):
            if f"{label}_ceiling_pcs_per_s" in figures:
                figures[f"{goal}_within_ceiling"] = figures[f"{label}_ceiling_pcs_per_s"] >= GOAL_SQLITE_PCS_PER_S
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        gc.unfreeze()
        figures["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return figures
