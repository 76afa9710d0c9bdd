"""``flk operator run`` against two real ``flk serve`` processes under ``flk agent load``.

Two servers share the shard SQLite files and the migration state file
(DEDUP_BACKEND=sharded, DEDUP_MIGRATION_STATE); the operator credential is
configured. The controller reconciles a ShardMigration policy (3 -> 4 shards)
through ``/metrics`` and the operator routes, and writes its transitions to the
WORM audit log. Healthy (the controller SIGKILLed mid-migration and started again): it
completes with 0 unexpected answers (no 5xx, no
transport error) and every acknowledged outcome on its new-ring owner. With a
dedup latency fault (the new shard's SQLite file held locked, so every mirror
write waits) the p95 gate breaches and it rolls back: every acknowledged outcome
is on its old-ring owner, unchanged (INV-OP-NO-LOSS)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time

import pytest
from server.proc import FLK, ServerProc, clean_env

from flk.impl.dedup import iter_entries, open_store
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.lab.cli import main

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEY = "operator-test-key-0123456789abcdef"
USER, PASS = "op", "operator-test-password-1"
OLD = ["s0", "s1", "s2"]
NEW = ["s0", "s1", "s2", "s3"]


def _url(tmp_path, n):
    return f"sqlite:///{tmp_path}/shards/{n}.db"


def _policy(tmp_path, gate_ms: float) -> str:
    d = tmp_path / "policies"
    d.mkdir()
    old = ", ".join(f'{n} = "{_url(tmp_path, n)}"' for n in OLD)
    new = ", ".join(f'{n} = "{_url(tmp_path, n)}"' for n in NEW)
    (d / "grow.toml").write_text(f"""kind = "ShardMigration"
name = "grow-to-4"
[spec]
old = {{ {old} }}
new = {{ {new} }}
batch = 200
soak_s = 2.0
settle_s = 1.0
[spec.gates]
window_s = 3.0
min_samples = 3
breach_fraction = 0.5
max_latency_p95_ms = {gate_ms}
max_error_rate = 0.05
""")
    return str(d)


def _deploy(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    state = str(tmp_path / "migration.json")
    capsys.readouterr()
    rc = main(["dedup-migrate", "plan", "--state", state,
               "--old", ",".join(f"{n}={_url(tmp_path, n)}" for n in OLD),
               "--new", ",".join(f"{n}={_url(tmp_path, n)}" for n in NEW)])
    assert rc == 0, capsys.readouterr()
    servers = [ServerProc(tmp_path / f"srv{i}", {
        "PCS_HMAC_KEY": KEY, "WORKERS": "1", "DATA_DIR": str(tmp_path / f"data{i}"), "DEDUP_BACKEND": "sharded",
        "DEDUP_MIGRATION_STATE": state, "OPERATOR_USER": USER, "OPERATOR_PASS": PASS}) for i in range(2)]
    for s in servers:
        s.start()
    return state, servers


def _load(tmp_path, servers, n: int):
    hist = str(tmp_path / "history.jsonl")
    urls = [a for s in servers for a in ("--url", s.url)]
    return hist, subprocess.Popen(
        [FLK, "agent", "load", *urls, "--n", str(n), "--rate", "150", "--seed", "7", "--dup-rate", "0.2",
         "--conflict-rate", "0.05", "--concurrency", "16", "--history", hist, "--json", "--no-progress",
         "--max-attempts", "3", "--timeout", "15"],
        env=clean_env(PCS_HMAC_KEY=KEY), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _operator(tmp_path, policies, servers):
    urls = [a for s in servers for a in ("--url", s.url)]
    return subprocess.run(
        [FLK, "operator", "run", "--policies", policies, *urls, "--state-dir", str(tmp_path / "op"),
         "--interval", "0.25", "--max-seconds", "90"],
        env=clean_env(FLK_OPERATOR_USER=USER, FLK_OPERATOR_PASS=PASS), capture_output=True, text=True, timeout=180)


def _check_history(hist, ring_names, tmp_path) -> dict:
    final = ShardedStore({n: open_store(_url(tmp_path, n)) for n in ring_names})
    now = time.time() + 1
    acked: dict = {}
    by_status: dict = {}
    unexpected = 0
    with open(hist) as fh:
        for line in fh:
            h = json.loads(line)
            by_status[h["status"]] = by_status.get(h["status"], 0) + 1
            if h["status"] is None or h["status"] >= 500:
                unexpected += 1
            if h["status"] in (200, 202):
                acked.setdefault((h["tenant"], h["pcs_id"]), set()).add((h["status"], h["digest"]))
    lost = changed = 0
    for key, answers in acked.items():
        assert len(answers) == 1, f"INV-FWW: {key} acknowledged with two outcomes"
        (status, digest), = answers
        stored = final.shards[final.shard_for(*key)].get(*key, now)
        if stored is None:
            lost += 1
        elif (stored.status, stored.payload_digest) != (status, digest):
            changed += 1
    # entries a shard holds for a key another shard owns (a migration's copies until the prune)
    copies = sum(final.shard_for(t, p) != name for name, shard in final.shards.items() for t, p, _ in
                 iter_entries(shard, now))
    final.close()
    return {"acked": len(acked), "lost": lost, "changed": changed, "unexpected": unexpected, "copies": copies,
            "by_status": dict(sorted((str(k), v) for k, v in by_status.items()))}


def _transitions(tmp_path) -> list[str]:
    """The operator's transitions in its WORM audit log, in order."""
    out = []
    for seg in sorted((tmp_path / "op" / "audit").glob("seg-*.log")):
        out += [e["outcome"] for e in map(json.loads, seg.read_text().splitlines()) if e["tenant"] == "operator"]
    return out


def _kill_during(tmp_path, policies, servers, phases=("Copying", "Verifying")) -> str:
    """Start ``flk operator run``, SIGKILL it once its status shows one of ``phases``."""
    urls = [a for s in servers for a in ("--url", s.url)]
    proc = subprocess.Popen(
        [FLK, "operator", "run", "--policies", policies, *urls, "--state-dir", str(tmp_path / "op"),
         "--interval", "0.25", "--max-seconds", "90"],
        env=clean_env(FLK_OPERATOR_USER=USER, FLK_OPERATOR_PASS=PASS), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    deadline, seen = time.monotonic() + 90, None
    try:
        while time.monotonic() < deadline and seen not in phases:
            for f in (tmp_path / "op" / "status").glob("*.status.json"):
                try:
                    seen = json.loads(f.read_text())["phase"]
                except (OSError, ValueError):
                    pass
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert seen in phases, seen
    return seen


def _finish(load, servers):
    try:
        out, err = load.communicate(timeout=300)
    finally:
        if load.poll() is None:
            load.kill()
        for s in servers:
            assert s.stop() == 0
    return json.loads(out)


def test_operator_run_completes_3_to_4_migration_under_load_with_no_unexpected_answer(tmp_path, capsys):
    state, servers = _deploy(tmp_path, capsys)
    policies = _policy(tmp_path, gate_ms=250.0)  # the same gate as the rollback test
    hist, load = _load(tmp_path, servers, 1800)
    try:
        time.sleep(1.0)
        killed_in = _kill_during(tmp_path, policies, servers)  # SIGKILL mid-migration, then resume
        run = _operator(tmp_path, policies, servers)
        assert load.poll() is None, "the load ended before the migration did"
    finally:
        summary = _finish(load, servers)
    assert run.returncode == 0, run.stderr[-2000:]
    final = json.loads(run.stdout.splitlines()[-1])
    assert final["phase"] == "Completed", final
    trs = _transitions(tmp_path)
    assert trs == ["Pending->Planning", "Planning->DualWrite", "DualWrite->Copying", "Copying->Verifying",
                   "Verifying->Cutover", "Cutover->Cleanup", "Cleanup->Pruning", "Pruning->Completed"], trs
    mig = json.loads(open(state).read())
    assert mig["phase"] == "cleaned"
    # the prune deleted the moved keys' old copies (under load: each once its owner held the same outcome)
    pr = mig["prune"]
    assert pr["done"] and pr["deleted"] > 0 and pr["missing"] == pr["different"] == 0, pr
    res = _check_history(hist, NEW, tmp_path)
    assert res["unexpected"] == 0 and res["lost"] == 0 and res["changed"] == 0, res
    assert res["acked"] > 500 and res["copies"] == 0, res
    assert main(["audit", "verify", str(tmp_path / "op" / "audit")]) == 0
    (status_file,) = (tmp_path / "op" / "status").glob("*.status.json")
    gates = json.loads(status_file.read_text())["gates"]
    print(f"\n[operator completes] killed in {killed_in}, resumed: {trs} {res} items={summary['items']} "
          f"gates at the end {gates}")


def _hold_lock(path: str, stop: threading.Event, state: str, hold_s: float = 0.5) -> None:
    """The dedup latency fault: once dual writes begin, keep the new shard's file locked
    (BEGIN EXCLUSIVE for hold_s, a short release, again) so every write to it waits."""
    while not stop.is_set():
        try:
            if json.loads(open(state).read())["phase"] != "planned":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        while not stop.is_set():
            conn.execute("BEGIN EXCLUSIVE")
            stop.wait(hold_s)
            conn.execute("COMMIT")
            time.sleep(0.02)
    finally:
        conn.close()


def test_operator_run_rolls_back_on_a_p95_breach_losing_and_changing_nothing(tmp_path, capsys):
    state, servers = _deploy(tmp_path, capsys)
    open_store(_url(tmp_path, "s3")).close()  # the new shard's file exists (the fault locks it)
    policies = _policy(tmp_path, gate_ms=250.0)
    hist, load = _load(tmp_path, servers, 1500)
    stop = threading.Event()
    fault = threading.Thread(target=_hold_lock, args=(f"{tmp_path}/shards/s3.db", stop, state), daemon=True)
    fault.start()
    try:
        time.sleep(1.0)
        run = _operator(tmp_path, policies, servers)
    finally:
        stop.set()
        fault.join(timeout=30)
        summary = _finish(load, servers)
    assert run.returncode == 0, run.stderr[-2000:]
    final = json.loads(run.stdout.splitlines()[-1])
    assert final["phase"] == "RolledBack", final
    trs = _transitions(tmp_path)
    assert trs[-2:] == [trs[-2].split("->")[0] + "->RollingBack", "RollingBack->RolledBack"], trs
    assert json.loads(open(state).read())["phase"] == "rolled_back"
    (status_file,) = (tmp_path / "op" / "status").glob("*.status.json")
    status = json.loads(status_file.read_text())
    rollback = next(h for h in status["history"] if h["to"] == "RollingBack")
    assert rollback["guard"] == "gate_breach", status["history"]
    res = _check_history(hist, OLD, tmp_path)
    assert res["lost"] == 0 and res["changed"] == 0, res
    assert res["acked"] > 300, res
    assert main(["audit", "verify", str(tmp_path / "op" / "audit")]) == 0
    print(f"\n[operator rolls back] {trs} {res} items={summary['items']} gates at the rollback {status['gates']}")
