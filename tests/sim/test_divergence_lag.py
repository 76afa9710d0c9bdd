"""Replication lag is not divergence (SPEC 11, flk.impl.replication.divergence): a key a peer has
not applied yet is in flight while it is younger than the detector's settle time, and the key
counts allow for the keys a region wrote itself in that time.

Found on a real cluster: a crr-normal run with no fault (real replication lag about 4 s) fired
FlkGeoDivergence on all three regions 10-13 s into the run; the servers' own lines showed 11-27 %
of the sampled keys not applied yet, and key counts up to 11 % apart. The simulator's lag was 1 s,
and its regions compare in lockstep, so it flagged only single checks and never paged."""

from __future__ import annotations

import pytest

from flk.impl.replication.divergence import default_settle_s
from flk.sim import alerts, api


def _flagged(res) -> list[float]:
    return [e["t_us"] / 1e6 for e in res.history.events if e["type"] == "crr.divergence" and e["worst"] != "ok"]


@pytest.mark.parametrize("ship", [1.0, 4.0])
def test_lag_within_the_settle_time_flags_nothing_and_without_it_lag_reads_as_drift(ship):
    """crr-normal with segments shipped every 1 or 4 s (lag p95 1 or 4 s, the real cluster's):
    nothing flagged; the same runs with no settle time flag checks (the detector before)."""
    over = [f"replication.ship_interval_s={ship}"]
    res = api.run("crr-normal", 1, overrides=over)
    assert res.valid and _flagged(res) == []
    assert res.results["metrics"]["replication_lag_p95_s"] == pytest.approx(ship, abs=0.1)
    bare = api.run("crr-normal", 1, overrides=[*over, "replication.divergence_settle_s=0"])
    assert len(_flagged(bare)) > (0 if ship == 1.0 else 3)


def test_a_stopped_shipper_is_divergence_and_pages_after_the_settle_time():
    """crr-ship-stopped: eu stops shipping at 4 s for 20 s. The first flagged check comes after
    the settle time (6 s) and before 14 s; a longer settle time flags later (sensitivity), one as
    long as the stop flags nothing; without the fault nothing is flagged (counterfactual)."""
    assert default_settle_s(1.0, 0.5) == 6.0
    first = {}
    for settle in (None, 10.0, 25.0):
        over = [] if settle is None else [f"replication.divergence_settle_s={settle}"]
        flagged = _flagged(api.run("crr-ship-stopped", 1, overrides=over))
        first[settle] = min(flagged, default=None)
    assert 4.0 + 6.0 < first[None] < 14.0, first
    assert first[10.0] is not None and first[10.0] > first[None], first
    assert first[25.0] is None, first  # eu's oldest missing key is never 25 s old before shipping resumes
    cf = {row["metric"]: row for row in api.counterfactual("crr-ship-stopped", 1)}
    assert cf["divergence_flagged"]["without"] == 0 and cf["divergence_flagged"]["with_fault"] > 5, cf
    row = alerts.proof("crr-ship-stopped", range(1, 4))
    assert not row["missed"] and len(row["times"]["FlkGeoDivergence"]) == 3, row
