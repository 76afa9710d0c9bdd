"""clock-skew-replicated on a real cluster (full tier: about a minute): us's wall clock runs 30 s
ahead during a split brain, then steps back, while all three regions replicate. Under libfaketime
0.9.10 alone (both clocks faked) no segment left any region in 45 s: every timed wait of the
replication thread never ended. With the monotonic clock left real and the shim
(flk.impl.lab.cluster.faketime) the real regions ship through the skew and after the step back,
as the simulator's study says they do."""

from __future__ import annotations

from .conftest import cluster_run, in_full_tier


def _index(copy: dict) -> int:
    return int(copy["key"].rsplit("-", 1)[1].split(".")[0])


@in_full_tier
def test_real_regions_replicate_through_a_clock_step(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "clock-skew-replicated")
    start = next(e for e in events if e["type"] == "fault.start" and e["kind"] == "clock_skew")
    end = next(e for e in events if e["type"] == "fault.end" and e["kind"] == "clock_skew")
    assert start["mechanism"] == "libfaketime" and start["skew_s"] == 30.0
    copied = [e for e in events if e["type"] == "crr.copied" and e["origin"] == "us"]
    # segments us wrote while its clock ran 30 s ahead (their oldest record stamped in the future
    # of the copy) reach both peers ...
    ahead = [e for e in copied if e["stamp_age_s"] < -20.0]
    assert {e["region"] for e in ahead} == {"eu", "ap"}, copied
    # ... and their age is true time (from the send of their earliest record, on the runner's
    # clock), as the simulator's: never negative, never the 30 s the stamps are off by
    assert all(0.0 <= e["age_s"] < 20.0 for e in ahead), ahead
    assert all(e["age_s"] - e["stamp_age_s"] > 20.0 for e in ahead), ahead
    # ... and so do later ones, written after its clock stepped back (the file is re-read within
    # a second): no shipping waits 30 s for the clock to catch up, none stops
    last_ahead = max(_index(e) for e in ahead)
    after = [e for e in copied if e["t_us"] > end["t_us"] + 1_500_000 and _index(e) > last_ahead]
    assert {e["region"] for e in after} == {"eu", "ap"}, copied
    checks = {c["id"]: c for c in res["invariants"]}
    assert checks["INV-FWW"]["ok"] and checks["INV-CONVERGENCE"]["exercised"]
    assert res["metrics"]["conflicts"] > 0  # the split brain made conflicting outcomes
    assert res["cluster"]["left_behind"] == []
