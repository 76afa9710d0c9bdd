"""``flk bench restart``: how long a ``flk serve`` worker takes to be ready again with
1,000,000 records in its inbox WAL, with WAL checkpoints and segment retention.

What is measured (wall time from spawning ``flk serve`` until ``/ready`` answers 200,
one worker, SQLite dedup store, default settings: ``WAL_RETENTION=archive``):

1. ``full_replay_start_s``: the first start over an inbox WAL of ``records`` validly
   signed, distinct PCS written straight into the worker's WAL directory (no
   checkpoint yet): the whole WAL is replayed into the empty store -- what every start
   cost before checkpoints. Measured once (it is the expensive setup).
2. Then ``repeat + 1`` restarts, each after ``tail`` new records were appended to the
   WAL while the server was down (records served after the last checkpoint and not
   checkpointed: a crash). Each start replays only the tail, writes a checkpoint and
   retires segments below the previous one; the first of them still opens the whole WAL
   (it is the one that archives it), the others open only what is left:
   ``restart_s_median`` over those ``repeat`` restarts (all listed in ``restart_s_runs``,
   the first in ``restart_first_s``).
3. The same-run anchor ``empty_start_s_median``: a start over an empty data dir
   (process start, imports, store open): the floor of any restart.

Also reported: the WAL's bytes, the live and archived segments at the end, the 1-minute
load average before and after (the machine is shared; read the figures against the
anchor). ``--quick``: 20,000 records.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from ...core import textdata

KEY = "bench-restart-key-0123456789abcdef"
BATCH = 256  # records per received_at (a submit batch)


def _write_records(wal_dir: str, docs: list[bytes], t0: float) -> None:
    from ...storage.inbox import InboxRecord, encode_inbox_record
    from ...storage.wal import SegmentedLog

    wal = SegmentedLog(wal_dir)
    try:
        for i in range(0, len(docs), BATCH):
            now = t0 + i / BATCH * 0.002
            wal.append_many([encode_inbox_record(InboxRecord("", now, "default", b)) for b in docs[i:i + BATCH]])
        wal.sync()
    finally:
        wal.close()


def _start_stop(data: str, timeout_s: float = 7200.0) -> float:
    """Seconds from spawning ``flk serve`` to ``/ready`` answering 200; then a clean stop
    (SIGTERM: the worker drains, checkpoints and closes its WAL)."""
    import signal
    import subprocess

    import httpx

    from .serve import _env, _flk

    log_path = os.path.join(data, "server.log")
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0  # this start's lines only
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([_flk(), "serve", "--port", "0"],
                                env=_env(PCS_HMAC_KEY=KEY, DATA_DIR=data, WORKERS="1", LOG_LEVEL="info"),
                                cwd=data, stdout=log, stderr=log, start_new_session=True)
    try:
        port = None
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"flk serve exited {proc.returncode}")
            if port is None:
                with open(log_path, "rb") as fh:
                    fh.seek(offset)
                    lines = fh.read().decode(errors="replace").splitlines()
                for line in lines:
                    if line.startswith("{") and '"listening"' in line:
                        port = textdata.json_loads(line)["port"]
            if port is not None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                        return time.perf_counter() - t0
                except httpx.HTTPError:
                    pass
            time.sleep(0.02)
        raise TimeoutError("flk serve not ready")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(600)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _size(path: str) -> tuple[int, int]:
    files = [f for f in os.listdir(path) if f.endswith(".log")] if os.path.isdir(path) else []
    return len(files), sum(os.path.getsize(os.path.join(path, f)) for f in files)


def run(repeat: int = 3, quick: bool = False) -> dict:
    from ...testing.workload import bodies

    records = 20_000 if quick else 1_000_000
    tail = 2_560
    load_before = os.getloadavg()[0]
    work = tempfile.mkdtemp(prefix="flk-bench-restart-")
    try:
        t = time.perf_counter()
        docs = bodies(KEY.encode(), records + tail * (repeat + 1), seed=5)
        gen_s = time.perf_counter() - t
        data = os.path.join(work, "data")
        wal_dir = os.path.join(data, "wal", "worker-0")
        t0 = time.time() - 86_400
        t = time.perf_counter()
        _write_records(wal_dir, docs[:records], t0)
        write_s = time.perf_counter() - t
        wal_bytes = _size(wal_dir)[1]
        full = _start_stop(data)
        runs = []
        for r in range(repeat + 1):
            start = records + r * tail
            _write_records(wal_dir, docs[start:start + tail], t0 + 3600 + r)
            runs.append(_start_stop(data))
        empty = []
        for r in range(repeat):
            d = os.path.join(work, f"empty-{r}")
            os.makedirs(d)
            empty.append(_start_stop(d))
        live = _size(wal_dir)
        archived = _size(os.path.join(wal_dir, "archive"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "records": records,
        "tail_records": tail,
        "wal_bytes": wal_bytes,
        "bodies_s": round(gen_s, 2),
        "wal_write_s": round(write_s, 2),
        "full_replay_start_s": round(full, 2),
        "restart_first_s": round(runs[0], 2),
        "restart_s_median": round(statistics.median(runs[1:]), 3),
        "restart_s_runs": [round(x, 3) for x in runs],
        "empty_start_s_median": round(statistics.median(empty), 3),
        "live_segments_after": live[0],
        "live_bytes_after": live[1],
        "archived_segments_after": archived[0],
        "archived_bytes_after": archived[1],
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
