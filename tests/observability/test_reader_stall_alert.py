"""The replication reader's stall: metric, export and alert (SPEC 11.2, FlkCrrReaderStalled).

A store refusal is never poison, so a store that keeps refusing stops the reader with nothing
applied. ``Reader.stalled_since`` / ``stalled_s`` measure it; ``flk serve`` exports
``flk_crr_read_stalled_seconds`` (CrrCollector); the simulator scrapes the same reader; the
alert fires in ``crr-reader-stalled`` (us's store down 18 s) and stays silent when the same run's
outage lasts 6 s although the reader was refused then too (the counterfactual).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from crr.regions import NOW, Region, variants
from crr.test_poison_replay import make

from flk.impl.dedup import StoreUnavailable
from flk.impl.storage.objectstore import MemoryObjectStore, ObjectStoreUnavailable
from flk.sim import api
from flk.sim.scenario import load


class Down:
    """A dedup store refusing every call (an open breaker, a down shard)."""

    def __getattr__(self, name):
        def fail(*_a, **_k):
            raise StoreUnavailable("store down")
        return fail


def _two_regions():
    objects = MemoryObjectStore()
    eu, us = Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])
    (raw, tenant, _, _), = variants(1, 1)
    assert eu.submit(raw, tenant, NOW).status == 200
    eu.shipper.step(NOW + 1)
    return objects, us


def test_the_stall_starts_at_the_first_refusal_and_ends_with_the_first_poll_that_goes_through():
    _, us = _two_regions()
    healthy = us.applier.store
    us.applier.store = Down()
    assert us.reader.stalled_s(NOW + 2) == 0.0
    us.reader.step(NOW + 2)
    nxt = us.reader.step(NOW + 30)  # still refused: the stall keeps its start
    assert us.reader.stalled_since == NOW + 2 and us.reader.failures == 2 and nxt > NOW + 30
    assert us.reader.stalled_s(NOW + 32) == 30.0 and us.reader.metrics(NOW + 32)["stalled_s"] == 30.0
    assert us.reader.stalled_s(NOW - 100) == 0.0  # a clock stepped back never reads negative
    us.reader.paused = True  # crr.pause: stopped on purpose, not stalled
    assert us.reader.stalled_s(NOW + 32) == 0.0
    us.reader.paused = False
    assert us.reader.watermarks.get("eu", 0) == 0  # nothing applied, nothing skipped
    us.applier.store = healthy
    us.reader.step(NOW + 100)
    assert us.reader.watermarks["eu"] == 1 and us.reader.stalled_since is None
    assert us.reader.metrics(NOW + 101)["stalled_s"] == 0.0


def test_an_object_store_outage_alone_is_not_a_reader_stall():
    objects, us = _two_regions()
    objects.available = False
    us.reader.step(NOW + 2)
    assert us.reader.failures == 1 and "ObjectStoreUnavailable" in us.reader.last_error
    assert us.reader.stalled_since is None and us.reader.stalled_s(NOW + 20) == 0.0
    assert issubclass(ObjectStoreUnavailable, Exception) and not issubclass(ObjectStoreUnavailable, StoreUnavailable)


def test_flk_serve_exports_the_stall_seconds(tmp_path):
    """The CrrCollector's gauge is the reader's stall on the service's clock."""
    from prometheus_client import CollectorRegistry, generate_latest

    from flk.impl.replication.service import CrrCollector
    from flk.impl.verifier.pipeline import Request, run_sync

    clock = [NOW]
    shared = tmp_path / "shared"
    eu, eu_wal, eu_store, eu_v = make(tmp_path, "eu", "us", shared, [])
    us, us_wal, us_store, _ = make(tmp_path, "us", "eu", shared, [])
    us.clock = lambda: clock[0]

    (raw, tenant, _, _), = variants(1, 1)
    assert run_sync(eu_v.handle(Request(raw, tenant), NOW), eu_wal, eu_store).status == 200
    eu.step(NOW + 1)
    registry = CollectorRegistry()
    registry.register(CrrCollector(us))

    def gauge() -> float:
        text = generate_latest(registry).decode()
        return float(re.search(r'^flk_crr_read_stalled_seconds\{worker="0"\} (\S+)$', text, re.M).group(1))

    healthy = us.reader.applier.store
    us.reader.applier.store = Down()
    us.reader.step(NOW + 2)
    clock[0] = NOW + 14.5
    assert gauge() == 12.5 and us.metrics()["read"]["stalled_since"] == NOW + 2
    us.reader.applier.store = healthy
    us.reader.step(NOW + 100)
    assert gauge() == 0.0
    for svc in (eu, us):
        svc.stop(final_ship=False)
    for w in (eu_wal, us_wal):
        w.close()


def _stall_series(run_dir: Path) -> float:
    """The largest ``flk_crr_read_stalled_seconds`` the run's scrapes saw for us."""
    text = (run_dir / "series.om").read_text()
    values = re.findall(r'^flk_crr_read_stalled_seconds\{[^}]*instance="us"[^}]*\} (\S+) ', text, re.M)
    return max(map(float, values), default=0.0)


@pytest.mark.usefixtures("promtool")  # tests/observability/conftest.py
def test_the_alert_fires_on_a_long_stall_and_stays_silent_on_a_short_one(tmp_path):
    res = api.run("crr-reader-stalled", seed=1, out=tmp_path / "long", plots=False)
    check = next(c for c in res.results["invariants"] if c["id"] == "ALERT-FlkCrrReaderStalled")
    assert check["ok"] and "after the fault at 4 s" in check["note"] and res.valid
    assert set(res.results["alerts"]["firing"]["FlkCrrReaderStalled"]) == {"us"}
    assert _stall_series(tmp_path / "long" / "crr-reader-stalled" / "1") > 10.0
    # counterfactual: the same run, the outage 6 s: the reader is refused (the stall is measured)
    # but never for 10 s, and the alert stays silent while the store alert still fires
    sc = load("crr-reader-stalled")
    sc.data["faults"][0]["duration_s"] = 6.0
    short = api.run(sc, seed=1, out=tmp_path / "short", plots=False)
    assert "FlkCrrReaderStalled" not in short.results["alerts"]["firing"]
    assert "FlkDedupStoreDown" in short.results["alerts"]["firing"]
    assert 0.0 < _stall_series(tmp_path / "short" / "crr-reader-stalled" / "1") <= 10.0
