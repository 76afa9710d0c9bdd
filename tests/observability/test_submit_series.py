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


# -- a submission refused by the concurrency limit (429 before the WAL) ------------------------
LATENCY_COUNT = re.compile(r"^flk_http_latency_seconds_count (\S+)$", re.M)
REJECTED = re.compile(r'^flk_rejected_total\{[^}]*status="(\d+)"[^}]*\} (\S+)$', re.M)
OVERLOADED = re.compile(r"^flk_overloaded_total (\S+)$", re.M)


def test_flk_serve_counts_a_shed_submission_as_a_request_and_overloaded_only(tmp_path) -> None:
    """flk serve's rule: a 429 of the concurrency limit never reaches the batch driver, so it
    is in ``flk_http_requests_total`` and ``flk_overloaded_total``, not in the submit latency
    histogram and not in the pipeline's ``flk_rejected_total``."""
    import time

    from starlette.testclient import TestClient

    from flk.impl.server.app import create_app
    from flk.impl.server.config import load_config

    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": "0123456789abcdef0123456789abcdef"})
    with TestClient(create_app(cfg, 0), client=("127.0.0.1", 50000)) as client:
        limiter = client.app.state.server.limiter
        held = 0
        while limiter.try_acquire(time.monotonic()):  # every slot taken, as by requests in flight
            held += 1
        assert client.post("/v1/pcs/submit", content=b"{not json").status_code == 429
        text = client.get("/metrics").text
    submit = {int(s): float(v) for s, v in SUBMIT_SERIES.findall(text)}
    assert held > 0 and submit[429] == 1.0 and sum(submit.values()) == 1.0
    assert [float(v) for v in OVERLOADED.findall(text)] == [1.0]
    assert [float(v) for v in LATENCY_COUNT.findall(text)] == [0.0]
    assert REJECTED.findall(text) == []


def test_the_simulators_scrape_counts_a_shed_submission_as_flk_serve_does() -> None:
    """The same rule in the simulator's scrape of an overloaded region: every shed submission
    (``before_wal``) is a 429 request and overloaded, and only the others are in the latency
    histogram and the verdict counters (before, the shed ones went into both: a p95 diluted by
    instant 429s, which the operators and FlkLatencyP95High read)."""
    world = World(load("overload-backpressure", ["scenario.duration_s=8", "scenario.quiescence_s=0"]), 1)
    scraper = alerts.Scraper(world)
    world.run()
    last = scraper.view.scrape("r1")
    answered = [e for e in world.history.events if e["type"] == "srv.respond" and e["region"] == "r1"]
    shed = sum(1 for e in answered if e.get("before_wal"))
    assert shed > 100  # the burst was shed: the rule is exercised
    got = dict(last)
    requests = {int(dict(labels)["status"]): v for (name, labels), v in got.items()
                if name == "flk_http_requests_total"}
    assert sum(requests.values()) == len(answered)
    assert got[("flk_overloaded_total", ())] == shed
    assert got[("flk_http_latency_seconds_count", ())] == len(answered) - shed
    rejected_429 = sum(v for (name, labels), v in got.items()
                       if name == "flk_rejected_total" and dict(labels).get("status") == "429")
    assert rejected_429 == sum(1 for e in answered if e["status"] == 429 and not e.get("before_wal"))
