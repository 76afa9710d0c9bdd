"""``flk bench crr``: cross-region replication throughput.

Ships an inbox WAL of signed load-generator PCS (real ``SegmentedLog`` on the
real disk, sealed segments of ~1 MiB) to a ``DirectoryObjectStore`` and reads
it back in a second region (verification of manifests and SHA-256, replay of
every record through the verify pipeline as the origin region, SQLite dedup
store, reconciler). Reports median records/second of shipping and of
reading+replaying, and the replay CPU cost per record.
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
from ...replication.reconcile import Reconciler
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
            reconciler = Reconciler("us")  # wired as the replication service wires it
            applier = ReplayApplier(Verifier(tenants, region="us"), store, reconciler.observe,
                                    observe_batch=reconciler.observe_batch)
            reader = Reader(objects, Topology.full_mesh(["eu"], "us"), applier, f"{root}/read.json")
            t0, c0 = time.perf_counter(), time.process_time()
            reader.poll(1_700_001_000.0)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            assert reader.applied_records == n and applier.stored == n
            read_rates.append(n / dt)
            cpu_us.append(dc / n * 1e6)
            store.close()
            log.close()
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
    }
