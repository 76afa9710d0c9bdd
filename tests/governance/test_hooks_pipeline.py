"""Governance hooks plugged into the real verify pipeline (flk.impl.verifier.pipeline): PII gate,
anomaly score, VRF check, and the audit sink -- driven by run_sync."""

from __future__ import annotations

import json

from flk.impl.core.signals import budget, d_hat, regime
from flk.impl.dedup.memory import MemoryStore
from flk.impl.governance import anomaly, audit, pii, vrf
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.pipeline import Request, Verifier, run_sync

from .pcsgen import COUNTS, KEY_B, SCALES, body, make_pcs, registry, sign

T0 = 1_800_000_000.0
VRF_SK = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")


class Rig:
    def __init__(self, tmp_path=None, hooks=(), sinks=()):
        self.registry = registry(pii_a="block", pii_b="redact")
        self.verifier = Verifier(self.registry, hooks=list(hooks))
        self.wal, self.store, self.events = MemoryWal(), MemoryStore(), []
        self.sinks = list(sinks)

    def sink(self, ev):
        self.events.append(ev)
        for s in self.sinks:
            s(ev)

    def send(self, doc, tenant="ta", now=T0):
        return run_sync(self.verifier.handle(Request(body(doc), tenant), now), self.wal, self.store, self.sink)


def test_pii_hook_through_the_pipeline():
    counters = pii.PiiCounters()
    modes = {t: registry().resolve(t).pii_mode for t in ("ta", "tb")}  # ta: block, tb: redact
    rig = Rig(hooks=[pii.make_pii_hook(modes, counters)])
    r = rig.send(sign(make_pcs(seed=1, meta={"contact": "call +1 212 555 0100"})))
    assert r.status == 400 and r.json()["reasons"] == ["pii_detected"]
    assert rig.store.count(T0) == 0  # nothing stored for a rejected PCS
    r = rig.send(sign(make_pcs(seed=2, meta={"card": "4111 1111 1111 1111"}), KEY_B), tenant="tb")
    assert r.status == 200  # redact mode: accepted, meta redacted before anything downstream
    assert counters.get("ta", "phone") == 1 and counters.get("tb", "card") == 1
    assert "212 555" not in json.dumps(rig.events) and "4111" not in json.dumps(rig.events)
    assert rig.send(sign(make_pcs(seed=3, meta={"note": "fine"}))).status == 200


def test_anomaly_hook_through_the_pipeline():
    alerts = []
    gate = anomaly.AnomalyGate(window=anomaly.EscalationWindow(size=10, min_events=4),
                               on_alert=lambda t, s, a: alerts.append((t, s, round(a.score, 3))))
    rig = Rig(hooks=[gate.hook], sinks=[gate.sink])
    assert rig.send(sign(make_pcs(seed=1))).status == 200
    # coh-star 0.01 is below what a 20-bin histogram can produce: consistent signals, but rejected
    dh = d_hat(list(SCALES), list(COUNTS))
    low = make_pcs(seed=2, coh=0.01, regime=regime(dh, 0.01), budget=round(budget(dh, 0.01, 0.87), 9))
    r = rig.send(sign(low))
    assert r.status == 400 and r.json()["reasons"] == ["anomaly_reject"]
    # a shard that keeps escalating: after 4 escalations its next sound PCS raises an alert
    for i in range(4):
        r = rig.send(sign(make_pcs(seed=10 + i, shard="hot", d_shift=0.3)))
        assert r.status == 202
    assert gate.window.rate("ta/hot") == 1.0
    assert rig.send(sign(make_pcs(seed=20, shard="hot"))).status == 200
    assert alerts and alerts[-1][:2] == ("ta", "hot")


def test_vrf_hook_through_the_pipeline():
    pk = vrf.public_key(VRF_SK)
    rig = Rig(hooks=[vrf.make_vrf_hook({"ta": pk})])
    doc = make_pcs(seed=1)
    proof, seed = vrf.agent_prove(VRF_SK, doc["merkle_root"], doc["epoch"], doc["shard_id"])
    assert rig.send(sign(dict(doc, vrf_proof=proof, seed=seed))).status == 200
    doc2 = make_pcs(seed=2)
    r = rig.send(sign(dict(doc2, vrf_proof=proof)))  # a proof for another PCS
    assert r.status == 401 and r.json()["reasons"] == ["vrf_invalid"]
    proof3, seed3 = vrf.agent_prove(VRF_SK, make_pcs(seed=3)["merkle_root"], 1, "shard-001")
    r = rig.send(sign(dict(make_pcs(seed=3), vrf_proof=proof3, seed=(seed3 + 1) % 2**64)))
    assert r.status == 401 and r.json()["reasons"] == ["vrf_seed_mismatch"]
    assert rig.store.count(T0) == 1


def test_audit_sink_records_pipeline_outcomes(tmp_path):
    log = audit.AuditLog(str(tmp_path / "audit"), segment_entries=3)
    rig = Rig(sinks=[audit.pipeline_sink(log, clock=lambda: T0, region="eu-1")])
    statuses = [rig.send(sign(make_pcs(seed=i, d_shift=0.3 if i % 3 == 0 else 0.0)), now=T0 + i).status
                for i in range(7)]
    rig.send(sign(make_pcs(seed=1)), now=T0 + 9)  # replay: no new outcome, no audit entry
    conflict = sign(make_pcs(seed=2, coh=0.5))  # same pcs_id, other payload: 409, audited
    assert rig.send(conflict, now=T0 + 10).status == 409
    log.close(now=T0 + 11)
    report = audit.verify_directory(str(tmp_path / "audit"))
    assert report.ok and report.entries == 8 and report.sealed_segments == 3
    entries = [json.loads(x) for n in sorted(audit.read_log_files(str(tmp_path / "audit")))
               if n.endswith(".log") for x in audit.read_log_files(str(tmp_path / "audit"))[n].split(b"\n")[:-1]]
    assert [e["outcome"] for e in entries[:7]] == ["escalated" if s == 202 else "accepted" for s in statuses]
    assert entries[-1]["outcome"] == "dedup_conflict"
    assert all(set(e) <= audit.ENTRY_KEYS for e in entries)
    assert "sig" not in json.dumps(entries)  # metadata only
