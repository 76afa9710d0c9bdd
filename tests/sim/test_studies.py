"""Every catalog study responds to what it studies.

A study's ``[study]`` section names its fault(s) and headline figures with the direction the
fault must move them. The counterfactual check runs the study with and without those faults
(same seed) and asserts each headline moved that way; the sensitivity sweeps assert the
figures move monotonically where the physics says they must (conflicts grow with partition
length; replication lag and RPO grow with inter-region link latency). Sizes are the catalog's
(seed 1), so these run in every test run.
"""

from __future__ import annotations

import pytest

from flk.sim import api
from flk.sim.scenario import list_scenarios, load

STUDIES = [n for n in list_scenarios() if load(n).data["study"]["faults"]]
SHORT = ["scenario.duration_s=6", "scenario.quiescence_s=6"]


def test_every_geo_dr_and_chaos_study_with_faults_declares_what_it_studies():
    for name in list_scenarios():
        data = load(name).data
        description = data["scenario"]["description"]
        if description.startswith(("geo-DR", "chaos")) and data["faults"]:
            assert name in STUDIES, f"{name}: add a [study] section (faults, headline)"
            kinds = {f["kind"] for f in data["faults"]}
            assert set(data["study"]["faults"]) <= kinds, name


@pytest.mark.parametrize("name", STUDIES)
def test_counterfactual_study_responds_to_its_fault(name):
    rows = api.counterfactual(name, seed=1)
    assert rows and all(r["ok"] for r in rows), rows


def test_split_brain_without_the_partition_has_no_conflicts_and_conflicts_grow_with_its_length():
    none = api.run("split-brain", seed=1, overrides=["faults=[]"], plots=False).results["metrics"]
    assert none["conflicts"] == 0
    rows = api.sensitivity("split-brain", ("faults.0.duration_s", "faults.1.duration_s"), [2, 5, 8],
                           ["conflicts", "replication_lag_max_s"], seed=1)
    assert rows[0]["conflicts"] >= none["conflicts"]
    assert api.monotone(rows, "conflicts"), rows
    assert api.monotone(rows, "replication_lag_max_s"), rows


def test_split_brain_reconcilers_flag_conflicts_only_when_the_partition_made_them():
    """A record its home region answered 409 is replayed as that rejection: without the
    partition every region stores the first payload before the second arrives, so no
    reconciler flags anything; with it, the flagged conflicts are the acked ones."""
    none = api.run("split-brain", seed=1, overrides=["faults=[]"], plots=False).results["metrics"]
    split = api.run("split-brain", seed=1, plots=False).results["metrics"]
    assert none["by_status"].get("409", 0) > 0, "the workload must send conflicting payloads"
    assert none["conflicts_flagged"] == 0, none
    assert split["conflicts_flagged"] > 0 and split["conflicts_flagged"] == split["conflicts"], split


def test_a_partition_cuts_the_divergence_summaries_the_regions_compare():
    """Divergence summaries travel the links like segment copies: while every region is
    cut off no detector sees a peer summary (and the partition check counts the cut
    summaries); without the partition every comparison sees both peers."""
    def comparisons(res):
        return [(e["t_us"] / 1e6, e["peers"]) for e in res.history.events if e["type"] == "crr.divergence"]

    split = api.run("split-brain", seed=1, plots=False)
    whole = api.run("split-brain", seed=1, overrides=["faults=[]"], plots=False)
    during = [peers for t, peers in comparisons(split) if 4.5 < t < 12.0]
    assert during and set(during) == {0}, comparisons(split)
    assert {peers for _, peers in comparisons(whole)} == {2}
    cut = next(c for c in split.results["invariants"] if c["id"] == "SOMETIMES-PARTITION-CUT")
    summaries = sum(1 for e in split.history.events
                    if e["type"] == "net.drop" and e["reason"] == "partition" and e["kind"] == "crr.summary")
    assert summaries > 0 and f"{summaries} divergence summaries" in cut["note"]


def test_replication_lag_grows_with_inter_region_link_latency():
    rows = api.sensitivity("crr-normal", "network.region_latency_ms", [1, 300, 1500],
                           ["copy_lag_p95_s", "replication_lag_max_s"], seed=1, overrides=SHORT)
    assert api.monotone(rows, "copy_lag_p95_s"), rows
    assert api.monotone(rows, "replication_lag_max_s"), rows


def test_rpo_grows_with_inter_region_link_latency():
    # region us is lost 7 s after a segment shipped: the RPO is that 7 s of unshipped writes
    # until copying the shipped segment takes longer than 7 s, then it includes that segment
    rows = api.sensitivity("crr-rpo", "network.region_latency_ms", [1, 9000], ["rpo_s"], seed=1)
    assert api.monotone(rows, "rpo_s"), rows


def test_rpo_grows_with_the_ship_interval():
    # writes acked since the last shipped segment are what a region loss takes with it
    rows = api.sensitivity("crr-rpo", "replication.ship_interval_s", [2, 10, 30], ["rpo_s"], seed=1)
    assert api.monotone(rows, "rpo_s"), rows


def test_a_partition_between_two_regions_cuts_replication_messages():
    res = api.run("split-brain", seed=1, plots=False)
    cut = next(c for c in res.results["invariants"] if c["id"] == "SOMETIMES-PARTITION-CUT")
    copies = sum(1 for e in res.history.events
                 if e["type"] == "net.drop" and e["reason"] == "partition" and e["kind"] == "crr.copy")
    assert cut["ok"] and copies > 0 and f"{copies} replication copies" in cut["note"]


def test_rto_grows_with_the_health_check_interval():
    # failover is the router's: detection = interval x threshold (+ probe timeouts), then the switch
    rows = api.sensitivity("region-failover", "routing.health_interval_s", [0.5, 3], ["rto_s", "failover_detection_s"],
                           seed=1, overrides=["scenario.duration_s=16", "faults.0.duration_s=10",
                                              "scenario.quiescence_s=10"])
    assert api.monotone(rows, "failover_detection_s"), rows
    assert api.monotone(rows, "rto_s"), rows
    assert rows[-1]["rto_s"] >= rows[-1]["failover_detection_s"], rows



def test_a_shard_migration_leaves_geo_divergence_quiet_and_its_prune_makes_the_counts_agree(monkeypatch):
    """One region's 3 -> 4 shard migration leaves each moved key's copy in its old shard, and
    the region's key count includes it from the cutover until the prune deletes it. The
    region publishes that its count is inexact, so the detector compares samples only: the
    copies flag nothing, with or without the prune. The prune makes the counts agree again
    (divergence_last); without it (faults.0.prune = false) eu's count stays above its peers',
    by more the more keys were written (sensitivity). Counterfactual of the inexact count: a
    store that claims an exact count is flagged, and the alert fires without the prune."""
    from flk.impl.dedup.migrate import DualWriteStore

    res = api.run("crr-shard-migration", seed=1, plots=False)
    assert res.valid, [c for c in res.results["invariants"] if not c["ok"]]
    pruned = next(e for e in res.history.events if e["type"] == "migrate.phase" and e["phase"] == "pruned")
    assert pruned["deleted"] > 100 and pruned["missing"] == pruned["different"] == 0, pruned
    m = res.results["metrics"]
    assert m["divergence_flagged"] == 0 and m["divergence_max"] > 100 and m["divergence_last"] < 50, m
    rows = {prune: api.sensitivity("crr-shard-migration", "workload.rate_per_s", [75, 150, 300],
                                   ["divergence_last", "divergence_flagged"], seed=1,
                                   overrides=[f"faults.0.prune={prune}"])
            for prune in ("true", "false")}
    # the copies never change what the detector flags (nothing: replication lag is not divergence;
    # before the detector knew that, at 300/s lag alone flagged two checks at 3.2 s)
    assert [r["divergence_flagged"] for r in rows["true"]] == [r["divergence_flagged"] for r in rows["false"]] \
        == [0, 0, 0], rows
    assert all(r["divergence_last"] < 50 for r in rows["true"]), rows
    kept = [r["divergence_last"] for r in rows["false"]]
    assert kept == sorted(kept) and kept[0] > 50 and kept[-1] > 2 * kept[0], rows
    monkeypatch.setattr(DualWriteStore, "count_exact", property(lambda self: True))
    claimed = api.run("crr-shard-migration", seed=1, overrides=["faults.0.prune=false"], plots=False)
    # flagged once the writes stop (while they go on, the keys eu wrote itself in the detector's
    # settle time, which its peers may lack by lag, cover the copies' excess: count_slack)
    flagged = [e["t_us"] for e in claimed.history.events if e["type"] == "crr.divergence" and e["worst"] != "ok"]
    assert claimed.results["metrics"]["divergence_flagged"] == len(flagged) > 0 and min(flagged) > 20e6, flagged
    # without the settle time the claimed count is flagged from the cutover on and the alert fires
    # (the honest, inexact count: nothing flagged without the settle time either)
    claimed = api.run("crr-shard-migration", seed=1, plots=False,
                      overrides=["faults.0.prune=false", "replication.divergence_settle_s=0"])
    alert = next(c for c in claimed.results["invariants"] if c["id"] == "ALERT-FlkGeoDivergence")
    assert not alert["ok"], alert
    monkeypatch.undo()
    honest = api.run("crr-shard-migration", seed=1, plots=False,
                     overrides=["faults.0.prune=false", "replication.divergence_settle_s=0"])
    alert = next(c for c in honest.results["invariants"] if c["id"] == "ALERT-FlkGeoDivergence")
    assert alert["ok"], alert  # the honest, inexact count pages nothing
    # without the settle time replication lag alone may flag a check (seed 1: at 5.2 s, since the
    # simulated batches skip their lookup as the server's do), and then every region alike: not
    # eu's copies, which an exact count would flag in eu alone
    flags = [(e["t_us"], e["region"]) for e in honest.history.events
             if e["type"] == "crr.divergence" and e["worst"] != "ok"]
    assert all({r for t, r in flags if t == t0} == {"eu", "us", "ap"} for t0 in {t for t, _ in flags}), flags
