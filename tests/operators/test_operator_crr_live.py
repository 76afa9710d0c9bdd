"""``flk operator run`` drives a CRRPolicy against two real ``flk serve`` regions.

Regions eu and us replicate through a shared object-store directory; neither
reads the other at start (``CRR_PEERS`` unset). Load goes into eu for three
tenants. A selective CRRPolicy (tenant lg-tenant-001) is reconciled by the same
controller and the same selection rule (:mod:`flk.impl.operator.crr`) the
simulator runs: us then holds every acknowledged eu record of lg-tenant-001 and
none of the other tenants' (its reader filtered them: counted). The policy
changed to ``full`` is a new generation: Active -> Applying -> Active, and the
widened selection backfills the other tenants' records into us. A restarted us
applies the kept policy again when the operator next observes it. TieringPolicy
is refused with exit 2 (no server route for its actions).
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest
from crr.test_three_regions import FLK, Region, acked, load, wait_until

from flk.impl.lab.cli import main

pytestmark = [pytest.mark.server, pytest.mark.slow]

USER, PASS = "op", "operator-test-password-1"


def _policy(d, mode: str) -> str:
    d.mkdir(exist_ok=True)
    (d / "crr.toml").write_text(f"""kind = "CRRPolicy"
name = "eu-to-us"
[spec]
mode = "{mode}"
tenants = ["lg-tenant-001"]
""")
    return str(d)


def _operator(policies: str, urls: list[str], state: str) -> tuple[int, list[dict]]:
    env = dict(os.environ, FLK_OPERATOR_USER=USER, FLK_OPERATOR_PASS=PASS)
    args = [FLK, "operator", "run", "--policies", policies, *[a for u in urls for a in ("--url", u)],
            "--state-dir", state, "--interval", "0.2", "--max-seconds", "60"]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def test_crr_policy_selective_then_full_on_real_regions(tmp_path):
    shared = tmp_path / "objects"
    shared.mkdir()
    regions = []
    for name in ("eu", "us"):
        r = Region(tmp_path, name, shared)
        r.env.pop("CRR_PEERS")
        r.env.update(OPERATOR_USER=USER, OPERATOR_PASS=PASS)
        regions.append(r)
    eu, us = regions
    try:
        for r in regions:
            r.start()
        hist = tmp_path / "load.jsonl"
        lp = load([eu.url], 60, seed=3, history=hist)
        out, err = lp.communicate(timeout=120)
        assert lp.returncode == 0, err[-2000:]
        records = acked(hist)
        by_tenant = {t: [h for h in records if h["tenant"] == t] for t in {h["tenant"] for h in records}}
        assert len(by_tenant) == 3 and all(by_tenant.values()), {t: len(v) for t, v in by_tenant.items()}
        client = httpx.Client(auth=(USER, PASS), timeout=10)

        def held(tenant: str) -> int:
            return sum(us.authoritative(client, tenant, h["pcs_id"]) is not None for h in by_tenant[tenant])

        assert client.get(us.url + "/api/operator/crr").json()["generation"] is None
        policies = _policy(tmp_path / "policies", "selective")
        rc, lines = _operator(policies, [eu.url, us.url], str(tmp_path / "state"))
        assert rc == 0 and lines[0]["phase"] == "Active", lines
        assert [t["to"] for t in lines[0]["transitions"]] == ["Applying", "Active"]
        doc = client.get(us.url + "/api/operator/crr").json()
        assert doc["region"] == "us" and doc["generation"] is not None
        assert doc["filters"] == {"eu": ["lg-tenant-001"], "us": None}
        wait_until(lambda: held("lg-tenant-001") == len(by_tenant["lg-tenant-001"]), 30)
        wait_until(lambda: us.status(client)["read"]["filtered_records"] > 0, 30)
        assert held("lg-tenant-000") == 0 and held("lg-tenant-002") == 0

        # a changed spec is a new generation: the controller re-applies it, the widened selection backfills
        _policy(tmp_path / "policies", "full")
        rc, lines = _operator(policies, [eu.url, us.url], str(tmp_path / "state"))
        assert rc == 0 and lines[0]["phase"] == "Active", lines
        assert [t["to"] for t in lines[0]["transitions"]][-2:] == ["Applying", "Active"]
        doc = client.get(us.url + "/api/operator/crr").json()
        assert doc["filters"] == {"eu": None, "us": None}
        wait_until(lambda: all(held(t) == len(v) for t, v in by_tenant.items()), 30)

        # a restarted region reads by CRR_PEERS (nothing) until the operator observes it: then the kept policy
        us.stop()
        us.start()
        first = client.get(us.url + "/api/operator/crr").json()
        assert first["generation"] is None and first["filters"] == {"us": None}
        wait_until(lambda: client.get(us.url + "/api/operator/crr").json() == doc, 15, step=0.3)
        assert subprocess.run([FLK, "audit", "verify", str(tmp_path / "state" / "audit")],
                              capture_output=True).returncode == 0
    finally:
        for r in regions:
            r.stop()


def test_tiering_policy_is_refused_with_exit_2(tmp_path, capsys):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "tier.toml").write_text('kind = "TieringPolicy"\nname = "warm"\n[spec]\n')
    capsys.readouterr()
    rc = main(["operator", "run", "--policies", str(d), "--url", "http://127.0.0.1:9", "--state-dir",
               str(tmp_path / "s"), "--max-seconds", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "TieringPolicy cannot run against flk serve yet" in err and "Traceback" not in err
    assert "ShardMigration and CRRPolicy" in err
