"""Running WAL checkpoints and segment retention.

While a worker serves, :class:`Checkpointer` seals the active segment (its home
answers reach the manifest), writes the previous mark as the checkpoint once the
store made its outcomes durable, and retires (archives or deletes) the sealed
segments below it -- never one the replication shipper has not shipped. A crash
at ANY file operation of serving, checkpointing or retiring (Hypothesis over the
crash points) still ends, after one restart, with exactly the dedup state of one
uninterrupted replay of every record the WAL holds, and with a home answer in a
sealed manifest for every record, equal to the one that replay gives.

Real parts: the served batches run the server's core (``serve_batch``) on a real
``SegmentedLog`` and a real SQLite store on disk; a crash is an exception raised
before the chosen file operation, after which everything in memory is dropped.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup.sqlite import SqliteStore
from flk.impl.storage.checkpoint import (
    ARCHIVE_DIR,
    CHECKPOINT_FILE,
    Checkpointer,
    archived_records,
    replay_start,
)
from flk.impl.storage.fs import OsFileSystem
from flk.impl.storage.inbox import decode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import A_CONFLICT, A_REJECTED, decode_answers, manifest_name
from flk.impl.verifier.core import replay_batch, same_time_runs, serve_batch
from flk.impl.verifier.pipeline import Request

from .test_wal_checkpoint import GEN, POOL, STORE_ID, Crash, pipeline, state

T0 = time.time() - 3600
JUNK = b'{"not": "a pcs"}'


class CrashFS(OsFileSystem):
    """The OS file system; the ``crash_at``-th changing operation raises Crash before it runs."""

    def __init__(self, crash_at: int | None) -> None:
        super().__init__()
        self.crash_at, self.ops = crash_at, 0

    def _tick(self) -> None:
        self.ops += 1
        if self.crash_at is not None and self.ops == self.crash_at:
            raise Crash

    def write_atomic(self, path, data):
        self._tick()
        return super().write_atomic(path, data)

    def rename(self, src, dst):
        self._tick()
        return super().rename(src, dst)

    def remove(self, path):
        self._tick()
        return super().remove(path)

    def open_append(self, path):
        self._tick()
        return super().open_append(path)

    def chmod_readonly(self, path):
        self._tick()
        return super().chmod_readonly(path)


def checkpointer(wal, store, policy: str, shipped=lambda: None) -> Checkpointer:
    return Checkpointer(lambda: wal, threading.Lock(), lambda: store, STORE_ID, lambda: GEN, lambda: True,
                        lambda: True, every_records=1, every_s=0.0, policy=policy, shipped=shipped)


def start(wal_dir: str, db: str, policy: str, fs=None, shipped=lambda: None):
    """A worker start: open, replay from the checkpoint, checkpoint (seal) at once."""
    wal = SegmentedLog(wal_dir, fs=fs, segment_bytes=700)
    store = SqliteStore(db)
    first = replay_start(wal, STORE_ID, GEN, trust=True)
    pipe = pipeline(store)
    pipe._replay_all(wal, first)
    ck = checkpointer(wal, store, policy, shipped)
    ck.started_from(first)
    ck.checkpoint_now(time.time())
    return wal, store, pipe, ck, first


def serve(wal, store, pipe, picks: list[int], now: float) -> None:
    requests = [Request(POOL[p] if p < len(POOL) else JUNK, None, {}) for p in picks]
    serve_batch(pipe.verifier, requests, now, wal, store)


def all_records(wal) -> list[tuple[int, bytes]]:
    return list(archived_records(wal, 0)) + list(wal.records(wal.first_index))


def home_answers(wal_dir: str) -> dict[int, tuple]:
    """Every sealed segment's answers (archive and log), normalised: (refused, held digest)."""
    out: dict[int, tuple] = {}
    for d in (posixpath.join(wal_dir, ARCHIVE_DIR), wal_dir):
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for name in names:
            if not name.startswith("seg-") or not name.endswith(".log") or manifest_name(name) not in names:
                continue
            with open(posixpath.join(d, manifest_name(name)), "rb") as fh:
                notes = decode_answers(json.loads(fh.read())) or {}
            out.update({i: (n.answer in (A_CONFLICT, A_REJECTED), n.digest) for i, n in notes.items()})
    return out


def reference(payloads: list[bytes]) -> tuple[list, dict[int, tuple]]:
    """The dedup state and the answers of one uninterrupted replay of ``payloads`` from index 0."""
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(f"{d}/db")
        verifier = pipeline(store).verifier
        recs = [decode_inbox_record(p) for p in payloads]
        answers = {}
        for a, b in same_time_runs(recs):
            batch = replay_batch(verifier, recs[a:b], store, indexes=list(range(a, b)))
            answers.update({n.index: (n.refused, n.digest if n.answer == A_CONFLICT else "")
                            for n in batch.notes()})
        want = state(store)
        store.close()
    return want, answers


OPS = st.lists(st.one_of(st.tuples(st.just("batch"), st.lists(st.integers(0, len(POOL)), min_size=1, max_size=4)),
                         st.just(("tick",))), min_size=1, max_size=8)


def run_and_restart(ops: list, crash_at: int | None) -> tuple[int, int]:
    """Serve ``ops`` (crashing at the ``crash_at``-th file operation), restart, check the
    result against one uninterrupted replay of the WAL; returns the file operations run
    and the number of records in the archive after the restart."""
    fs = CrashFS(crash_at)
    with tempfile.TemporaryDirectory() as d:
        wal_dir, db = f"{d}/wal", f"{d}/db"
        try:
            wal, store, pipe, ck, _ = start(wal_dir, db, "archive", fs=fs)
            for k, op in enumerate(ops):
                if op[0] == "batch":
                    serve(wal, store, pipe, op[1], T0 + k)
                else:
                    ck.tick(T0 + k)
            wal.close()
            store.close()
        except Crash:
            pass  # the process died: nothing in memory survives
        wal, store, _, ck, first = start(wal_dir, db, "archive")  # the restart
        try:
            payloads = [p for _, p in all_records(wal)]
            assert [i for i, _ in all_records(wal)] == list(range(len(payloads)))  # nothing lost
            want, want_answers = reference(payloads)
            assert state(store) == want
            # every record is in a sealed segment whose manifest carries its home answer
            assert home_answers(wal_dir) == want_answers
            assert set(want_answers) == set(range(len(payloads)))
            archived = len(list(archived_records(wal, 0)))
        finally:
            store.close()
            wal.close()
    return fs.ops, archived


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS, crash_at=st.one_of(st.none(), st.integers(1, 60)))
def test_a_crash_at_any_file_operation_while_serving_and_checkpointing_replays_exactly(ops, crash_at) -> None:
    run_and_restart(ops, crash_at)


def test_every_crash_point_of_one_run_with_archiving_replays_exactly() -> None:
    """Every file operation of a run that serves, checkpoints and archives, crashed at in turn."""
    ops = [("batch", [0, 1, 1]), ("tick",), ("batch", [2, 12, 0]), ("tick",), ("batch", [3, 4]), ("tick",),
           ("batch", [5]), ("tick",), ("tick",)]
    total, archived = run_and_restart(ops, None)
    assert total >= 25 and archived > 0  # seals, manifests, checkpoints, archive moves: all are crash points
    for crash_at in range(1, total + 1):
        assert run_and_restart(ops, crash_at)[0] == crash_at


def test_running_checkpoints_bound_the_replay_and_retire_segments(tmp_path) -> None:
    wal_dir, db = str(tmp_path / "wal"), str(tmp_path / "db")
    wal, store, pipe, ck, first = start(wal_dir, db, "archive")
    assert first == 0
    for k in range(6):
        serve(wal, store, pipe, [k, k + 1], T0 + k)
        ck.tick(T0 + k)
    # each tick checkpoints the previous tick's mark: all but the last batch are below it
    doc = json.loads((tmp_path / "wal" / CHECKPOINT_FILE).read_text())
    assert doc["index"] == 10 and ck.checkpoints == 6  # the start's checkpoint and five running ones
    live = [s for s in wal.segments() if s.count]
    assert ck.previous == 8 and live[0].first_index == 8  # segments below the one before were archived
    assert (tmp_path / "wal" / ARCHIVE_DIR).is_dir() and ck.retired
    store.close()
    wal.close()
    wal, store, _, _, first = start(wal_dir, db, "archive")
    assert first == 10  # only the records after the checkpoint were replayed
    # a rebuild (replay from 0) still reads the archived records
    assert [i for i, _ in all_records(wal)] == list(range(12))
    store.close()
    wal.close()


def test_no_segment_leaves_the_log_before_the_shipper_shipped_it(tmp_path) -> None:
    shipped = {"at": 0}
    wal_dir, db = str(tmp_path / "wal"), str(tmp_path / "db")
    wal, store, pipe, ck, _ = start(wal_dir, db, "delete", shipped=lambda: shipped["at"])
    for k in range(4):
        serve(wal, store, pipe, [k], T0 + k)
        ck.tick(T0 + k)
    assert (ck.previous, ck.index) == (2, 3) and ck.retired == []  # nothing shipped: nothing retired
    assert wal.first_index == 0
    shipped["at"] = 2
    assert ck.retire() and wal.first_index == 2  # up to the shipped watermark, deleted
    assert not (tmp_path / "wal" / ARCHIVE_DIR).exists()
    store.close()
    wal.close()


def test_an_unhealthy_worker_writes_no_running_checkpoint(tmp_path) -> None:
    wal_dir, db = str(tmp_path / "wal"), str(tmp_path / "db")
    wal, store, pipe, _, _ = start(wal_dir, db, "archive")
    healthy = {"ok": True}
    ck = Checkpointer(lambda: wal, threading.Lock(), lambda: store, STORE_ID, lambda: GEN, lambda: True,
                      lambda: healthy["ok"], every_records=1, every_s=0.0, policy="archive")
    serve(wal, store, pipe, [0], T0)
    ck.tick(T0)
    healthy["ok"] = False  # e.g. a store call failed: that record may be in the WAL without its outcome
    serve(wal, store, pipe, [1], T0 + 1)
    assert ck.tick(T0 + 1) == {"checkpoint": None, "retired": []}
    doc = json.loads((tmp_path / "wal" / CHECKPOINT_FILE).read_text())
    assert doc["index"] == 0
    store.close()
    wal.close()


def _worker(tmp_path, *, records: int, every_s: float, n: int, seed: int):
    """A worker's config (WAL_CHECKPOINT_RECORDS / _S, no group delay), ``n`` signed bodies, its
    app (checkpoint watch polled every 50 ms)."""
    from flk.impl.server.app import create_app
    from flk.impl.server.config import load_config
    from flk.impl.testing.workload import bodies

    key = "0123456789abcdef0123456789abcdef"
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": key, "WAL_GROUP_DELAY_MS": "0",
                       "WAL_CHECKPOINT_RECORDS": str(records), "WAL_CHECKPOINT_S": str(every_s)})
    app = create_app(cfg, 0)
    app.state.server.checkpoint_poll_s = 0.05
    return cfg, bodies(key.encode(), n, seed=seed), app


def test_a_serving_worker_checkpoints_while_it_runs_and_the_next_start_replays_only_the_rest(tmp_path) -> None:
    """The server's own wiring: a worker with WAL_CHECKPOINT_RECORDS=1 checkpoints while it
    serves (no stop in between), archives below the previous checkpoint, and a start after
    a crash replays only what came after the last checkpoint."""
    from starlette.testclient import TestClient

    from flk.impl.server.app import create_app

    cfg, docs, app = _worker(tmp_path, records=1, every_s=0.1, n=6, seed=3)
    srv = app.state.server
    wal_dir = cfg.worker_wal_dir(0)
    with TestClient(app) as client:
        for k, doc in enumerate(docs[:4]):
            assert client.post("/v1/pcs/submit", content=doc).status_code == 200
            deadline = time.monotonic() + 20
            while srv.checkpointer.index < k and time.monotonic() < deadline:
                time.sleep(0.05)
        deadline = time.monotonic() + 20
        while srv.checkpointer.index < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        with srv.checkpointer.mutex:  # the tick that wrote checkpoint 4 has also retired (it holds the mutex)
            pass
        ck = json.loads(open(os.path.join(wal_dir, CHECKPOINT_FILE)).read())
        assert ck["index"] == 4 and srv.checkpointer.checkpoints >= 3
        assert srv.wal.first_index > 0 and os.listdir(os.path.join(wal_dir, ARCHIVE_DIR))
        srv.ready_to_checkpoint = lambda: False  # the stop writes nothing: as after a crash
        assert client.post("/v1/pcs/submit", content=docs[4]).status_code == 200
        srv.checkpointer.healthy = lambda: False  # and no running checkpoint covers record 4
    app = create_app(cfg, 0)
    with TestClient(app) as client:
        assert app.state.server.checkpointer.previous == 4  # the start replayed from the checkpoint
        assert client.post("/v1/pcs/submit", content=docs[4]).headers.get("idempotent-replayed") == "true"


def test_a_wall_clock_step_back_holds_no_running_checkpoint_back(tmp_path, monkeypatch) -> None:
    """SPEC 11.9 rule 8: the worker schedules its checkpoints on the monotonic clock. On the wall
    clock, a step back of an hour after a mark held every running checkpoint back for an hour."""
    from starlette.testclient import TestClient

    import flk.impl.server.app as app_module

    class SteppedBack:
        """The time module, with its wall clock an hour behind."""

        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def time() -> float:
            return time.time() - 3600.0

    _, docs, app = _worker(tmp_path, records=1_000_000, every_s=0.2, n=2, seed=5)
    srv = app.state.server

    def checkpointed(index: int) -> bool:
        deadline = time.monotonic() + 10
        while srv.checkpointer.index < index and time.monotonic() < deadline:
            time.sleep(0.05)
        return srv.checkpointer.index >= index

    with TestClient(app) as client:
        assert client.post("/v1/pcs/submit", content=docs[0]).status_code == 200
        assert checkpointed(1)  # marked and written on the clock as it was
        monkeypatch.setattr(app_module, "time", SteppedBack())
        assert client.post("/v1/pcs/submit", content=docs[1]).status_code == 200
        assert checkpointed(2)  # 0.2 s later, not an hour later
