"""The black-box history checker on three real ``flk serve`` regions on loopback.

The regions replicate through a shared object-store directory (started as in
tests/crr/test_three_regions.py). Two ``flk agent load --history`` clients
spread their items over the three URLs at the same time: the same seed, so
the same pcs_ids, with different duplicate rates, so the same pcs_ids carry
different payloads -- plus duplicates and conflicts that land on another
region than the write they repeat, before or after replication brought it
there. After the regions stop, each region's own SQLite dedup store is its
final read.

Replication between regions is asynchronous, so first-write-wins is promised
per region: ``flk history check --per-region`` must find the history valid
(no region acknowledged two payloads for one key, 409s and replays explained
by some write in any region, every acknowledgement in its region's store).
Checked across regions instead, any anomaly may only be two regions each
acknowledging their own payload -- what asynchronous replication allows.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from crr.test_three_regions import FLK, NAMES, Region, load
from flk.impl.dedup import open_store

pytestmark = pytest.mark.slow

N = 90


def _final_reads(regions, path) -> int:
    lines = []
    for r in regions:
        lines.append(json.dumps({"region": r.url}))  # read, even if empty
        store = open_store("sqlite:///" + str(r.dir / "data" / "dedup.sqlite3"))
        try:
            cursor = None
            while True:
                page, cursor = store.scan(cursor, 1000, time.time())
                lines += [json.dumps({"region": r.url, "tenant": t, "pcs_id": p, "digest": o.payload_digest,
                                      "status": o.status}) for t, p, o in page]
                if cursor is None:
                    break
        finally:
            store.close()
    path.write_text("".join(line + "\n" for line in lines))
    return len(lines) - len(regions)


def _check(paths, final, *flags) -> tuple[int, dict]:
    out = subprocess.run([FLK, "history", "check", *map(str, paths), "--final-reads", str(final), "--json", *flags],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_inv_fww_inv_idempotent_replay_inv_no_acked_loss_history_three_regions(tmp_path):
    shared = tmp_path / "shared"
    regions = [Region(tmp_path, name, shared) for name in NAMES]
    try:
        for r in regions:
            r.start()
        urls = [r.url for r in regions]
        paths = [tmp_path / "load-a.jsonl", tmp_path / "load-b.jsonl"]
        procs = [load(urls, N, 5, paths[0], ("--dup-rate", "0.1", "--conflict-rate", "0.1", "--bad-sig-rate", "0.05")),
                 load(urls, N, 5, paths[1], ("--dup-rate", "0.4",))]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
        time.sleep(1.0)  # let replication carry some writes across before the regions stop
    finally:
        for r in regions:
            r.stop()
    stored = _final_reads(regions, tmp_path / "final.jsonl")
    code, report = _check(paths, tmp_path / "final.jsonl", "--per-region")
    assert code == 0, json.dumps(report["anomalies"][:5], indent=1)
    assert report["acked"] > N and report["final_checked"] == report["acked"] and stored >= report["keys"] // 2
    records = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    assert {r["status"] for r in records} >= {200, 401, 409} and any(r["replay"] for r in records)
    assert len({r["url"].rsplit("/v1/", 1)[0] for r in records}) == 3
    _, across = _check(paths, tmp_path / "final.jsonl")
    for anomaly in across["anomalies"]:
        assert anomaly["kind"] == "two-acked-digests", anomaly
        assert anomaly["witness"][0]["region"] != anomaly["witness"][1]["region"], anomaly
