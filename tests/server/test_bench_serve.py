"""``flk bench serve --json --quick``: one JSON object with the named figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .proc import FLK, ServerProc, clean_env

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk missing: run scripts/install_wrk.sh")
def test_bench_serve_quick_prints_figures() -> None:
    out = subprocess.run([FLK, "bench", "serve", "--json", "--quick", "--repeat", "1"],
                         capture_output=True, text=True, timeout=300, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    fig = json.loads(out.stdout)
    for key in ("sqlite_rps", "sqlite_p99_ms", "bare_rps", "ratio_sqlite_vs_bare", "cores", "core_path",
                "load_avg_1m_before", "load_avg_1m_after", "sqlite_minimal_rps", "bare_minimal_rps",
                "ratio_sqlite_minimal_vs_bare", "body_bytes_realistic", "body_bytes_minimal"):
        assert key in fig
    from flk.impl.core.canonical import CORE_PATH
    from flk.impl.server.config import core_count

    assert fig["core_path"] == CORE_PATH and fig["workers"] == core_count()  # flk serve's default, bare the same
    assert fig["sqlite_rps"] > 0 and fig["bare_rps"] > 0
    assert fig["ratio_sqlite_vs_bare"] == round(fig["sqlite_rps"] / fig["bare_realistic_rps"], 3)
    assert fig["ratio_sqlite_minimal_vs_bare"] == round(fig["sqlite_minimal_rps"] / fig["bare_minimal_rps"], 3)
    assert fig["ratio_sqlite_vs_bare_starlette"] == round(fig["sqlite_rps"] / fig["bare_starlette_rps"], 3)
    # the reference beside the goal: bare Starlette with its workers left to the scheduler
    assert fig["bare_starlette_unpinned_rps"] > 0 and fig["bare_starlette_unpinned_socket_errors"] == 0
    assert fig["ratio_sqlite_vs_bare_starlette_unpinned"] == round(
        fig["sqlite_rps"] / fig["bare_starlette_unpinned_rps"], 3)
    # the goal's ratio round by round (--repeat 1: one round, the headline ratio itself)
    (only,) = fig["ratio_sqlite_vs_bare_starlette_rounds"]
    assert only == pytest.approx(fig["ratio_sqlite_vs_bare_starlette"], abs=0.0015)  # from unrounded req/s
    assert fig["ratio_sqlite_vs_bare_starlette_rounds_median"] == only
    for who in ("sqlite", "sqlite_minimal", "bare_realistic", "bare_minimal", "bare_starlette"):
        assert fig[f"{who}_cpu_us_per_req"] > 0  # CPU per request of both, from /proc
        assert fig[f"{who}_switches_per_req"] >= 0  # context switches per request, from /proc
        # the split of the CPU per request: event-loop threads and the others (medians of the parts)
        assert fig[f"{who}_main_thread_cpu_us_per_req"] > 0 and fig[f"{who}_other_threads_cpu_us_per_req"] >= 0
        # which way the turn waited: the machine's idle share, the server threads' wait for a core
        assert 0.0 <= fig[f"{who}_cpu_idle_fraction"] < 1.0
        assert fig[f"{who}_runqueue_wait_us_per_req"] >= 0
    assert fig["sqlite_other_threads_cpu_us_per_req"] > 0  # the batch driver's threads verify and store
    # and by the threads' kernel names: the event loops, the batch thread (flk.impl.storage.threads)
    threads = fig["sqlite_thread_cpu_us_per_req"]
    assert threads["main"] > 0 and threads["submit-batch"] > 0, threads
    assert "submit-batch" not in fig["bare_realistic_thread_cpu_us_per_req"]  # the bare handler has none
    assert fig["bare_realistic_other_threads_cpu_us_per_req"] < fig["sqlite_other_threads_cpu_us_per_req"]
    # the writes: the disk got at least each body the durable anchor and the server logged (the
    # disk's counter is whoever wrote: other writers on the machine only add to it, so the two
    # are not compared -- under a second test's fsyncs the anchor's turn read 35 KiB against
    # the server's 15); the server's batch thread passed each body to write (its own counter)
    body_kib = fig["body_bytes_realistic"] / 1024
    assert fig["bare_durable_disk_write_kb_per_req"] >= 0.9 * body_kib
    assert fig["sqlite_disk_write_kb_per_req"] >= 0.9 * body_kib
    assert fig["sqlite_disk_write_mb_per_s"] > 0
    wrote = fig["sqlite_thread_wchar_kb_per_req"]
    assert wrote["submit-batch"] >= 0.9 * body_kib and wrote["main"] > 0, wrote  # main: the answers
    assert "submit-batch" not in fig["bare_realistic_thread_wchar_kb_per_req"]
    # realistic bodies carry the optional fields flk agent build and the submit client add
    assert fig["body_bytes_realistic"] > fig["body_bytes_minimal"]
    assert fig["sqlite_minimal_socket_errors"] == 0
    fresh = fig["fresh_bodies_ok"]  # False: some measured requests were dedup hits, and no goal is met
    # False only when a run sent more requests than the fresh half of the bodies, which holds
    # FRESH_RPS req/s for the run's whole length
    from flk.impl.lab.bench.serve import FRESH_RPS

    assert fresh is (fig["max_requests_per_run"] <= fig["fresh_bodies_per_run"])
    assert fig["fresh_bodies_per_run"] == fig["distinct_bodies"] // 2 >= FRESH_RPS * fig["seconds_per_run"]
    assert fig["sqlite_socket_errors"] == 0
    # the physical limits beside the figures: fsync latency of this disk and the ceilings it sets
    assert fig["fsync_ms_p50"] > 0 and fig["fsync_prealloc_ms_p50"] > 0
    # the inbox WAL's fsync (written into zeros written ahead) sets the WAL's ceiling
    assert fig["fsync_ceiling_rps_per_wal_max_batch"] == round(256 / (fig["fsync_prealloc_ms_p50"] / 1000))
    # the CPU ceilings come from the runs' steady middle (exact on-CPU time over half the run)
    steady_cpu, steady_loadgen = fig["sqlite_steady_cpu_us_per_req"], fig["sqlite_steady_loadgen_cpu_us_per_req"]
    assert steady_cpu > 0 and steady_loadgen > 0 and 0.0 <= fig["sqlite_steady_idle_fraction"] < 1.0
    assert fig["sqlite_cpu_ceiling_rps"] == round(fig["workers"] * 1e6 / steady_cpu)
    # the load generator shares the cores: its CPU per request and the ceiling of this machine
    assert fig["sqlite_loadgen_cpu_us_per_req"] > 0
    assert fig["sqlite_shared_cpu_ceiling_rps"] == round(fig["workers"] * 1e6 / (steady_cpu + steady_loadgen))
    # a ceiling is never below what was served: the server and wrk never use more than every core
    # (one run: the ceiling and the rate are of the same run)
    assert fig["sqlite_shared_cpu_ceiling_rps"] >= fig["sqlite_rps"] - 1
    for label in ("sqlite", "sqlite_depth2"):  # the default depth and the pipelined group commit
        assert fig[f"{label}_fsync_ceiling_rps_max_batch"] == round(
            256 / (fig["fsync_prealloc_ms_p50"] / 1000) * fig["workers"])  # one WAL per worker, full batches
        ceilings = {k: fig[f"{label}_{k}"] for k in ("cpu_ceiling_rps", "shared_cpu_ceiling_rps",
                                                     "fsync_ceiling_rps_max_batch")}
        assert fig[f"{label}_ceiling_rps"] == min(ceilings.values())
        assert fig[f"{label}_ceiling_bound_by"] in ceilings
        assert fig[f"{label}_goal_5000_within_ceiling"] == (fig[f"{label}_ceiling_rps"] >= 5000)
        # the ratio goal at the same ceiling, over bare Starlette's req/s of this run
        ceiling_ratio = fig[f"{label}_ceiling_rps"] / fig["bare_starlette_rps"]
        assert fig[f"{label}_ceiling_ratio_vs_bare_starlette"] == round(ceiling_ratio, 3)
        assert fig[f"{label}_goal_ratio_0_7_within_ceiling"] == (ceiling_ratio >= 0.7)
        assert fig[f"ratio_{label}_vs_bare_starlette"] == round(fig[f"{label}_rps"] / fig["bare_starlette_rps"], 3)
    # the ratio goal's anchor is bare Starlette; the raw-ASGI ratio is reported beside it
    assert fig["goal_ratio_0_7"] == (fresh and fig["ratio_sqlite_vs_bare_starlette"] >= 0.7)
    assert fig["goal_ratio_0_7_vs_bare_asgi"] == (fresh and fig["ratio_sqlite_vs_bare"] >= 0.7)
    assert fig["sqlite_depth2_rps"] > 0 and fig["sqlite_depth2_socket_errors"] == 0
    # the saturation turn: the default server and its own bare-Starlette anchor at 4x the connections
    assert fig["sqlite_sat_rps"] > 0 and fig["sqlite_sat_socket_errors"] == 0 and fig["bare_starlette_sat_rps"] > 0
    assert fig["ratio_sqlite_sat_vs_bare_starlette"] == round(fig["sqlite_sat_rps"] / fig["bare_starlette_sat_rps"], 3)
    assert fig["sqlite_sat_stage_us"]["mean_latency_us"] == pytest.approx(
        4 * fig["connections"] * 1e6 / fig["sqlite_sat_rps"], rel=0.01)  # its own connection count
    assert fig["sqlite_sat_ceiling_ratio_vs_bare_starlette"] == round(
        fig["sqlite_sat_ceiling_rps"] / fig["bare_starlette_sat_rps"], 3)
    # admission's 429s are answers to wrk but not to the goals: the 2xx rate is
    assert fig["sqlite_sat_ok_rps"] <= fig["sqlite_sat_rps"] and fig["sqlite_ok_rps"] <= fig["sqlite_rps"]
    assert fig["ratio_sqlite_sat_ok_vs_bare_starlette"] == round(fig["sqlite_sat_ok_rps"] / fig["bare_starlette_sat_rps"], 3)
    assert fig["goal_sat_ratio_0_7"] == (fresh and fig["ratio_sqlite_sat_ok_vs_bare_starlette"] >= 0.7)
    assert fig["goal_sat_sqlite_rps_5000"] == (fresh and fig["sqlite_sat_ok_rps"] >= 5000)
    assert fig["goal_sat_sqlite_p99_25ms"] == (fresh and fig["sqlite_sat_p99_ms"] <= 25)
    assert "ratio_sqlite_sat_vs_bare" not in fig  # no raw-ASGI anchor at that many connections
    # the WAL-first anchor: bare Starlette answering after an append and a group fdatasync
    for sat in ("", "_sat"):
        durable, anchor = fig[f"bare_durable{sat}_rps"], fig[f"bare_starlette{sat}_rps"]
        assert durable > 0 and fig[f"bare_durable{sat}_socket_errors"] == 0 and fig[f"bare_durable{sat}_non2xx"] == 0
        assert fig[f"ratio_bare_durable{sat}_vs_bare_starlette"] == round(durable / anchor, 3)
        assert f"goal{sat}_ratio_0_7_within_wal_first_ceiling" not in fig  # a reference, not a ceiling
        server = fig["sqlite_sat_ok_rps" if sat else "sqlite_rps"]
        assert fig[f"ratio_sqlite{sat}_vs_bare_durable{sat}"] == round(server / durable, 3)
        if f"bare_durable{sat}_requests_per_fsync" in fig:  # perf counted its fsyncs: it did sync
            assert fig[f"bare_durable{sat}_fsyncs_per_s"] > 0
    # where a request's time went: the batch driver's stages (workers' submit_stages lines) and the rest
    from flk.impl.server.batchdriver import STAGES

    for label in ("sqlite", "sqlite_depth2"):
        stages = fig[f"{label}_stage_us"]
        assert stages["mean_batch"] >= 1 and all(stages[f"{name}_us"] >= 0 for name in STAGES)
        assert stages["mean_latency_us"] > 0  # connections / req/s: the closed loop's mean latency
        if fig["cores"] >= 2:  # several workers: each run's smallest share of the requests
            shares = fig[f"{label}_runs_smallest_worker_share"]
            assert len(shares) == len(fig[f"{label}_runs_rps"]) and all(0 <= x <= 1 / fig["cores"] for x in shares)
    if "sqlite_fsyncs_per_s" in fig:  # perf could count the server's fsyncs
        assert fig["sqlite_fsyncs_per_s"] > 0 and fig["sqlite_requests_per_fsync"] >= 1
    # the batch driver alone, unpipelined against pipelined, on the real disk and on a slowed one
    for prefix in ("driver", "driver_slowdisk"):
        for depth in (1, 2):
            assert fig[f"{prefix}_depth{depth}_rps"] > 0 and fig[f"{prefix}_depth{depth}_fsyncs_per_s"] > 0
        assert fig[f"{prefix}_depth2_vs_depth1"] == round(fig[f"{prefix}_depth2_rps"] / fig[f"{prefix}_depth1_rps"], 3)
    assert fig["sqlite_non2xx"] < 0.05 * fig["sqlite_rps"] * fig["seconds_per_run"]


def test_no_goal_is_met_on_recycled_bodies() -> None:
    """A measured request that repeated a body the server already held was a dedup hit, cheaper than
    a fresh PCS: the run's figures stand, but every goal reads False."""
    from flk.impl.lab.bench.serve import _goals

    fig = {"sqlite_rps": 20_000.0, "sqlite_p99_ms": 3.0, "ratio_sqlite_vs_bare_starlette": 0.9,
           "ratio_sqlite_vs_bare": 0.8, "sqlite_sat_ok_rps": 20_000.0, "sqlite_sat_p99_ms": 9.0,
           "ratio_sqlite_sat_ok_vs_bare_starlette": 0.9}
    for fresh in (True, False):
        out = dict(fig, fresh_bodies_ok=fresh)
        _goals(out)
        goals = {k: v for k, v in out.items() if k.startswith("goal_")}
        assert len(goals) >= 7 and all(v is fresh for v in goals.values()), goals


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.floats(1.0, 1e6), st.floats(1.0, 1e6)), min_size=1, max_size=9))
def test_round_ratios_pair_each_server_turn_with_its_own_anchor(pairs) -> None:
    from flk.impl.lab.bench.serve import GOAL_RATIO, _round_ratios

    anchors = [{"rps": a} for a, _ in pairs]
    servers = [{"rps": s} for _, s in pairs]
    got = _round_ratios(anchors, servers, "r")
    assert got["r_rounds"] == [round(s / a, 3) for a, s in pairs]  # in round order, never re-paired
    assert got["r_rounds_min"] == min(got["r_rounds"]) and got["r_rounds_max"] == max(got["r_rounds"])
    assert got["r_rounds_min"] <= got["r_rounds_median"] <= got["r_rounds_max"]
    assert got["r_rounds_at_goal"] == sum(r >= GOAL_RATIO for r in got["r_rounds"])


def test_the_full_bench_runs_the_store_off_disk_counterfactual_beside_the_default_server(monkeypatch) -> None:
    """The counterfactual turn is the default server (the same env as ``sqlite``'s, which the
    turn then gives ``SQLITE_PATH`` on a tmpfs), in the full bench only, and only where a tmpfs is."""
    from flk.impl.lab.bench import serve

    full = {name: env for name, kind, env in serve._backends(2, False, {})}
    quick = {name for name, _, _ in serve._backends(2, True, {})}
    if serve.tmpfs_dir() is not None:
        assert full[serve.STORE_OFF_DISK] == full["sqlite"] == {}
    assert serve.STORE_OFF_DISK not in quick
    monkeypatch.setattr(serve, "tmpfs_dir", lambda: None)
    assert serve.STORE_OFF_DISK not in {name for name, _, _ in serve._backends(2, False, {})}


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm here")
def test_the_store_off_disk_turn_serves_from_a_file_in_memory_and_leaves_none(tmp_path) -> None:
    """Only the store's file moves to the tmpfs: a real server answers from it, its inbox WAL
    stays in the data directory, and the file, its log and index are gone after the turn."""
    from flk.impl.lab.bench.serve import fs_type, store_off_disk, tmpfs_dir
    from flk.impl.testing.workload import bodies

    if tmpfs_dir() is None:
        pytest.skip("/dev/shm is not a tmpfs here")
    key = "0123456789abcdef0123"
    with store_off_disk({"PCS_HMAC_KEY": key}) as env:
        path = env["SQLITE_PATH"]
        assert env["PCS_HMAC_KEY"] == key and set(env) == {"PCS_HMAC_KEY", "SQLITE_PATH"}
        assert fs_type(os.path.dirname(path)) == "tmpfs" and not os.path.exists(path)
        with ServerProc(tmp_path, env) as srv:
            body = bodies(key.encode(), 1)[0]
            assert httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=20).status_code == 200
            again = httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=20)
            assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.headers
            assert os.path.getsize(path) > 0
        assert any(p.name.startswith("worker-") for p in (tmp_path / "data" / "wal").iterdir())
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.startswith(os.path.basename(path))]
