"""Disk full and failing fsyncs under the real app: recovery without a restart.

The server's inbox WAL runs on a fault-injecting file system
(tests/wal/faultfs.py over the real disk) inside the real Starlette app with
its lifespan (TestClient). While the WAL is broken a submission gets 503
``wal-unavailable`` with ``Retry-After`` and -- once the failure is known --
without touching the WAL (no write attempt: retries cannot refill a nearly
full disk); ``/ready`` is 503 naming the WAL, ``/health`` stays 200. When the
disk has room again the WAL recovers by itself (probes with backoff):
``/ready`` returns to 200, submissions are accepted, and every acknowledged
record is in the WAL exactly once. A WAL that does not recover within the
bounds fails ``/health`` until it does.
"""

from __future__ import annotations

import time

from starlette.testclient import TestClient
from wal.faultfs import FaultFileSystem

from flk.impl.core.backoff import Backoff
from flk.impl.server.app import create_app
from flk.impl.server.config import load_config
from flk.impl.storage.fs import OsFileSystem
from flk.impl.storage.inbox import decode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walhealth import WalHealth
from flk.impl.testing.workload import bodies

KEY = "0123456789abcdef0123456789abcdef"


def make_client(tmp_path, health: WalHealth):
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0"})
    app = create_app(cfg, 0)
    srv = app.state.server
    fs = FaultFileSystem(OsFileSystem())
    srv.wal_fs, srv.wal_health, srv.wal_poll_s = fs, health, 0.01
    return TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000)), cfg, srv, fs


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def wal_bodies(cfg) -> list[bytes]:
    log = SegmentedLog(cfg.worker_wal_dir(0))
    try:
        return [decode_inbox_record(p).body for _, p in log.records()]
    finally:
        log.close()


def test_inv_no_acked_loss_disk_full_then_freed_recovers_without_a_restart(tmp_path) -> None:
    client, cfg, srv, fs = make_client(tmp_path, WalHealth(Backoff(0.05, 0.2), max_probes=10_000))
    first, lost, second, third = bodies(KEY.encode(), 4)
    with client:
        assert client.post("/v1/pcs/submit", content=first).status_code == 200
        fs.full = True
        r = client.post("/v1/pcs/submit", content=lost)
        assert r.status_code == 503 and r.json()["type"].endswith(":wal-unavailable")
        assert r.headers["retry-after"]
        wait_for(lambda: not srv.wal_health.available)
        # known broken: rejected before the WAL (no write attempt), with Retry-After
        writes = fs.writes
        for _ in range(20):
            r = client.post("/v1/pcs/submit", content=second)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "cannot record requests now" in r.json()["detail"]  # the gate, not the pipeline
        assert fs.writes - writes <= srv.wal_health.probes + 1  # only the probes wrote
        assert srv.wal.next_index == 2  # nothing was appended meanwhile
        ready = client.get("/ready")
        assert ready.status_code == 503 and "inbox WAL" in ready.json()["detail"]
        assert ready.json()["wal"]["state"] == "failed" and "No space left" in ready.json()["wal"]["reason"]
        assert client.get("/health").status_code == 200  # still within the bounds: alive
        wait_for(lambda: srv.wal_health.probes >= 2)  # probing with backoff while full
        assert not srv.wal_health.available
        fs.full = False
        wait_for(lambda: client.get("/ready").status_code == 200)
        assert client.get("/ready").json()["wal"] == {"state": "ok", "recoveries": 1}
        assert client.post("/v1/pcs/submit", content=second).status_code == 200
        again = client.post("/v1/pcs/submit", content=first)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        # an fsync failure (EIO) recovers the same way
        fs.fail_fsyncs(1)
        assert client.post("/v1/pcs/submit", content=third).status_code == 503
        wait_for(lambda: client.get("/ready").status_code == 200)
        assert client.post("/v1/pcs/submit", content=third).status_code == 200
        assert "flk_wal_recoveries_total 2.0" in client.get("/metrics").text
    # every acknowledged request is in the WAL once per acknowledgement, the refused one is not
    assert wal_bodies(cfg) == [first, second, first, third]
    # and a restart replays it cleanly
    client2, _, _, _ = make_client(tmp_path, WalHealth())
    with client2:
        r = client2.post("/v1/pcs/submit", content=third)
        assert r.status_code == 200 and r.headers["idempotent-replayed"] == "true"


def test_a_wal_that_does_not_recover_fails_health_until_it_does(tmp_path) -> None:
    client, _, srv, fs = make_client(tmp_path, WalHealth(Backoff(0.01, 0.02), max_probes=3))
    body = bodies(KEY.encode(), 1)[0]
    with client:
        assert client.get("/health").status_code == 200
        fs.full = True
        assert client.post("/v1/pcs/submit", content=body).status_code == 503
        wait_for(lambda: not srv.wal_health.alive)
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["type"].endswith(":wal-unavailable")
        assert "probes did not recover it" in health.json()["detail"] and health.json()["wal"]["state"] == "dead"
        fs.full = False  # probing goes on: a freed disk still brings it back
        wait_for(lambda: client.get("/health").status_code == 200)
        assert client.get("/ready").status_code == 200
        assert client.post("/v1/pcs/submit", content=body).status_code == 200
