"""The 3 -> 4 shard migration on the real server: ``flk serve`` with
DEDUP_BACKEND=sharded + DEDUP_MIGRATION_STATE (a DualWriteStore following the
state file) takes load from ``flk agent load --history`` while
``flk dedup-migrate`` runs dual-write, copy, verify, cutover, catchup and cleanup.
Checked from the client history against the final shard files: no 5xx and no
transport error caused by the migration, every 200/202 in the history has its
outcome (status and payload digest) on the key's new-ring owner, and no key was
acknowledged with two outcomes (INV-FWW, INV-NO-ACKED-LOSS)."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
from server.proc import FLK, ServerProc, clean_env

from flk.impl.dedup import open_store
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.lab.cli import main

pytestmark = [pytest.mark.server]

KEY = "migrate-test-key-0123456789abcdef"
OLD = ["s0", "s1", "s2"]
NEW = ["s0", "s1", "s2", "s3"]


def _urls(tmp_path, names):
    return ",".join(f"{n}=sqlite:///{tmp_path}/shards/{n}.db" for n in names)


def _step(capsys, *argv) -> dict:
    capsys.readouterr()
    rc = main(["dedup-migrate", *argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def test_inv_fww_migrate_3_to_4_under_flk_serve_and_agent_load(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    state = str(tmp_path / "migration.json")
    _step(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))
    srv = ServerProc(tmp_path / "srv", {"PCS_HMAC_KEY": KEY, "WORKERS": "1", "DATA_DIR": str(tmp_path / "data"),
                                        "DEDUP_BACKEND": "sharded", "DEDUP_MIGRATION_STATE": state})
    srv.start()
    hist = str(tmp_path / "history.jsonl")
    load = subprocess.Popen(
        [FLK, "agent", "load", "--url", srv.url, "--n", "2400", "--rate", "200", "--seed", "11",
         "--dup-rate", "0.2", "--conflict-rate", "0.05", "--bad-sig-rate", "0.02", "--concurrency", "16",
         "--history", hist, "--json", "--no-progress", "--max-attempts", "3", "--timeout", "10"],
        env=clean_env(PCS_HMAC_KEY=KEY), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    phases = []
    try:
        time.sleep(1.5)  # planned: the old ring only
        ops = {}
        for argv, pause in ((["dual-write"], 1.5), (["copy", "--batch-size", "100"], 0.5),
                            (["verify", "--settle-s", "1.5"], 0.5), (["cutover"], 2.0),
                            (["catchup", "--settle-s", "0.5"], 0.5), (["cleanup"], 1.0)):
            doc = _step(capsys, argv[0], "--state", state, *argv[1:])
            phases.append(doc["phase"])
            time.sleep(pause)
            # the ops endpoints show the ring that decides in this phase
            r = httpx.get(srv.url + "/api/shards/distribution", timeout=10)
            assert r.status_code == 200, r.text
            ops[doc["phase"]] = r.json()["shards"]
        f = httpx.get(srv.url + "/api/shards/find", params={"key": "a" * 64}, timeout=10).json()
        assert f["shard"] in NEW and f["present"] is False
        assert load.poll() is None, "the load ended before the migration did: raise --n"
        out, err = load.communicate(timeout=300)
    finally:
        if load.poll() is None:
            load.kill()
        assert srv.stop() == 0
    assert phases == ["dual_write", "copied", "verified", "cut_over", "cut_over", "cleaned"]
    assert ops == {"dual_write": OLD, "copied": OLD, "verified": OLD, "cut_over": NEW, "cleaned": NEW}
    summary = json.loads(out)
    final = ShardedStore({n: open_store(f"sqlite:///{tmp_path}/shards/{n}.db") for n in NEW})
    now = time.time() + 1
    acked: dict[tuple[str, str], set] = {}
    by_status: dict = {}
    with open(hist) as fh:
        for line in fh:
            h = json.loads(line)
            by_status[h["status"]] = by_status.get(h["status"], 0) + 1
            assert h["status"] is not None, f"transport error during the migration: {h['error']}"
            assert h["status"] < 500, f"{h['status']} during the migration"
            if h["status"] in (200, 202):
                key = (h["tenant"], h["pcs_id"])
                acked.setdefault(key, set()).add((h["status"], h["digest"]))
    assert len(acked) > 500 and by_status.get(409, 0) > 0, by_status
    for key, answers in acked.items():
        assert len(answers) == 1, f"INV-FWW: {key} acknowledged with two outcomes"
        (status, digest), = answers
        owner = final.shards[final.shard_for(*key)]
        stored = owner.get(*key, now)
        assert stored is not None, "INV-NO-ACKED-LOSS: an acknowledged outcome is not on its new owner"
        assert (stored.status, stored.payload_digest) == (status, digest)
    assert final.counts(now)["s3"] > 0
    assert summary["items"] == 2400
    print(f"\n[migrate under flk serve] statuses {dict(sorted(by_status.items()))}, {len(acked)} acked keys, "
          f"per shard {final.counts(now)}")
    final.close()
