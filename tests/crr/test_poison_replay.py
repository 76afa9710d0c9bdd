"""Cross-region replay never stops at a poison record.

A record whose replay raises unexpectedly (planted: the pipeline's parse step
is patched to raise for bodies carrying a marker, standing in for any bug the
validator may still have) is quarantined by the reading region -- a
``read-quarantine.jsonl`` line with the record's bytes, ``failures`` /
``last_error`` and ``quarantine`` in the reader's metrics, a log line and an
audit entry without the payload -- and the stream goes on past it: the
records after it are applied and the watermark moves. A store outage, by
contrast, is never poison (however many polls it lasts, whether or not the
store answers pings): nothing is quarantined and the segment is retried.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from verifier.pcsgen import registry

from flk.impl.dedup import StoreUnavailable, open_store
from flk.impl.replication.service import CrrConfig, CrrService
from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.storage.quarantine import read_entries
from flk.impl.storage.wal import SegmentedLog
from flk.impl.verifier.pipeline import Request, Verifier, run_sync

from .regions import NOW, Region, variants

MARKER = b"planted-poison-7f3a"
POISON_BODY = b'{"note":"' + MARKER + b'"}'


@pytest.fixture
def poisoned(monkeypatch):
    """Processing any body that carries MARKER raises (after the WAL append, as a validator bug would)."""
    original = Verifier.parse  # step 3: body -> validated PCS or a 400 problem

    def parse(body):
        if MARKER in bytes(body):
            raise RuntimeError("planted poison: " + bytes(body).decode())  # the message quotes the payload
        return original(body)

    monkeypatch.setattr(Verifier, "parse", staticmethod(parse))


def plant(log: SegmentedLog, region: str, now: float) -> bytes:
    """Write a poison record straight into an inbox WAL (bypassing the validator); returns its bytes."""
    record = encode_inbox_record(InboxRecord("ta", now, region, POISON_BODY))
    log.append(record)
    log.sync()
    return record


@pytest.mark.parametrize("batch", [256, 0])
def test_reader_quarantines_a_poison_record_and_the_stream_goes_on(poisoned, batch) -> None:
    objects = MemoryObjectStore()
    eu, us = Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])
    us.reader.batch = batch
    seen: list[dict] = []
    us.reader.on_quarantine = seen.append
    (raw_a, t_a, id_a, _), (raw_b, t_b, id_b, _), (raw_c, t_c, id_c, _) = variants(3, 1)
    assert eu.submit(raw_a, t_a, NOW).status == 200
    poison = plant(eu.log, "eu", NOW + 1)
    assert eu.submit(raw_b, t_b, NOW + 2).status == 200
    eu.shipper.step(NOW + 3)
    us.reader.step(NOW + 4)
    # the records on both sides of the poison were applied; the watermark passed it
    local = us.local()
    assert (t_a, id_a) in local and (t_b, id_b) in local
    assert us.reader.watermarks["eu"] == 3 and us.reader.applied_records == 2
    m = us.reader.metrics()
    assert m["failures"] == 1 and m["last_error"].startswith("quarantined record 1 of eu (seg-")
    assert "RuntimeError in parse (test_poison_replay.py:" in m["last_error"]
    assert m["quarantine"]["count"] == 1 and m["quarantine"]["last_index"] == 1
    # the quarantine file keeps the record (for inspection / re-drive); the callback gets no payload
    entries, bad = read_entries("/us/read-quarantine.jsonl", us.fs)
    assert bad == 0 and len(entries) == 1
    assert base64.b64decode(entries[0]["record_b64"]) == poison
    assert entries[0]["digest"] == hashlib.sha256(poison).hexdigest() and entries[0]["source"] == "eu"
    assert len(seen) == 1 and MARKER.decode() not in json.dumps(seen[0]) and "record_b64" not in seen[0]
    # the next segment applies normally, the error clears, the poison is not counted twice
    assert eu.submit(raw_c, t_c, NOW + 5).status == 200
    eu.shipper.step(NOW + 6)
    us.reader.step(NOW + 7)
    assert (t_c, id_c) in us.local() and us.reader.watermarks["eu"] == 4
    m = us.reader.metrics()
    assert m["failures"] == 0 and m["last_error"] is None and m["quarantine"]["count"] == 1
    # reading the stream again from the start (lost watermarks) meets the poison again: counted once
    us.reader.watermarks.clear()
    us.reader.step(NOW + 8)
    assert us.reader.metrics()["quarantine"]["count"] == 1 and len(seen) == 1


def test_a_store_outage_is_not_poison(poisoned) -> None:
    objects = MemoryObjectStore()
    eu, us = Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])
    (raw_a, t_a, _, _), = variants(1, 1)
    assert eu.submit(raw_a, t_a, NOW).status == 200
    eu.shipper.step(NOW + 1)
    healthy = us.applier.store

    class Down:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise StoreUnavailable("store down")
            return fail

    us.applier.store = Down()
    us.reader.step(NOW + 2)
    assert us.reader.watermarks.get("eu", 0) == 0 and us.reader.failures == 1
    assert us.reader.metrics()["quarantine"]["count"] == 0
    us.applier.store = healthy
    us.reader.step(NOW + 100)
    assert us.reader.watermarks["eu"] == 1 and us.reader.failures == 0


def make(tmp_path, name, peers, shared, logs):
    d = tmp_path / name
    d.mkdir()
    wal = SegmentedLog(str(d / "wal"))
    store = open_store(f"sqlite:///{d}/dedup.db")
    verifier = Verifier(registry(), region=name)
    svc = CrrService(CrrConfig(name, str(shared), peers, 0.05, 0.05), wal=wal, dedup_store=store,
                     verifier=verifier, data_dir=str(d), log=lambda event, **kw: logs.append({"event": event, **kw}))
    return svc, wal, store, verifier


def test_service_logs_and_audits_a_quarantined_record_and_keeps_replicating(tmp_path, poisoned) -> None:
    shared = tmp_path / "shared"
    eu_logs: list[dict] = []
    us_logs: list[dict] = []
    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "us", shared, eu_logs)
    us, us_wal, us_store, _ = make(tmp_path, "us", "eu", shared, us_logs)
    (raw_a, t_a, id_a, _), (raw_b, t_b, id_b, _) = variants(2, 1)
    assert run_sync(eu_v.handle(Request(raw_a, t_a), NOW), eu_wal, eu_store).status == 200
    poison = plant(eu_wal, "eu", NOW + 1)
    assert run_sync(eu_v.handle(Request(raw_b, t_b), NOW + 2), eu_wal, eu_store).status == 200
    eu.step(NOW + 3)
    us.step(NOW + 4)
    assert us_store.get(t_a, id_a, NOW + 5) is not None and us_store.get(t_b, id_b, NOW + 5) is not None
    read = us.metrics()["read"]
    assert read["failures"] == 1 and "quarantined record 1 of eu" in read["last_error"]
    assert read["quarantine"]["count"] == 1 and us.errors == 0
    [line] = [x for x in us_logs if x["event"] == "crr_record_quarantined"]
    assert line["records"] == 1 and line["reason"].startswith("RuntimeError in parse")
    assert MARKER.decode() not in json.dumps(line)  # the reason names the code, never the payload
    digest = hashlib.sha256(poison).hexdigest()
    assert digest in line["detail"]
    us.step(NOW + 5)  # the durable audit queue writes the entry
    audit = [json.loads(x) for f in sorted((tmp_path / "us" / "crr" / "audit").glob("seg-*.log"))
             for x in f.read_text().splitlines()]
    quarantined = [e for e in audit if e["outcome"] == "quarantined"]
    assert len(quarantined) == 1 and quarantined[0]["payload_digest"] == digest
    assert quarantined[0]["pcs_id"] == "eu#1" and quarantined[0]["tenant"] == "ta"
    from prometheus_client import CollectorRegistry, generate_latest

    from flk.impl.replication.service import CrrCollector

    registry = CollectorRegistry()
    registry.register(CrrCollector(us))
    assert 'flk_crr_quarantined_records_total{worker="0"} 1.0' in generate_latest(registry).decode()
    # eu reads its own stream too: the same poison is quarantined there, and eu keeps going
    assert eu.metrics()["read"]["quarantine"]["count"] == 1
    for svc in (eu, us):
        svc.stop(final_ship=False)
    for w in (eu_wal, us_wal):
        w.close()


class PartlyDown:
    """A store that answers every ping but refuses the writes of some keys during their first
    polls (as a sharded store holding one shard out: seed 1000117) and rejects others as invalid."""

    def __init__(self, inner, down_for: dict[str, int], invalid: set[str]) -> None:
        self.inner, self.down_for, self.invalid = inner, down_for, invalid
        self.poll = 0  # the reader's polls so far (the test counts them)

    def put_many_if_absent(self, items, now, ttl_s=None):
        if any(self.down_for.get(pcs_id, 0) >= self.poll for _, pcs_id, _ in items):
            raise StoreUnavailable("shard s0 is down")
        if any(pcs_id in self.invalid for _, pcs_id, _ in items):
            raise ValueError("pcs_id rejected by the store")  # deterministic: this record, every time
        return self.inner.put_many_if_absent(items, now, ttl_s)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.put_many_if_absent([(tenant, pcs_id, outcome)], now, ttl_s)[0]

    def __getattr__(self, name):
        return getattr(self.inner, name)  # ping answers: the store is up


# per record: ("ok", 0) | ("transient", k: its shard is down for the reader's first k polls) | ("invalid", 0)
RECORD_OUTCOMES = st.one_of(st.tuples(st.sampled_from(["ok", "invalid"]), st.just(0)),
                            st.tuples(st.just("transient"), st.integers(1, 9)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outcomes=st.lists(RECORD_OUTCOMES, min_size=1, max_size=5), batch=st.sampled_from([256, 0]))
@example(outcomes=[("ok", 0), ("transient", 7), ("ok", 0)], batch=256)  # the 5-refusal rule quarantined it
def test_a_shard_outage_never_quarantines_a_good_record_and_an_invalid_one_is_still_quarantined(
        outcomes, batch) -> None:
    objects = MemoryObjectStore()
    eu, us = Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])
    us.reader.batch = batch
    keys = variants(len(outcomes), 1)
    for k, (raw, tenant, _, _) in enumerate(keys):
        assert eu.submit(raw, tenant, NOW + k).status == 200
    eu.shipper.step(NOW + 10)
    us.applier.store = store = PartlyDown(us.applier.store,
                                  {keys[i][2]: k for i, (kind, k) in enumerate(outcomes) if kind == "transient"},
                                  {keys[i][2] for i, (kind, _) in enumerate(outcomes) if kind == "invalid"})
    now, polls = NOW + 20, 0
    while us.reader.watermarks.get("eu", 0) < len(outcomes):
        polls += 1
        store.poll = polls
        assert polls <= 1 + sum(k for _, k in outcomes), "the reader made no progress"
        us.reader.step(now)
        if us.reader.watermarks.get("eu", 0) < len(outcomes):
            assert "shard s0 is down" in us.reader.last_error  # stalled visibly, nothing skipped
        now += 100  # past the backoff (capped at 8 s)
    local = us.local()
    quarantined = sorted(e["index"] for e in read_entries("/us/read-quarantine.jsonl", us.fs)[0])
    # (1) a record refused only transiently is never quarantined and is applied once its shard returns
    # (2) a record the store rejects as invalid is quarantined and the records behind it are applied
    assert quarantined == [i for i, (kind, _) in enumerate(outcomes) if kind == "invalid"]
    for i, (kind, _) in enumerate(outcomes):
        assert ((keys[i][1], keys[i][2]) in local) == (kind != "invalid")
    assert us.reader.quarantine.count == len(quarantined)


def test_a_store_that_answers_pings_but_stores_nothing_never_quarantines() -> None:
    """E.g. the database's own disk is full: reads and pings work, every write fails."""
    objects = MemoryObjectStore()
    eu, us = Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])
    for k, (raw, tenant, _, _) in enumerate(variants(3, 1)):
        assert eu.submit(raw, tenant, NOW + k).status == 200
    eu.shipper.step(NOW + 5)
    inner = us.applier.store

    class WritesFail:
        def put_many_if_absent(self, items, now, ttl_s=None):
            raise StoreUnavailable("disk full")

        def put_if_absent(self, *args, **kwargs):
            raise StoreUnavailable("disk full")

        def __getattr__(self, name):
            return getattr(inner, name)

    us.applier.store = WritesFail()
    now = NOW + 10
    for _ in range(15):  # as many polls as it lasts: never quarantined
        us.reader.step(now)
        now += 100
    assert us.reader.watermarks.get("eu", 0) == 0 and us.reader.quarantine.count == 0
    assert "disk full" in us.reader.last_error
    us.applier.store = inner
    us.reader.step(now)
    assert us.reader.watermarks["eu"] == 3 and us.reader.failures == 0


def test_a_failing_replication_step_is_logged_with_its_reason_and_never_the_payload(tmp_path) -> None:
    import time

    logs: list[dict] = []
    svc, wal, _, _ = make(tmp_path, "eu", "us", tmp_path / "shared", logs)

    def broken(now, mono=None):
        raise RuntimeError("quoting " + MARKER.decode())

    svc.shipper.step = broken
    svc.start()
    deadline = time.monotonic() + 10
    while not any(x["event"] == "crr_error" for x in logs) and time.monotonic() < deadline:
        time.sleep(0.01)
    metrics = svc.metrics()
    svc.stop(final_ship=False)
    wal.close()
    line = next(x for x in logs if x["event"] == "crr_error")
    assert line["reason"].startswith("RuntimeError in broken (test_poison_replay.py:")
    assert MARKER.decode() not in json.dumps(logs)
    assert metrics["errors"] >= 1 and metrics["last_error"] == line["reason"]
