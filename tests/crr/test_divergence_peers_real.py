"""Geo divergence between three real ``flk serve`` regions: every region compares every peer,
and a peer that stops publishing is named unseen (SPEC.md 11.5).

The regions' divergence periods align on the clock, so all three publish their summaries at
about the same moment. Each compares half a period later (``DivergenceDetector.step``, the
schedule the simulator's regions run too); a compare at publishing time would meet only
the peers that happened to publish first, so each region's status would hold zero, one or
two pairs from period to period. Then one region is killed: its peers' checks run without
its summary and say so (``flk_crr_peer_unseen_periods``, ``/v1/crr/status``
``divergence_unseen``) instead of an ``ok`` that compared nothing; after its restart it is
seen again."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from .test_three_regions import (
    NAMES,
    Region,
    conflict_variants,
    regions_checking_divergence,
    replicate_first_variants,
    wait_until,
)

pytestmark = pytest.mark.slow

PERIOD_S = 1.0  # CRR_DIVERGENCE_INTERVAL_S: half a period (0.5 s) for the peers' summaries to land


def _unseen_metric(client: httpx.Client, region: Region) -> dict[str, float]:
    text = client.get(f"{region.url}/metrics").text
    return {peer: float(v) for peer, v in
            re.findall(r'^flk_crr_peer_unseen_periods\{peer="(\w+)",worker="0"\} (\S+)$', text, re.M)}


def _both_ok(st: dict) -> bool:
    pairs = st.get("divergence") or []
    return len(pairs) == 2 and all(p["severity"] == "ok" for p in pairs)


def test_every_region_compares_both_peers_and_names_a_dead_one_unseen(tmp_path):
    regions = regions_checking_divergence(tmp_path, PERIOD_S)
    ap, eu, us = regions
    client = httpx.Client(timeout=10)
    try:
        for r in regions:
            r.start()
        keys = conflict_variants(seed=5, n=30)
        replicate_first_variants(client, eu, [ap, us], keys)
        # a comparison made after the replication finished: until then a region may hold the result
        # of a period whose summaries were taken while its peers were still applying (one side empty)
        wait_until(lambda: all(_both_ok(r.status(client)) for r in regions), 30, step=PERIOD_S / 4)
        # from now on, every read of every region holds both of its pairs, period after period
        reads = 0
        end = time.monotonic() + 6 * PERIOD_S
        while time.monotonic() < end:
            for r in regions:
                st = r.status(client)
                pairs = sorted(tuple(p["regions"]) for p in st["divergence"])
                assert pairs == sorted(tuple(sorted((r.name, o))) for o in NAMES if o != r.name), (r.name, st)
                assert all(p["severity"] == "ok" for p in st["divergence"]), (r.name, st["divergence"])
                assert st["divergence_unseen"] == {o: 0 for o in NAMES if o != r.name}, (r.name, st)
                assert st["divergence_unreadable"] == {o: 0 for o in NAMES if o != r.name}, (r.name, st)
                reads += 1
            time.sleep(PERIOD_S / 3)
        assert reads >= 30
        assert _unseen_metric(client, eu) == {"ap": 0.0, "us": 0.0}
        us.kill()  # its summaries stop: eu and ap check without them
        wait_until(lambda: _unseen_metric(client, eu).get("us", 0) >= 2, 30, step=PERIOD_S / 4)
        st = eu.status(client)
        assert st["divergence_unseen"]["us"] >= 2 and st["divergence_unseen"]["ap"] == 0, st
        assert [tuple(p["regions"]) for p in st["divergence"]] == [("ap", "eu")], st  # what it could compare
        assert _unseen_metric(client, ap)["us"] >= 2
        us.start()
        wait_until(lambda: _unseen_metric(client, eu) == {"ap": 0.0, "us": 0.0}, 60, step=PERIOD_S / 4)
    finally:
        client.close()
        for r in regions:
            r.stop()
