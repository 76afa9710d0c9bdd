"""One shard of a real region's sharded dedup store down holds back only that shard's keys.

Two real ``flk serve`` regions replicate through a shared object-store directory: eu on
SQLite, us on a sharded store of three SQLite shards and a private Redis shard. The Redis
server is killed (-9) once both are up, then eu takes writes. us's reader parks the
records of the Redis shard's keys (``flk_crr_read_parked_records``, ``read.parked``) and
applies every other key while Redis is down; once Redis runs again the parked records are
applied and us holds every key (SPEC.md section 11.2). Before, one refused shard stopped
the reader: us applied none of eu's writes until Redis was back."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from server.privatestores import PrivateRedis

from flk.impl.dedup import open_store
from flk.impl.dedup.sharded import ShardedStore

from .test_three_regions import Region, conflict_variants, wait_until

pytestmark = pytest.mark.slow
SHARDS = ["a", "b", "c", "r"]  # r: the Redis shard


def _parked(client: httpx.Client, region: Region) -> int:
    return int(region.status(client)["read"]["parked"])


def _has(client: httpx.Client, region: Region, tenant: str, pcs_id: str) -> bool:
    return region.authoritative(client, tenant, pcs_id) is not None


def test_a_killed_redis_shard_parks_its_keys_and_every_other_key_replicates(tmp_path) -> None:
    redis = PrivateRedis().start()
    shared = tmp_path / "shared"
    eu, us = Region(tmp_path, "eu", shared), Region(tmp_path, "us", shared)
    shards = {n: f"sqlite:///{tmp_path}/us-{n}.sqlite3" for n in SHARDS[:3]} | {"r": redis.url}
    us.env.update(DEDUP_BACKEND="sharded", DEDUP_SHARDS=",".join(f"{k}={v}" for k, v in shards.items()),
                  STORE_TIMEOUT_S="1")
    client = httpx.Client(timeout=10)
    try:
        eu.start()
        us.start()
        redis.kill9()
        shard_of = ShardedStore({n: open_store("memory") for n in SHARDS}).shard_for
        keys = []
        for row in conflict_variants(seed=11, n=40):
            tenant, raw, _ = row[0]
            pcs_id = json.loads(raw)["pcs_id"]
            r = client.post(f"{eu.url}/v1/pcs/submit", content=raw,
                            headers={"X-Tenant-Id": tenant, "Content-Type": "application/json"})
            assert r.status_code in (200, 202), r.text
            keys.append((tenant, pcs_id, shard_of(tenant, pcs_id)))
        on_redis = [k for k in keys if k[2] == "r"]
        elsewhere = [k for k in keys if k[2] != "r"]
        assert on_redis and elsewhere, "the test needs keys on the Redis shard and on the others"
        # every other shard's key reaches us while Redis is down; the Redis shard's keys wait
        wait_until(lambda: all(_has(client, us, t, p) for t, p, _ in elsewhere), 60)
        wait_until(lambda: _parked(client, us) == len(on_redis), 30)
        assert not any(_has(client, us, t, p) for t, p, _ in on_redis)
        metrics = client.get(f"{us.url}/metrics").text
        m = re.search(r'^flk_crr_read_parked_records\{[^}]*\} (\S+)$', metrics, re.M)
        assert m is not None and float(m.group(1)) == len(on_redis), metrics[-2000:]
        # Redis runs again (empty, on the same port): the parked records are applied
        redis.start()
        wait_until(lambda: all(_has(client, us, t, p) for t, p, _ in on_redis), 90)
        wait_until(lambda: _parked(client, us) == 0, 30)
        assert us.status(client)["read"]["stalled_since"] is None
    except BaseException:
        for r in (eu, us):
            print(f"--- {r.name} log tail\n{r.log()[-3000:] if (r.dir / 'server.log').exists() else ''}")
        raise
    finally:
        client.close()
        for r in (eu, us):
            r.stop()
        redis.close()
