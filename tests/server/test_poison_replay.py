"""A poison record in the inbox WAL cannot stop a restart (real ``flk serve``).

The poison is planted by bypassing the validator: a server whose parse step
raises for bodies carrying a marker (tests/server/planted_poison/
sitecustomize.py, loaded through PYTHONPATH into the server only) answers such
a request 500 -- after the body is durably in its inbox WAL, like the
validator bugs it stands for. Before, every later start replayed it, failed
and exited. Now the start-up replay quarantines it and the worker serves:

* the restart is clean and the records around the poison keep their outcomes;
* ``quarantine.jsonl`` in the WAL directory holds the record (base64) with its
  index, segment, reason and SHA-256; the log line names the reason and the
  digest but never the payload; ``/ready`` shows the count and the reason;
  ``flk_wal_quarantined`` counts it;
* ``flk wal inspect`` lists it; a second restart meets it again and does not
  count it twice.

Run on SQLite, Redis and PostgreSQL (the latter two skip without their
services, never under CI=true).
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import uuid

import httpx
import pytest

from flk.impl.dedup import open_store
from flk.impl.storage.inbox import decode_inbox_record
from flk.impl.testing.workload import bodies
from flk.impl.verifier.admission import build_admission

from .proc import FLK, ServerProc

pytestmark = [pytest.mark.server]

KEY = "poison-replay-key-0123456789abcdef"
PLANTED = pathlib.Path(__file__).resolve().parent / "planted_poison"
MARKER = "planted-poison-" + "c0ffee"
POISON = json.dumps({"version": "pcs/1.0", "note": MARKER}).encode()


def submit(srv: ServerProc, body: bytes) -> httpx.Response:
    return httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=10)


def poison_survives_restarts(tmp_path: pathlib.Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    srv = ServerProc(tmp_path, {"PCS_HMAC_KEY": KEY, "DATA_DIR": str(data), "WORKERS": "1",
                                "PYTHONPATH": str(PLANTED), "FLK_TEST_POISON_MARKER": MARKER, **env})
    good_a, good_b = bodies(KEY.encode(), 2, seed=7)
    with srv:
        assert submit(srv, good_a).status_code == 200
        assert submit(srv, POISON).status_code == 500  # the planted bug; the body is in the WAL
        assert submit(srv, good_b).status_code == 200
    # the restart replays the poison: quarantined, and the worker serves
    with srv:
        ready = httpx.get(srv.url + "/ready", timeout=5).json()
        assert ready["status"] == "ready" and ready["quarantine"]["count"] == 1
        assert ready["quarantine"]["last_index"] == 1
        assert ready["quarantine"]["last_reason"].startswith("RuntimeError in _poisoned_parse (sitecustomize.py:")
        again = submit(srv, good_a)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        metrics = httpx.get(srv.url + "/metrics", timeout=5).text
        assert "flk_wal_quarantined_total 1.0" in metrics
        fresh = bodies(KEY.encode(), 1, seed=8)[0]
        assert submit(srv, fresh).status_code == 200
    log = srv.log_text()
    assert "Application startup failed" not in log and '"event":"startup_failed"' not in log
    lines = [json.loads(x) for x in log.splitlines() if '"event":"wal_record_quarantined"' in x]
    assert len(lines) == 1 and lines[0]["records"] == 1 and "sha256" in lines[0]["detail"]
    assert MARKER not in log  # neither the payload nor the exception message (which quotes it)
    # the quarantine file beside the WAL keeps the record for inspection / re-drive
    wal_dir = data / "wal" / "worker-0"
    [entry] = [json.loads(x) for x in (wal_dir / "quarantine.jsonl").read_text().splitlines()]
    assert entry["index"] == 1 and entry["segment"].startswith("seg-") and entry["source"] == "inbox"
    assert decode_inbox_record(base64.b64decode(entry["record_b64"])).body == POISON
    # flk wal inspect lists it (without the payload)
    out = subprocess.run([FLK, "wal", "inspect", str(wal_dir), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["quarantine"]["count"] == 1 and "quarantine.jsonl" not in report["foreign"]
    [listed] = report["quarantine"]["entries"]
    assert listed["index"] == 1 and listed["digest"] == entry["digest"] and "record_b64" not in listed
    text = subprocess.run([FLK, "wal", "inspect", str(wal_dir)], capture_output=True, text=True, timeout=60)
    assert "quarantined" in text.stdout and entry["digest"][:16] in text.stdout and MARKER not in text.stdout
    # a third start meets the same poison again: still one entry, still serving
    with srv:
        assert httpx.get(srv.url + "/ready", timeout=5).json()["quarantine"]["count"] == 1
    assert len((wal_dir / "quarantine.jsonl").read_text().splitlines()) == 1


def test_planted_poison_record_restart_is_clean_sqlite(tmp_path) -> None:
    poison_survives_restarts(tmp_path, {"DEDUP_BACKEND": "sqlite"})


def test_planted_poison_record_restart_is_clean_redis(tmp_path, redis_url) -> None:
    ns = "poison_" + uuid.uuid4().hex[:8]
    poison_survives_restarts(tmp_path, {"DEDUP_BACKEND": "redis", "REDIS_ADDR": redis_url, "DEDUP_NAMESPACE": ns})


def test_planted_poison_record_restart_is_clean_postgres(tmp_path, postgres_dsn) -> None:
    ns = "poison_" + uuid.uuid4().hex[:8]
    try:
        poison_survives_restarts(tmp_path, {"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": postgres_dsn,
                                            "DEDUP_NAMESPACE": ns})
    finally:
        store = open_store(postgres_dsn, table=f"flk_dedup_{ns}")
        store.drop_table()
        store.close()


def test_an_undecodable_record_written_straight_into_the_wal_is_quarantined_at_start(tmp_path) -> None:
    """Without any hook: a record that passes its checksum but is no inbox record."""
    import time

    from starlette.testclient import TestClient

    from flk.impl.server.app import create_app
    from flk.impl.server.config import load_config
    from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
    from flk.impl.storage.wal import SegmentedLog

    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0"})
    good_a, good_b = bodies(KEY.encode(), 2, seed=9)
    with SegmentedLog(cfg.worker_wal_dir(0)) as log:
        log.append(encode_inbox_record(InboxRecord("", time.time(), cfg.region_id, good_a)))
        log.append(b"\x07" + MARKER.encode())  # an unknown record version
        log.append(encode_inbox_record(InboxRecord("", time.time(), cfg.region_id, good_b)))
    client = TestClient(create_app(cfg, 0), raise_server_exceptions=False, client=("127.0.0.1", 50000))
    with client:
        ready = client.get("/ready").json()
        assert ready["quarantine"]["count"] == 1 and ready["quarantine"]["last_index"] == 1
        assert ready["quarantine"]["last_reason"].startswith("InvalidInput in decode_inbox_record")
        for body in (good_a, good_b):  # both were replayed around it
            r = client.post("/v1/pcs/submit", content=body)
            assert r.status_code == 200 and r.headers["idempotent-replayed"] == "true"


class _RefusingStore:
    """A store that answers pings but refuses every write of one pcs_id (or is down)."""

    def __init__(self, inner, refused_pcs_id: str | None, down: bool = False, times: int | None = None) -> None:
        self.inner, self.refused, self.down, self.times = inner, refused_pcs_id, down, times

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.put_many_if_absent([(tenant, pcs_id, outcome)], now, ttl_s)[0]

    def put_many_if_absent(self, items, now, ttl_s=None):
        """One transaction: refused whole when it holds the refused pcs_id."""
        from flk.impl.dedup import StoreUnavailable

        if self.down or any(self.refused in (None, pcs_id) for _, pcs_id, _ in items):
            if self.times is None or self.times > 0:
                self.times = None if self.times is None else self.times - 1
                raise StoreUnavailable("refused")
        return self.inner.put_many_if_absent(items, now, ttl_s)

    def ping(self) -> bool:
        return not self.down

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _replay_with(tmp_path, down: bool, refuse_all: bool = False, times: int | None = None, starts: int = 1):
    """Replay a WAL of 3 records against a store that refuses the second one (``refuse_all``:
    every one; ``times``: only its first that many writes); a replay that stops with
    ``StoreUnavailable`` is run again (the next start), at most ``starts`` times in all.
    Returns (pipeline, log, quarantined, counts of the last replay, starts used)."""
    import time

    from flk.impl.dedup import StoreUnavailable
    from flk.impl.server.config import load_config
    from flk.impl.server.pipeline import ServerPipeline
    from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
    from flk.impl.storage.wal import SegmentedLog
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": KEY})
    docs = bodies(KEY.encode(), 3, seed=11)
    refused = json.loads(docs[1])["pcs_id"]
    quarantined: list = []

    class Server:
        store = _RefusingStore(open_store("memory"), None if refuse_all else refused, down, times)
        admission = build_admission()

        def quarantine_record(self, wal, index, payload, error):
            quarantined.append((index, type(error).__name__))

    log = SegmentedLog(str(tmp_path / "wal"))
    for doc in docs:
        log.append(encode_inbox_record(InboxRecord("", time.time(), cfg.region_id, doc)))
    server = Server()
    pipeline = ServerPipeline(cfg, buckets=server.admission.buckets, store=lambda: server.store,
                              executor=None, quarantine=server.quarantine_record)
    try:
        for start in range(1, starts + 1):
            try:
                return pipeline, log, quarantined, pipeline._replay_all(log), start
            except StoreUnavailable:
                if start == starts:
                    raise
    finally:
        log.close()


def test_a_record_the_store_refuses_while_it_answers_pings_stops_the_replay_and_is_never_quarantined(
        tmp_path) -> None:
    """A store refusal is never poison (SPEC.md 11.2), even while the store answers pings and
    stores the other records (a sharded store holding one shard out): the replay stops, and the
    next start, once the store takes the record, replays every record and quarantines none."""
    from flk.impl.dedup import StoreUnavailable

    with pytest.raises(StoreUnavailable, match=r"unavailable during WAL replay \(it answers pings"):
        _replay_with(tmp_path / "a", down=False, starts=10)
    # refused on its first 6 writes (more than the old 5-refusal rule allowed), then taken
    *_, quarantined, counts, starts = _replay_with(tmp_path / "b", down=False, times=6, starts=10)
    # the start that got through wrote the refused record and the one behind it (the first was
    # written by the earlier starts, before the refusal stopped them)
    assert quarantined == [] and counts == {"records": 3, "stored": 2, "errors": 0, "quarantined": 0} and starts > 1


def test_a_store_that_answers_pings_but_stores_nothing_stops_the_replay(tmp_path) -> None:
    """E.g. the database's own disk is full: that is an outage, not a poison record."""
    from flk.impl.dedup import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="it answers pings"):
        _replay_with(tmp_path, down=False, refuse_all=True)


def test_a_store_outage_stops_the_replay_instead(tmp_path) -> None:
    from flk.impl.dedup import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="unavailable during WAL replay"):
        _replay_with(tmp_path, down=True)
