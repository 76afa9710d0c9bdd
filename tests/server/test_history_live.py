"""The black-box history checker (``flk history check``) on real ``flk serve`` processes.

Two ``flk agent load --history`` clients run at the same time against one
server: the same seed (so the same pcs_ids) but different duplicate rates,
so after their plans diverge every pcs_id is written by both with different
payload digests -- cross-client first-write-wins races -- besides each
client's own duplicates, conflicts and bad signatures. After the run the
server is stopped and ``flk history final-reads`` reads its dedup store (SQLite,
Redis or PostgreSQL, as the server's configuration opens it) as the final reads. The checker must find the merged history valid.

The negative control: the same load against a real ``flk serve`` whose
SQLite put-if-absent is made non-atomic (check, 2 s pause, unconditional
write, each put on its own store thread; tests/server/planted_racy_dedup/
sitecustomize.py, loaded through PYTHONPATH into the server process only).
Both clients send their first wave within milliseconds of each other, well
inside the pause, so the checker must report INV-FWW with a witness of two
acknowledged operations from different clients -- every run, not by luck.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import uuid

import pytest

from flk.impl.agent import loadgen
from flk.impl.dedup import open_store

from .proc import FLK, ServerProc, clean_env

pytestmark = [pytest.mark.server]

KEY = "history-live-key-0123456789abcdef"
SEED = 11  # a seed whose two plans diverge early: 6 of the first 12 pcs_ids race
N = 48
CONCURRENCY = 12
PLANTED = pathlib.Path(__file__).resolve().parent / "planted_racy_dedup"
CLIENTS = (
    ("--conflict-rate", "0.1", "--bad-sig-rate", "0.1", "--dup-rate", "0.05"),
    ("--dup-rate", "0.4", "--bad-sig-rate", "0.05"),
)


def _plan(extra: tuple[str, ...]) -> list:
    rates = dict(zip(extra[::2], (float(v) for v in extra[1::2]), strict=True))
    cfg = loadgen.PlanConfig(n=N, seed=SEED, dup_rate=rates.get("--dup-rate", 0.0),
                             bad_sig_rate=rates.get("--bad-sig-rate", 0.0),
                             conflict_rate=rates.get("--conflict-rate", 0.0))
    return loadgen.make_plan(cfg, KEY.encode())


def cross_client_conflicts() -> list[str]:
    """pcs_ids both clients send first (valid) with different digests within their first wave."""
    a, b = (_plan(extra) for extra in CLIENTS)
    return [x.pcs["pcs_id"] for x, y in zip(a[:CONCURRENCY], b[:CONCURRENCY], strict=True)
            if x.kind == y.kind == "valid" and x.pcs["pcs_id"] == y.pcs["pcs_id"] and x.digest != y.digest]


def run_clients(url: str, tmp_path: pathlib.Path) -> list[str]:
    """Both load clients at once; returns their history files."""
    paths, procs = [], []
    for k, extra in enumerate(CLIENTS):
        path = str(tmp_path / f"history-{k}.jsonl")
        paths.append(path)
        procs.append(subprocess.Popen(
            [FLK, "agent", "load", "--url", url, "--n", str(N), "--seed", str(SEED), *extra,
             "--concurrency", str(CONCURRENCY), "--history", path, "--json", "--no-progress",
             "--max-attempts", "3", "--timeout", "20"],
            env=clean_env(PCS_HMAC_KEY=KEY), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return paths


def write_final_reads(env: dict, url: str, path: pathlib.Path) -> int:
    """``flk history final-reads`` of the server's store, as the server's own configuration
    opens it (``env``), labelled with the region the clients sent to; returns its lines."""
    out = subprocess.run([FLK, "history", "final-reads", "--region", url, "--out", str(path)],
                         env=clean_env(**{k: v for k, v in env.items() if k != "PYTHONPATH"}),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return sum(1 for line in path.read_text().splitlines() if set(json.loads(line)) > {"region"})


def history_check(paths: list[str], final: pathlib.Path | None = None) -> tuple[int, dict]:
    args = [FLK, "history", "check", *paths, "--json"] + (["--final-reads", str(final)] if final else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def assert_not_vacuous(paths: list[str]) -> None:
    """The run exercised what the checker judges: replays, 409s, 401s, and cross-client races."""
    records = [json.loads(line) for p in paths for line in open(p, encoding="utf-8")]
    statuses = {r["status"] for r in records}
    assert {200, 401, 409} <= statuses | ({200} if 202 in statuses else set()), statuses
    assert any(r["replay"] for r in records), "no duplicate was answered as a replay"
    digests: dict[str, set] = {}
    for r in records:
        digests.setdefault(r["pcs_id"], set()).add(r["digest"])
    assert sum(1 for d in digests.values() if len(d) > 1) >= len(cross_client_conflicts())


def live_history_is_valid(tmp_path, env: dict) -> None:
    assert len(cross_client_conflicts()) >= 4  # the two plans really race on shared pcs_ids
    env = {"PCS_HMAC_KEY": KEY, "DATA_DIR": str(tmp_path / "data"), "WORKERS": "1", **env}
    srv = ServerProc(tmp_path, env)
    with srv:
        paths = run_clients(srv.url, tmp_path)
    assert srv.stop() == 0
    stored = write_final_reads(env, srv.url, tmp_path / "final.jsonl")
    assert_not_vacuous(paths)
    code, report = history_check(paths, tmp_path / "final.jsonl")
    assert code == 0 and report["valid"], json.dumps(report["anomalies"][:5], indent=1)
    assert report["acked"] > 0 and report["final_checked"] >= report["acked"] and stored > 0


def test_inv_fww_inv_idempotent_replay_inv_no_acked_loss_history_live_sqlite(tmp_path):
    live_history_is_valid(tmp_path, {"DEDUP_BACKEND": "sqlite"})


def test_inv_fww_inv_idempotent_replay_inv_no_acked_loss_history_live_redis(tmp_path, redis_url):
    ns = "hist_" + uuid.uuid4().hex[:8]
    env = {"DEDUP_BACKEND": "redis", "REDIS_ADDR": redis_url, "DEDUP_NAMESPACE": ns}
    live_history_is_valid(tmp_path, env)


def test_inv_fww_inv_idempotent_replay_inv_no_acked_loss_history_live_postgres(tmp_path, postgres_dsn):
    ns = "hist_" + uuid.uuid4().hex[:8]
    env = {"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": postgres_dsn, "DEDUP_NAMESPACE": ns}
    try:
        live_history_is_valid(tmp_path, env)
    finally:
        store = open_store(postgres_dsn, table=f"flk_dedup_{ns}")
        store.drop_table()
        store.close()


def test_inv_fww_history_check_catches_a_live_server_with_non_atomic_put_if_absent(tmp_path):
    conflicts = cross_client_conflicts()
    assert len(conflicts) >= 4
    env = {"PCS_HMAC_KEY": KEY, "DATA_DIR": str(tmp_path / "data"), "WORKERS": "1", "DEDUP_BACKEND": "sqlite",
           "PYTHONPATH": str(PLANTED), "FLK_TEST_RACY_DEDUP_S": "2.0", "STORE_THREADS": "64"}
    srv = ServerProc(tmp_path, env)
    with srv:
        paths = run_clients(srv.url, tmp_path)
    write_final_reads(env, srv.url, tmp_path / "final.jsonl")
    code, report = history_check(paths, tmp_path / "final.jsonl")
    assert code == 1 and not report["valid"]
    fww = [a for a in report["anomalies"] if a["invariant"] == "INV-FWW" and a["kind"] == "two-acked-digests"]
    assert fww, json.dumps(report["anomalies"][:5], indent=1)
    for anomaly in fww:
        first, second = anomaly["witness"]
        assert first["digest"] != second["digest"]
        assert first["answer"].split()[0] in ("200", "202") and second["answer"].split()[0] in ("200", "202")
        assert {first["op"].split("/")[0], second["op"].split("/")[0]} == {"c0", "c1"}
    # every race of the first wave (both clients at once, inside one pause) is caught
    assert set(conflicts) <= {anomaly["key"][1] for anomaly in fww}
    # the overwritten first write is gone from the store: no-acked-loss names it too
    assert report["anomalies_by_invariant"]["INV-NO-ACKED-LOSS"] >= 1
