"""The bit-flip fault's operator repair also reaches copies in flight (found by flk sim explore
--swarm --mode liveness, seed 1000052, shrunk from 6 faults to 1): r1's next shipped segment
is corrupted at 0.7 s and re-uploaded at 1.1 s; the copies to r2 and r3 were sent at 1.0 s and
landed after the repair with the corrupted bytes, so one key never converged. The
SOMETIMES-CORRUPTION-REJECTED check of this tiny run fails by design (no corrupted copy lands),
which is why this is a test rather than a regression file."""

from __future__ import annotations

from flk.sim import api

SEED = 1000052
OVERRIDES = ['scenario.name="swarm-liveness"', 'scenario.description="drawn by flk sim explore --swarm"', 'scenario.quiescence_s=20.6', 'regions=[{id = "r1", dedup = "memory"}, {id = "r2", dedup = "memory"}, {id = "r3", dedup = "memory"}]', 'replication.enabled=true', 'workload.dup_rate=0.3', 'workload.conflict_rate=0.0', 'workload.bad_sig_rate=0.02', 'workload.cross_region_conflict_rate=0.05', 'workload.cross_region_conflict_age_s=3.0', 'nemesis.enabled=false', 'nemesis.kinds=["crash", "pause", "store_latency"]', 'nemesis.rate_per_min=20.0', 'nemesis.min_gap_s=0.0', 'nemesis.duration_s=2.85', 'slo=[]', 'alerts.silent=[]', 'scenario.duration_s=1.1', 'workload.agents=2', 'workload.rate_per_s=2.0', 'workload.tenants=1', 'faults=[{ kind = "bitflip_shipped", at_s = 0.7, duration_s = 0.4, target = "r1" }]']


def test_a_segment_repaired_while_its_copies_are_in_flight_still_converges(tmp_path):
    res = api.run("nemesis-random", seed=SEED, overrides=OVERRIDES, out=tmp_path, plots=False)
    checks = {c["id"]: c for c in res.results["invariants"]}
    assert checks["INV-CONVERGENCE"]["ok"] and checks["INV-CONVERGENCE"]["checked"] >= 2, checks["INV-CONVERGENCE"]
    ends = [e for e in res.history.events if e["type"] == "fault.end" and e.get("kind") == "bitflip_shipped"]
    assert any(e.get("repaired") == 1 for e in ends)
