"""WAL checkpoints: a restart replays only the records after the
checkpoint, and a crash at ANY point -- after any number of the replay's store
writes, before or after the checkpoint file is replaced, in either of two starts
with traffic in between -- still ends with exactly the dedup state of one
uninterrupted replay of the whole WAL (Hypothesis over the crash points).

The real start-up replay (``ServerPipeline._replay_all``), the real inbox WAL
(``SegmentedLog``), a real SQLite dedup store on disk (it survives the process
crash) and the server's checkpoint functions (``replay_start`` /
``write_checkpoint``); a crash is an exception at the chosen store call or
checkpoint step, after which everything in memory is thrown away.
"""

from __future__ import annotations

import json
import tempfile
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup.sqlite import SqliteStore
from flk.impl.server.config import load_config
from flk.impl.server.pipeline import ServerPipeline, build_pipeline
from flk.impl.storage.checkpoint import (
    CHECKPOINT_FILE,
    replay_start,
    seal_for_checkpoint,
    write_checkpoint,
)
from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.testing.workload import bodies

KEY = "0123456789abcdef0123456789abcdef"
T0 = time.time() - 3600
POOL = bodies(KEY.encode(), 12, seed=61)
STORE_ID, GEN = "store-under-test", None


class Crash(BaseException):  # not an Exception: the replay must not take it for poison
    """The process dies here."""


class CrashingStore:
    """The store as one process sees it: the ``crash_at``-th write raises Crash."""

    def __init__(self, store, crash_at: int | None) -> None:
        self.store, self.crash_at, self.writes = store, crash_at, 0

    def _tick(self) -> None:
        self.writes += 1
        if self.crash_at is not None and self.writes == self.crash_at:
            raise Crash

    def put_if_absent(self, *a, **k):
        self._tick()
        return self.store.put_if_absent(*a, **k)

    def put_many_if_absent(self, *a, **k):
        self._tick()
        return self.store.put_many_if_absent(*a, **k)

    def __getattr__(self, name):
        return getattr(self.store, name)


CFG_DIRS = tempfile.TemporaryDirectory(prefix="flk-ckpt-cfg-")  # every example's DATA_DIR; gone at exit


def pipeline(store) -> ServerPipeline:
    cfg = load_config({"DATA_DIR": tempfile.mkdtemp(dir=CFG_DIRS.name), "PCS_HMAC_KEY": KEY})
    server = types.SimpleNamespace(store=store, executor=None,
                                   admission=types.SimpleNamespace(buckets=None),
                                   quarantine_record=lambda *a: None)
    return build_pipeline(cfg, server)


def records(picks: list[int], start: int) -> list[bytes]:
    """Inbox records: a pick < len(POOL) is that PCS (repeats are duplicates), else junk."""
    out = []
    for k, p in enumerate(picks):
        body = POOL[p] if p < len(POOL) else b'{"not": "a pcs"}'
        out.append(encode_inbox_record(InboxRecord("", T0 + start + k, "default", body)))
    return out


def state(store) -> list:
    out, cur = [], None
    while True:
        page, cur = store.scan(cur, 500, time.time())
        out += [(t, p, o.to_bytes()) for t, p, o in page]
        if cur is None:
            return out


def start(wal_dir: str, db: str, crash_at: int | None, crash_checkpoint: str | None) -> int:
    """One worker start: replay from the checkpoint, then write the checkpoint. Returns
    the replay's first index; raises Crash where told."""
    wal = SegmentedLog(wal_dir)
    store = SqliteStore(db)
    try:
        first = replay_start(wal, STORE_ID, GEN, trust=True)
        pipeline(CrashingStore(store, crash_at))._replay_all(wal, first)
        end = seal_for_checkpoint(wal)  # as the server does: the checkpoint is at a segment boundary
        if crash_checkpoint == "before":
            raise Crash
        assert write_checkpoint(wal, end, store, STORE_ID, GEN)
        if crash_checkpoint == "after":
            raise Crash
        return first
    finally:
        store.close()
        wal.close()


def append(wal_dir: str, payloads: list[bytes]) -> None:
    wal = SegmentedLog(wal_dir)
    try:
        wal.append_many(payloads)
        wal.sync()
    finally:
        wal.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=st.lists(st.integers(0, len(POOL)), min_size=1, max_size=10),
       second=st.lists(st.integers(0, len(POOL)), max_size=8),
       crash_start=st.sampled_from([1, 2]), crash_at=st.one_of(st.none(), st.integers(1, 12)),
       crash_checkpoint=st.sampled_from([None, "before", "after"]))
def test_a_crash_at_any_point_around_the_checkpoint_replays_exactly(first, second, crash_start, crash_at,
                                                                    crash_checkpoint) -> None:
    batch1, batch2 = records(first, 0), records(second, 100)
    with tempfile.TemporaryDirectory() as ref_dir, tempfile.TemporaryDirectory() as d:
        # the reference: one uninterrupted replay of the whole WAL
        append(f"{ref_dir}/wal", batch1 + batch2)
        start(f"{ref_dir}/wal", f"{ref_dir}/db", None, None)
        ref = SqliteStore(f"{ref_dir}/db")
        want = state(ref)
        ref.close()
        # the run: start 1 after batch 1, traffic (batch 2), start 2; one of them crashes
        wal_dir, db = f"{d}/wal", f"{d}/db"
        append(wal_dir, batch1)
        try:
            start(wal_dir, db, crash_at if crash_start == 1 else None, crash_checkpoint if crash_start == 1 else None)
        except Crash:
            pass
        append(wal_dir, batch2)
        try:
            start(wal_dir, db, crash_at if crash_start == 2 else None, crash_checkpoint if crash_start == 2 else None)
        except Crash:
            pass
        last = start(wal_dir, db, None, None)  # the restart after the crash: must converge
        got = SqliteStore(db)
        assert state(got) == want
        got.close()
        # and the checkpoint worked: the final start replayed from where the last finished start stopped
        assert last <= len(batch1) + len(batch2)
        ck = json.loads(open(f"{wal_dir}/{CHECKPOINT_FILE}").read())
        assert ck["index"] == len(batch1) + len(batch2)


def test_a_checkpoint_of_another_store_or_generation_or_an_untrusted_store_replays_everything(tmp_path) -> None:
    wal_dir, db = str(tmp_path / "wal"), str(tmp_path / "db")
    append(wal_dir, records([0, 1, 2], 0))
    assert start(wal_dir, db, None, None) == 0
    assert start(wal_dir, db, None, None) == 3  # nothing left to replay
    wal = SegmentedLog(wal_dir)
    try:
        assert replay_start(wal, "another-store", GEN, trust=True) == 0
        assert replay_start(wal, STORE_ID, "another-generation", trust=True) == 0
        assert replay_start(wal, STORE_ID, GEN, trust=False) == 0
        (tmp_path / "wal" / CHECKPOINT_FILE).write_text("{not json")
        assert replay_start(wal, STORE_ID, GEN, trust=True) == 0
    finally:
        wal.close()


@pytest.mark.parametrize("aof", [False, True])
def test_redis_gives_a_checkpoint_only_with_an_fsynced_aof(aof) -> None:
    from .privatestores import PrivateRedis

    redis = PrivateRedis(persistent=aof).start()
    from flk.impl.dedup.redis import RedisStore

    store = RedisStore(redis.url)
    try:
        assert store.make_durable() is aof
    finally:
        store.close()
        redis.close()
