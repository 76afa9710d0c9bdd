"""The submit route's status series exist from a worker's start, at 0, in flk serve and in the
simulator's scrapes alike.

A counter series that appears with its first count hides that count from ``rate()`` and
``increase()``: Prometheus needs two samples of a series to see an increase. A worker that
(re)starts and then answers a burst of 503s (its store is down) or sheds a burst with 429 would
show none of it to FlkHttp5xx or the error-budget burn; the first sample of the new series
already holds the whole burst.
"""

from __future__ import annotations

import re

from flk.impl.verifier.problems import CATALOG, SUBMIT_STATUSES
from flk.sim import alerts
from flk.sim.scenario import load
from flk.sim.world import World

SUBMIT_SERIES = re.compile(r'^flk_http_requests_total\{route="/v1/pcs/submit",status="(\d+)"\} (\S+)$', re.M)


def test_every_status_a_submit_is_answered_with_has_a_series() -> None:
    pipeline = {t.status for slug, t in CATALOG.items()
                if slug in ("invalid-json", "invalid-pcs", "rejected-by-policy", "unknown-tenant", "bad-signature",
                            "conflict", "payload-too-large", "rate-limited", "wal-unavailable", "store-unavailable",
                            "overloaded", "internal")}
    assert pipeline | {200, 202} == set(SUBMIT_STATUSES)


def test_flk_serve_exports_every_submit_status_at_zero_before_its_first_request(tmp_path) -> None:
    from starlette.testclient import TestClient

    from flk.impl.server.app import create_app
    from flk.impl.server.config import load_config

    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": "0123456789abcdef0123456789abcdef"})
    with TestClient(create_app(cfg, 0), client=("127.0.0.1", 50000)) as client:
        first = client.get("/metrics").text
        client.post("/v1/pcs/submit", content=b"{not json", headers={"X-Tenant-Id": "t0"})
        second = client.get("/metrics").text
    assert {int(s): float(v) for s, v in SUBMIT_SERIES.findall(first)} == {s: 0.0 for s in SUBMIT_STATUSES}
    after = {int(s): float(v) for s, v in SUBMIT_SERIES.findall(second)}
    assert after[400] == 1.0 and sum(after.values()) == 1.0  # the same series count


def test_the_simulators_scrape_of_a_started_region_carries_the_same_series() -> None:
    world = World(load("dedup-outage", ["scenario.duration_s=2", "scenario.quiescence_s=0"]), 1)
    scraper = alerts.Scraper(world)
    world.run()
    t0, rid, first = scraper.samples[0]
    submit = {int(dict(labels)["status"]): v for (name, labels), v in first.items()
              if name == "flk_http_requests_total" and dict(labels).get("route") == "/v1/pcs/submit"}
    assert set(submit) >= set(SUBMIT_STATUSES)
    assert submit[503] == submit[500] == 0.0 and submit[200] > 0.0  # the store goes down at 4 s
