"""``flk cluster run --plant racy-dedup``: a real ``flk serve`` whose SQLite put-if-absent is
check, pause, unconditional upsert (:mod:`flk.impl.lab.cluster.planted`) is caught by the
cluster runner's black-box history checker, with a witness of two acknowledged writes of one
key with different payloads -- every run: the 1 s pause makes the race window deterministic
(each agent re-sends a conflicting payload of one of its 3 latest pcs_ids at 30 % of 8/s).
The same scenario and seed without the plant is valid: the catch is the bug's, not the load's."""

from __future__ import annotations

import json

from .conftest import FLK, SCENARIOS, leftovers

RACY = str(SCENARIOS / "cluster-racy-dedup.toml")


def _run(prefix, out, *extra):
    import subprocess

    proc = subprocess.run([*FLK, "cluster", "run", RACY, "--seed", "1", "--out", str(out), "--json", "--prefix",
                           prefix, "--no-plots", *extra], capture_output=True, text=True, timeout=180)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def test_inv_fww_planted_racy_dedup_server_is_caught_with_a_witness(cluster_ready, prefix, tmp_path):
    code, res = _run(prefix, tmp_path / "planted", "--plant", "racy-dedup@eu")
    assert code == 1 and not res["valid"]
    assert res["parameters"]["plant"] == "racy-dedup@eu" and res["stamp"]["plant"] == "racy-dedup@eu"
    checks = {c["id"]: c for c in res["invariants"]}
    fww = [v for v in checks["INV-FWW"]["violations"] if v["kind"] == "two-acked-digests"]
    assert not checks["INV-FWW"]["ok"] and fww, checks["INV-FWW"]
    for v in fww:
        first, second = v["witness"]
        assert first["digest"] != second["digest"] and first["op"] != second["op"]
        assert first["answer"].split()[0] in ("200", "202") and second["answer"].split()[0] in ("200", "202")
        assert first["region"] == second["region"] == "eu"
    assert not checks["INV-NO-ACKED-LOSS"]["ok"]  # the overwritten first write is gone from the final reads
    on_disk = json.loads((tmp_path / "planted" / "cluster-racy-dedup" / "1" / "results.json").read_text())
    assert on_disk["invariants"] == res["invariants"]
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []

    code, ctl = _run(prefix, tmp_path / "control")
    assert code == 0 and ctl["valid"], [c for c in ctl["invariants"] if not c["ok"]]
    ctl_checks = {c["id"]: c for c in ctl["invariants"]}
    assert ctl_checks["INV-FWW"]["exercised"] and ctl_checks["SOMETIMES-CONFLICT-409"]["ok"]


def test_a_planted_bug_that_does_not_exist_is_refused(prefix, tmp_path):
    import subprocess

    for plant, needle in (("nope", "no planted server bug"), ("racy-dedup@mars", "no region 'mars'")):
        proc = subprocess.run([*FLK, "cluster", "run", RACY, "--out", str(tmp_path), "--prefix", prefix,
                               "--plant", plant], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
