"""The ship-lag gauge (``flk_crr_replication_lag_seconds``: the age of the oldest inbox record
not yet uploaded) ages on the driver's monotonic clock, so a step of the region's wall clock
neither adds itself to it (a false FlkCrrReplicationLag, and a cluster run reading 30 s of lag
that never was) nor hides a real lag (SPEC 11.9 rule 7); the simulator exports that same
gauge instead of a true-time age a deployed region cannot know."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.replication.service import CrrCollector
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.verifier.core import serve_batch
from flk.impl.verifier.pipeline import Request

from .regions import NOW, Region, variants
from .test_crr_service import make

MONO0 = 5_000.0  # the driver's monotonic clock when the record is received


def held_region():
    """eu with one record received at wall NOW (monotonic MONO0) and its shipper held."""
    eu = Region("eu", MemoryObjectStore(), ["eu", "us"])
    raw, tenant, _, _ = variants(1, 1)[0]
    assert eu.submit(raw, tenant, NOW).status == 200
    eu.shipper.paused = True
    return eu


def test_a_forward_step_of_the_wall_clock_does_not_add_itself_to_the_gauge():
    eu = held_region()
    eu.shipper.step(NOW + 0.5, MONO0 + 0.5)  # first sight: the record is 0.5 s old
    assert eu.shipper.lag_s(NOW + 0.5, MONO0 + 0.5) == 0.5
    # the wall clock jumps 30 s ahead 0.3 s later: the record is 0.8 s old, not 30.8
    eu.shipper.step(NOW + 30.8, MONO0 + 0.8)
    assert abs(eu.shipper.lag_s(NOW + 30.8, MONO0 + 0.8) - 0.8) < 1e-6
    assert abs(eu.shipper.metrics(NOW + 30.8, MONO0 + 0.8)["lag_s"] - 0.8) < 1e-6
    # without a monotonic clock the old reading stays what it was: the stamp's age on the wall clock
    assert abs(eu.shipper.lag_s(NOW + 30.8) - 30.8) < 1e-6


def test_a_step_back_does_not_hide_a_lag():
    eu = held_region()
    eu.shipper.step(NOW + 1.0, MONO0 + 1.0)
    # the clock steps 30 s back; 4 s later the held record is 5 s old (the wall clock alone says 0)
    assert eu.shipper.lag_s(NOW - 25.0, MONO0 + 5.0) == 5.0
    assert eu.shipper.lag_s(NOW - 25.0) == 0.0


def test_the_age_restarts_from_the_next_oldest_record_once_the_oldest_ships():
    eu = held_region()
    eu.shipper.step(NOW + 0.5, MONO0 + 0.5)
    raw, tenant, _, _ = variants(2, 1)[1]
    assert eu.submit(raw, tenant, NOW + 0.7).status == 200
    eu.shipper.paused = False
    eu.shipper.step(NOW + 1.0, MONO0 + 1.0)  # seals and ships both
    assert eu.shipper.oldest_unshipped is None and eu.shipper.lag_s(NOW + 40.0, MONO0 + 1.2) == 0.0
    # a record received after a 30 s forward step is aged from its own receipt
    raw, tenant, _, _ = variants(3, 1)[2]
    assert eu.submit(raw, tenant, NOW + 31.5).status == 200
    eu.shipper.paused = True
    eu.shipper.step(NOW + 31.7, MONO0 + 1.7)
    assert eu.shipper.oldest_unshipped == NOW + 31.5
    assert abs(eu.shipper.lag_s(NOW + 32.0, MONO0 + 2.0) - 0.5) < 1e-6


@settings(max_examples=60, deadline=None)
@given(age_at_sight=st.floats(0.0, 3.0), steps=st.lists(
    st.tuples(st.floats(0.0, 20.0), st.floats(-120.0, 120.0)), min_size=1, max_size=6))
def test_after_first_sight_the_gauge_is_the_monotonic_age_whatever_the_wall_clock_does(age_at_sight, steps):
    """``steps``: (monotonic time passed, the wall clock's step) pairs after the shipper first saw
    the record; the gauge is the record's age on the monotonic clock after each."""
    eu = held_region()
    mono, offset = MONO0 + age_at_sight, 0.0
    eu.shipper.step(NOW + age_at_sight, mono)
    for passed, step in steps:
        mono += passed
        offset += step
        wall = NOW + (mono - MONO0) + offset
        eu.shipper.step(wall, mono)
        assert abs(eu.shipper.lag_s(wall, mono) - (mono - MONO0)) < 1e-6


def test_the_service_gauge_ages_on_its_monotonic_clock(tmp_path):
    """flk serve's CrrService: the /v1/crr/status figure and the Prometheus gauge read the
    shipper's monotonic age; its wall clock jumping 30 s ahead moves neither."""
    clock = {"wall": NOW, "mono": MONO0}
    svc, wal, store, v = make(tmp_path, "eu", "us", tmp_path / "shared")
    svc.clock, svc.monotonic = (lambda: clock["wall"]), (lambda: clock["mono"])
    (tmp_path / "eu" / "crr.pause-ship").write_text("")  # the shipper is held: the record ages
    raw, tenant, _, _ = variants(1, 1)[0]
    [resp] = serve_batch(v, [Request(raw, tenant)], NOW, wal, store)
    assert resp.status == 200
    clock.update(wall=NOW + 1.0, mono=MONO0 + 1.0)
    svc.step(svc.clock())
    clock.update(wall=NOW + 31.5, mono=MONO0 + 1.5)  # +30 s step
    svc.step(svc.clock())
    assert abs(svc.metrics()["ship"]["lag_s"] - 1.5) < 1e-6
    gauge = {m.name: m for m in CrrCollector(svc).collect()}["flk_crr_replication_lag_seconds"]
    assert abs(gauge.samples[0].value - 1.5) < 1e-6
    svc.stop(final_ship=False)
    wal.close()
    store.close()
