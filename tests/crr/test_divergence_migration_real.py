"""Geo divergence across a shard migration, on three real ``flk serve`` regions.

eu's dedup store is sharded and follows a ``flk dedup-migrate`` state file
(DEDUP_MIGRATION_STATE); it grows 2 -> 3 SQLite shards while ap and us replicate
its records. From the cutover until the prune, eu's key count includes the copies
the moved keys left in their old shards: its summaries say the count is inexact,
so every pair with eu compares samples only (``count_inexact: ["eu"]``, severity
ok) although eu's count is well above its peers'. After the prune the counts are
compared again and agree (SPEC.md 11.5, 13.4)."""

from __future__ import annotations

import time

import httpx
import pytest
from scaleout.test_migrate_server import _step as _migrate
from scaleout.test_migrate_server import _urls

from flk.impl.dedup import open_store
from flk.impl.dedup.sharded import ShardedStore

from .test_three_regions import (
    Region,
    conflict_variants,
    regions_checking_divergence,
    replicate_first_variants,
    wait_until,
)

pytestmark = pytest.mark.slow

OLD, NEW = ["s0", "s1"], ["s0", "s1", "s2"]
PERIOD_S = 0.5  # CRR_DIVERGENCE_INTERVAL_S


def _pairs_with_eu(client: httpx.Client, regions: list[Region], settle: float = 3 * PERIOD_S) -> list[dict]:
    """eu's latest comparison with each peer, from checks begun after ``settle`` (summaries of a
    later period, taken after the phase change): eu compares both peers in every period."""
    time.sleep(settle)
    eu = next(r for r in regions if r.name == "eu")
    seen: list[dict] = []

    def both() -> bool:
        seen[:] = eu.status(client).get("divergence") or []
        return sorted(tuple(p["regions"]) for p in seen) == [("ap", "eu"), ("eu", "us")]

    wait_until(both, 30, step=PERIOD_S / 2)
    return list(seen)


def test_a_migrating_region_compares_samples_only_until_its_prune(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    state = str(tmp_path / "migration.json")
    _migrate(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))
    regions = regions_checking_divergence(tmp_path, PERIOD_S)
    ap, eu, us = regions
    eu.env.update(DEDUP_BACKEND="sharded", DEDUP_MIGRATION_STATE=state)
    client = httpx.Client(timeout=10)
    try:
        for r in regions:
            r.start()
        keys = conflict_variants(seed=3, n=240)
        replicate_first_variants(client, eu, [ap, us], keys)
        before = _pairs_with_eu(client, regions)
        assert all(p["count_compared"] and p["count_inexact"] == [] and p["severity"] == "ok" for p in before), before
        for step in (["dual-write"], ["copy"], ["verify", "--settle-s", "0.5"], ["cutover"]):
            _migrate(capsys, step[0], "--state", state, *step[1:])
        during = _pairs_with_eu(client, regions)
        ring = ShardedStore({n: open_store(f"sqlite:///{tmp_path}/shards/{n}.db") for n in NEW})
        inflated = ring.count(time.time())
        assert inflated > 1.15 * len(keys), inflated  # the copies: counted, a critical divergence if compared
        assert all(not p["count_compared"] and p["count_inexact"] == ["eu"] and p["severity"] == "ok"
                   for p in during), during
        _migrate(capsys, "catchup", "--state", state, "--settle-s", "0.5")
        _migrate(capsys, "cleanup", "--state", state)
        assert all(not p["count_compared"] for p in _pairs_with_eu(client, regions)), "cleaned, not pruned yet"
        pruned = _migrate(capsys, "prune", "--state", state, "--settle-s", "0.5")
        assert pruned["clean"] and pruned["prune"]["deleted"] == inflated - len(keys), pruned
        after = _pairs_with_eu(client, regions)
        assert ring.count(time.time()) == len(keys)
        ring.close()
        assert all(p["count_compared"] and p["count_inexact"] == [] and p["count_divergence"] == 0.0
                   and p["severity"] == "ok" for p in after), after
    finally:
        client.close()
        for r in regions:
            r.stop()
