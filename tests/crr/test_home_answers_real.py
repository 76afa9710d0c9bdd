"""The home region's answer travels with the record, on three real ``flk serve`` regions.

eu answers 409 to a payload of a key ap already stored (and eu already replicated): that
record is shipped with eu's answer in its segment's manifest, so no region writes it and
every region's reconciler reports 0 conflicts -- before, peers replayed it as a fresh write
and reported a conflict that no two regions acked. A real concurrent split (ap and eu both
answer 200 to different payloads while shipping is paused) still reports its conflict in
every region. Run on SQLite and on PostgreSQL dedup stores (SPEC.md sections 11.2, 12.4)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from .test_three_regions import NAMES, Region, conflict_variants, wait_until

pytestmark = pytest.mark.slow


def _submit(client: httpx.Client, region: Region, tenant: str, raw: bytes) -> httpx.Response:
    return client.post(f"{region.url}/v1/pcs/submit", content=raw,
                       headers={"X-Tenant-Id": tenant, "Content-Type": "application/json"})


def _applied(client: httpx.Client, region: Region) -> int:
    return int(region.status(client)["read"]["applied_records"])


def _conflicts(client: httpx.Client, region: Region) -> int:
    return int(region.status(client)["reconcile"]["conflicts"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_home_409_is_never_replayed_as_a_write_and_a_real_split_still_conflicts(tmp_path, backend, request):
    shared = tmp_path / "shared"
    regions = [Region(tmp_path, name, shared) for name in NAMES]
    if backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")  # skips without Postgres, fails with CI=true
        run = uuid.uuid4().hex[:8]
        for r in regions:  # one table per region: each region has its own dedup store
            r.env.update(DEDUP_BACKEND="postgres", POSTGRES_CONN=dsn, DEDUP_NAMESPACE=f"h{run}{r.name}")
    client = httpx.Client(timeout=10)
    try:
        for r in regions:
            r.start()
        ap, eu, us = regions
        (k1, k2) = conflict_variants(seed=7, n=2)[:2]
        tenant, raw_a, digest_a = k1[0]
        _, raw_b, _ = k1[1]
        pid = json.loads(raw_a)["pcs_id"]
        # 1. ap stores payload a; eu replicates it, then answers 409 to payload b of the same id
        assert _submit(client, ap, tenant, raw_a).status_code in (200, 202)
        wait_until(lambda: (eu.authoritative(client, tenant, pid) or {}).get("payload_digest") == digest_a, 60)
        refused = _submit(client, eu, tenant, raw_b)
        assert refused.status_code == 409, refused.text
        # every region applies both records (ap's and eu's streams, its own included)
        wait_until(lambda: all(_applied(client, r) >= 2 for r in regions), 60)
        assert [_conflicts(client, r) for r in regions] == [0, 0, 0]
        for r in regions:
            a = r.authoritative(client, tenant, pid)
            assert a["payload_digest"] == digest_a and a["conflict"] is False and a["digests"] == [digest_a]
        # 2. a real split: ap and eu stop shipping and reading, each answers 200 to its own payload
        for r in (ap, eu):
            r.pause_file.write_text("")
        tenant2, raw2_a, _ = k2[0]
        _, raw2_b, _ = k2[1]
        assert _submit(client, ap, tenant2, raw2_a).status_code in (200, 202)
        assert _submit(client, eu, tenant2, raw2_b).status_code in (200, 202)
        for r in (ap, eu):
            r.pause_file.unlink()
        wait_until(lambda: all(_conflicts(client, r) >= 1 for r in regions), 60)
        wait_until(lambda: all(_applied(client, r) >= 4 for r in regions), 60)
        assert [_conflicts(client, r) for r in regions] == [1, 1, 1]
    except BaseException:
        for r in regions:
            print(f"--- {r.name} log tail\n{r.log()[-3000:] if (r.dir / 'server.log').exists() else ''}")
        raise
    finally:
        client.close()
        for r in regions:
            r.stop()
