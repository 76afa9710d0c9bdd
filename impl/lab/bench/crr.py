"""``flk bench crr``: cross-region replication throughput.

Ships an inbox WAL of signed load-generator PCS (real ``SegmentedLog`` on the
real disk, sealed segments of ~1 MiB) to a ``DirectoryObjectStore`` and reads
it back in a second region (verification of manifests and SHA-256, replay of
every record through the verify pipeline as the origin region, SQLite dedup
store, reconciler). Reports median records/second of shipping and of
reading+replaying, and the replay CPU cost per record. These reads keep the
reconciler's outcomes in memory; a second read of each repeat's stream into a
fresh dedup store keeps them as ``flk serve``'s replication service does, in
its SQLite authoritative store (``service_reconciler``, medians too: a batch's
observations in one transaction).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time

from ...agent.loadgen import PlanConfig, make_plan
from ...dedup import open_store
from ...replication.applying import ReplayApplier
from ...replication.reading import Reader, Topology
from ...replication.reconcile import Reconciler, SqliteAuthoritativeStore
from ...replication.shipping import Shipper
from ...storage.inbox import InboxRecord, encode_inbox_record
from ...storage.objectstore import DirectoryObjectStore
from ...storage.wal import SegmentedLog
from ...verifier.pipeline import Verifier
from ...verifier.tenants import from_mapping

BASE = b"flk-bench-crr-secret"


def run(repeat: int = 3, quick: bool = False) -> dict:
    n = 2_000 if quick else 20_000
    plan = make_plan(PlanConfig(n=n, seed=1), BASE)
    bodies = [json.dumps(it.pcs).encode() for it in plan]
    tenants = from_mapping({"single_tenant": True,
                            "tenants": {"default": {"alg": "hmac", "keys": [{"id": "k", "secret": BASE.decode()}]}}})
    ship_rates, read_rates, cpu_us = [], [], []
    service_rates: list[float] = []
    service_cpu_us: list[float] = []
    for _ in range(repeat):
        root = tempfile.mkdtemp(prefix="flk-bench-crr-")
        try:
            log = SegmentedLog(f"{root}/wal", segment_bytes=1 << 20)
            log.append_many([encode_inbox_record(InboxRecord("", 1_700_000_000.0 + i * 1e-3, "eu", b))
                             for i, b in enumerate(bodies)])
            log.sync()
            objects = DirectoryObjectStore(f"{root}/objects")
            shipper = Shipper(log, objects, "eu", f"{root}/ship.json", interval_s=3600)
            t0 = time.perf_counter()
            shipper.step(1_700_001_000.0)
            ship_rates.append(n / (time.perf_counter() - t0))
            assert shipper.shipped_records == n
            store = open_store(f"sqlite:///{root}/dedup.db")
            dt, dc = _read(objects, tenants, store, Reconciler("us"), f"{root}/read.json", n)
            read_rates.append(n / dt)
            cpu_us.append(dc / n * 1e6)
            store.close()
            log.close()
            service = open_store(f"sqlite:///{root}/dedup2.db")
            auth = SqliteAuthoritativeStore(f"{root}/authoritative.sqlite3")
            sdt, sdc = _read(objects, tenants, service, Reconciler("us", store=auth), f"{root}/read2.json", n)
            service_rates.append(n / sdt)
            service_cpu_us.append(sdc / n * 1e6)
            service.close()
            auth.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "name": "crr",
        "records": n,
        "repeat": repeat,
        "ship_records_per_s": round(statistics.median(ship_rates), 1),
        "read_replay_records_per_s": round(statistics.median(read_rates), 1),
        "replay_cpu_us_per_record": round(statistics.median(cpu_us), 1),
        "runs": {"ship": [round(x, 1) for x in ship_rates], "read": [round(x, 1) for x in read_rates]},
        "service_reconciler": {"read_replay_records_per_s": round(statistics.median(service_rates), 1),
                               "replay_cpu_us_per_record": round(statistics.median(service_cpu_us), 1)},
    }


def _read(objects, tenants, store, reconciler: Reconciler, state: str, n: int) -> tuple[float, float]:
    """Read and replay the whole stream into ``store`` as region "us" with ``reconciler`` wired
    as the replication service wires it; (wall seconds, CPU seconds)."""
    applier = ReplayApplier(Verifier(tenants, region="us"), store, reconciler.observe,
                            observe_batch=reconciler.observe_batch)
    reader = Reader(objects, Topology.full_mesh(["eu"], "us"), applier, state)
    t0, c0 = time.perf_counter(), time.process_time()
    reader.poll(1_700_001_000.0)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert reader.applied_records == n and applier.stored == n
    return dt, dc
