"""The batch driver's stage times: where a submission's time goes, and the bench's combination
of the workers' stage lines."""

from __future__ import annotations

import json
import time

from flk.impl.lab.bench.serve import _stages
from flk.impl.server.batchdriver import STAGES

from .test_batchdriver import body, make, run_all


def _stages_with_slow_sync(tmp_path, n: int, delay_s: float, sync_s: float, depth: int = 1) -> dict:
    """The stage times of ``n`` requests through a driver whose every ``wal.sync()`` takes ``sync_s`` more."""
    driver, srv, _ = make(tmp_path, delay_s=delay_s)
    driver.formation.depth = depth
    real = srv.wal.sync

    def slow_sync():
        time.sleep(sync_s)
        return real()

    srv.wal.sync = slow_sync
    got = run_all(driver, [(body(i), "ta") for i in range(n)])
    assert all(r.status == 200 for r in got)
    return {**driver.stages.as_dict(), "syncs": driver.syncs}


def test_stage_times_attribute_the_formation_delay_to_wait_and_a_slow_fsync_to_sync(tmp_path) -> None:
    # windows wide enough for a loaded 2-core machine (under load 6-7 the append or finish stage
    # of 12 requests took 27 ms once; a preemption between the formation's clock read and the
    # stage clock's shortened a recorded wait by 6 ms): a 400 ms delay, a 150 ms slowed fsync,
    # the other stages under 100 ms
    stages = _stages_with_slow_sync(tmp_path, 12, delay_s=0.400, sync_s=0.150)
    assert stages["requests"] == 12 and stages["batches"] == 1 and stages["mean_batch"] == 12
    assert stages["wait_us"] >= 300_000  # the 400 ms delay of the batch's oldest request (all arrived at once)
    assert 145_000 <= stages["sync_us"] < stages["wait_us"]  # the slowed fsync, not the delay
    # of the sync stage, the part inside wal.sync(): the slowed call, per request and per call
    assert 145_000 <= stages["sync_wal_us"] <= stages["sync_us"]
    assert stages["wal_syncs"] == 1 and 145_000 <= stages["wal_sync_call_us"] <= stages["sync_us"]
    assert stages["append_us"] < 100_000 and stages["finish_us"] < 100_000
    assert all(stages[f"{name}_us"] >= 0 for name in STAGES)


def test_at_depth_2_the_sync_threads_call_is_counted_for_every_batch_it_covered(tmp_path) -> None:
    # depth 2: the sync thread runs wal.sync() and passes its duration back with the batches it covered
    stages = _stages_with_slow_sync(tmp_path, 20, delay_s=0.0, sync_s=0.015, depth=2)
    assert stages["requests"] == 20 and stages["wal_syncs"] == stages["syncs"] >= 1
    assert 13_000 <= stages["wal_sync_call_us"]  # each call the slowed one
    # every request was covered by one slowed call: its part of the sync stage is at least that
    assert 13_000 <= stages["sync_wal_us"] <= stages["sync_us"]


def test_bench_combines_the_workers_stage_lines_weighted_by_requests(tmp_path) -> None:
    paths = []
    for i, (n, wait) in enumerate([(100, 1000.0), (300, 3000.0)]):
        path = tmp_path / f"w{i}.log"
        line = {"event": "submit_stages", "requests": n, "batches": n // 10, "wait_us": wait, "sync_us": 10.0}
        path.write_text('{"event":"listening","port":1}\n' + json.dumps(line) + "\n")
        paths.append(str(path))
    got = _stages(paths)
    assert got == {"wait_us": 2500.0, "sync_us": 10.0, "mean_batch": 10.0, "smallest_worker_share": 0.25}
    assert "smallest_worker_share" not in _stages(paths[:1])  # one worker: no split to report
    (tmp_path / "none.log").write_text("{}\n")
    assert _stages([str(tmp_path / "none.log")]) == {}


def test_the_stop_log_keeps_every_stage_field(tmp_path) -> None:
    # the server's JSON log drops fields outside its allow-list: submit_stages would lose a stage
    import io

    from flk.impl.server.logs import JsonLogger

    driver, _, _ = make(tmp_path)
    driver.close()
    fields = driver.stages.as_dict()
    out = io.StringIO()
    JsonLogger(out).info("submit_stages", **fields)
    logged = json.loads(out.getvalue())
    assert {k: logged.get(k) for k in fields} == fields
