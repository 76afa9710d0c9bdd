"""Real ``flk serve`` regions on loopback: three replicating through a shared
object-store directory (the multi-region acceptance run): load into all three with
``flk agent load``; convergence; a partition (shipping stopped) with
conflicting writes; heal; a region killed (SIGKILL) under load with the load
generator failing over. Measures convergence time, replication lag, RPO and
RTO (printed as one JSON line, ``CRR-FIGURES``) and asserts convergence,
unchanged local outcomes (INV-FWW) and no acked loss (INV-NO-ACKED-LOSS)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import httpx
import pytest

from flk.impl.agent.loadgen import PlanConfig, make_plan, signing_key, tenants_env
from flk.impl.core.canonical import SIGNED_FIELDS, canonical_bytes, round9
from flk.impl.core.signals import budget, d_hat, regime
from flk.impl.core.signing import sign_hmac

pytestmark = pytest.mark.slow

FLK = str(pathlib.Path(sys.executable).parent / "flk")
BASE = b"crr-three-regions-base-secret"
K = 3  # tenants lg-tenant-000..002 (flk agent tenants-env)
NAMES = ["ap", "eu", "us"]
SHIP_S = 0.2
SERVER_VARS = ("HOST", "PORT", "WORKERS", "DATA_DIR", "WAL_DIR", "DEDUP_BACKEND", "SQLITE_PATH", "REDIS_ADDR",
               "POSTGRES_CONN", "TOKEN_RATE", "PCS_SIGN_ALG", "PCS_HMAC_KEY", "PCS_HMAC_KEYS", "MULTI_TENANT",
               "TENANTS", "REGION_ID", "POLICY", "METRICS_USER", "METRICS_PASS")


class Region:
    def __init__(self, root: pathlib.Path, name: str, shared: pathlib.Path) -> None:
        self.name, self.dir = name, root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS and not k.startswith("CRR_")}
        env.update(REGION_ID=name, DATA_DIR=str(self.dir / "data"), WORKERS="1", MULTI_TENANT="true",
                   TENANTS=tenants_env(BASE, K), CRR_STORE_DIR=str(shared),
                   CRR_PEERS=",".join(n for n in NAMES if n != name), CRR_SHIP_INTERVAL_S=str(SHIP_S))
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pause_file(self) -> pathlib.Path:
        return self.dir / "data" / "crr.pause"

    def start(self, timeout: float = 90.0) -> Region:
        cmd = [FLK, "serve"]
        log = open(self.dir / "server.log", "ab")
        offset = log.tell()
        self.proc = subprocess.Popen([*cmd, "--port", "0"], cwd=self.dir, env=self.env, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        self.port = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: flk serve exited: {self.log()[-2000:]}")
            text = (self.dir / "server.log").read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("{") and '"event":"listening"' in line:
                    self.port = json.loads(line)["port"]
            if self.port:
                try:
                    if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def authoritative(self, client: httpx.Client, tenant: str, pcs_id: str) -> dict | None:
        r = client.get(f"{self.url}/v1/pcs/{pcs_id}/authoritative", headers={"X-Tenant-Id": tenant})
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return r.json()

    def status(self, client: httpx.Client) -> dict:
        r = client.get(f"{self.url}/v1/crr/status")
        assert r.status_code == 200, r.text
        return r.json()


def load(urls: list[str], n: int, seed: int, history: pathlib.Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = dict(os.environ, PCS_HMAC_KEY=BASE.decode())
    args = [FLK, "agent", "load", *[a for u in urls for a in ("--url", u)], "--n", str(n), "--seed", str(seed),
            "--tenants", str(K), "--history", str(history), "--json", "--no-progress", "--concurrency", "4",
            *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def acked(history: pathlib.Path) -> list[dict]:
    out = []
    for line in history.read_text().splitlines():
        h = json.loads(line)
        if h.get("final") and h.get("status") in (200, 202):
            out.append(h)
    return out


def wait_until(pred, timeout: float, step: float = 0.1):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"condition not reached within {timeout:.0f} s")


def converged(regions, client, records, confirmed: set | None = None) -> bool:
    """Every region holds, for every acked record, an authoritative outcome with its digest.
    ``confirmed`` remembers (region, key) pairs already seen right (these loads have no
    conflicts, so they stay right) so a poll only asks about the rest."""
    confirmed = set() if confirmed is None else confirmed
    for r in regions:
        for h in records:
            k = (r.name, h["tenant"], h["pcs_id"])
            if k in confirmed:
                continue
            a = r.authoritative(client, h["tenant"], h["pcs_id"])
            if a is None or a["payload_digest"] != h["digest"]:
                return False
            confirmed.add(k)
    return True


def conflict_variants(seed: int, n: int) -> list[list[tuple[str, bytes, str]]]:
    """n keys, each with three signed variants (one per region): (tenant, body, digest)."""
    plan = [it for it in make_plan(PlanConfig(n=n, seed=seed, tenants=K), BASE) if it.kind == "valid"]
    out = []
    for it in plan:
        row = []
        for v in range(3):
            pcs = {k: val for k, val in it.pcs.items() if k not in ("sig", "sig_alg")}
            coh = round9(min(1.0, pcs["coh_star"] * (0.5 + 0.1 * v) + 0.01 * v))
            pcs["coh_star"] = coh
            nj = [pcs["N_j"][str(s)] for s in pcs["scales"]]
            pcs["budget"] = round9(budget(pcs["D_hat"], coh, pcs["r"]))
            pcs["regime"] = regime(d_hat(pcs["scales"], nj), coh)
            pcs["sig_alg"] = "hmac"
            pcs["sig"] = sign_hmac(pcs, signing_key(BASE, it.tenant, K))
            digest = hashlib.sha256(canonical_bytes({k: pcs[k] for k in SIGNED_FIELDS}, "v1")).hexdigest()
            row.append((it.tenant, json.dumps(pcs).encode(), digest))
        out.append(row)
    return out


def regions_checking_divergence(root: pathlib.Path, period_s: float) -> list[Region]:
    """The three regions (not started), replicating through ``root/shared``, each checking
    divergence every ``period_s`` (CRR_DIVERGENCE_INTERVAL_S)."""
    regions = [Region(root, name, root / "shared") for name in NAMES]
    for r in regions:
        r.env["CRR_DIVERGENCE_INTERVAL_S"] = str(period_s)
    return regions


def replicate_first_variants(client: httpx.Client, home: Region, readers: list[Region],
                             keys: list[list[tuple[str, bytes, str]]]) -> None:
    """Each key's first variant submitted to ``home`` (200 or 202), then waited for until every
    one of ``readers`` has applied them all."""
    for variants in keys:
        tenant, raw, _ = variants[0]
        resp = client.post(f"{home.url}/v1/pcs/submit", content=raw,
                           headers={"X-Tenant-Id": tenant, "Content-Type": "application/json"})
        assert resp.status_code in (200, 202), resp.text
    wait_until(lambda: all(int(r.status(client)["read"]["applied_records"]) >= len(keys) for r in readers), 60)


def test_three_regions_converge_partition_heal_kill_failover(tmp_path):
    shared = tmp_path / "shared"
    regions = [Region(tmp_path, n, shared) for n in NAMES]
    figures: dict = {}
    client = httpx.Client(timeout=10)
    try:
        for r in regions:
            r.start()
        ap, eu, us = regions
        # 1. load into all three, then convergence
        procs = [load([r.url], 40, 100 + i, tmp_path / f"load-{r.name}.jsonl") for i, r in enumerate(regions)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
        t_loaded = time.monotonic()
        records = [h for r in regions for h in acked(tmp_path / f"load-{r.name}.jsonl")]
        assert len(records) >= 100 and {h["tenant"] for h in records} == {f"lg-tenant-{i:03d}" for i in range(K)}
        seen: set = set()
        wait_until(lambda: converged(regions, client, records, seen), 60)
        figures["convergence_after_load_s"] = round(time.monotonic() - t_loaded, 3)
        lags = [r.status(client)["ship"]["lag_p50_s"] for r in regions]
        figures["replication_lag_p50_s"] = sorted(lags)[1]
        figures["replication_lag_max_s"] = max(r.status(client)["ship"]["lag_max_s"] for r in regions)

        # 2. partition: shipping and reading stopped; conflicting writes, one variant per region
        for r in regions:
            r.pause_file.write_text("partition")
        time.sleep(3 * SHIP_S)
        keys = conflict_variants(7, 8)
        first_answers, first_status = {}, {}
        for row in keys:
            for r, (tenant, raw, _) in zip(regions, row, strict=True):
                resp = client.post(f"{r.url}/v1/pcs/submit", content=raw,
                                   headers={"X-Tenant-Id": tenant, "Content-Type": "application/json"})
                assert resp.status_code in (200, 202), resp.text
                first_answers[(r.name, raw)] = resp.content
                first_status[(r.name, raw)] = resp.status_code
        pid0 = json.loads(keys[0][0][1])["pcs_id"]
        time.sleep(3 * SHIP_S)
        # nothing crossed the partition (a region sees even its own outcomes through the store)
        assert all(r.authoritative(client, keys[0][0][0], pid0) is None for r in regions)
        # 3. heal
        for r in regions:
            r.pause_file.unlink()
        t_heal = time.monotonic()

        def healed() -> bool:
            for row in keys:
                tenant, raw, _ = row[0]
                pid = json.loads(raw)["pcs_id"]
                seen = [r.authoritative(client, tenant, pid) for r in regions]
                if any(s is None or len(s["digests"]) != 3 for s in seen):
                    return False
                if len({(s["payload_digest"], s["region"], s["first_seen"]) for s in seen}) != 1:
                    return False
            return True

        wait_until(healed, 60)
        figures["convergence_after_heal_s"] = round(time.monotonic() - t_heal, 3)
        for row in keys:
            tenant, raw, _ = row[0]
            a = ap.authoritative(client, tenant, json.loads(raw)["pcs_id"])
            assert a["conflict"] is True and a["region"] == "ap"  # ap wrote first in every row
            assert a["payload_digest"] == row[0][2] and sorted(a["digests"]) == sorted(d for _, _, d in row)
            verdicts = {first_status[(r.name, raw_)] for r, (_, raw_, _) in zip(regions, row, strict=True)}
            assert a["state"] == ("resolved_auto" if len(verdicts) == 1 else "pending_review")
        # INV-FWW: every region still answers its own first write, byte for byte
        for row in keys:
            for r, (tenant, raw, _) in zip(regions, row, strict=True):
                resp = client.post(f"{r.url}/v1/pcs/submit", content=raw,
                                   headers={"X-Tenant-Id": tenant, "Content-Type": "application/json"})
                assert resp.status_code in (200, 202) and resp.content == first_answers[(r.name, raw)]
                assert resp.headers.get("idempotent-replayed") == "true"
        conflicts = eu.status(client)["reconcile"]["conflicts"]
        assert conflicts >= len(keys)

        # 4. kill us under load; the load generator fails over to eu
        hist = tmp_path / "load-failover.jsonl"
        p = load([us.url, eu.url], 500, 900, hist, ("--url-mode", "failover", "--rate", "100",
                                                   "--backoff-base", "0.05", "--backoff-cap", "0.5",
                                                   "--max-attempts", "20", "--timeout", "2"))
        time.sleep(2.5)
        t_kill = time.time()
        us.kill()
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        fin = acked(hist)
        assert len(fin) == 500  # every item acked (by us before the kill, or by eu after)
        lines = [json.loads(x) for x in hist.read_text().splitlines()]
        after = [h["t_recv"] for h in lines if h["url"].startswith(eu.url) and h.get("status") in (200, 202)
                 and h["t_recv"] >= t_kill]
        figures["rto_s"] = round(min(after) - t_kill, 3)
        on_us = [h for h in fin if h["url"].startswith(us.url)]
        assert on_us, "the kill came before any ack from us"
        survivors = [ap, eu]
        time.sleep(6 * SHIP_S)  # let the survivors exchange everything they have
        missing = [h for h in on_us if eu.authoritative(client, h["tenant"], h["pcs_id"]) is None]
        figures["rpo_records"] = len(missing)
        if missing:
            figures["rpo_window_s"] = round(t_kill - min(h["t_recv"] for h in missing), 3)
        figures["acked_on_killed_region"] = len(on_us)
        # 5. restart the killed region: its WAL replays and ships the rest -> no acked loss anywhere
        us.start()
        t_restart = time.monotonic()
        everything = records + fin
        seen = {k for k in seen if k[0] != "us"}  # the restarted region is asked again
        wait_until(lambda: converged(regions, client, everything, seen), 90)
        figures["recovery_after_restart_s"] = round(time.monotonic() - t_restart, 3)
        figures["acked_total"] = len(everything)
        for r in survivors + [us]:
            st = r.status(client)
            assert st["read"]["rejected"] == {} and st["errors"] == 0
        metrics = client.get(f"{eu.url}/metrics").text
        assert "flk_crr_conflicts_total" in metrics and "flk_crr_replication_lag_seconds" in metrics
        print("CRR-FIGURES " + json.dumps(figures, sort_keys=True))
    finally:
        client.close()
        for r in regions:
            r.stop()
            r.kill()


def test_two_regions_one_with_two_workers_ships_both_worker_streams(tmp_path):
    """WORKERS=2: each worker ships its own inbox WAL as stream ``<region>/w<k>``;
    the peer reads both and converges."""
    from flk.impl.storage.objectstore import DirectoryObjectStore

    shared = tmp_path / "shared"
    eu, us = Region(tmp_path, "eu", shared), Region(tmp_path, "us", shared)
    eu.env["WORKERS"] = "2"
    eu.env["CRR_PEERS"], us.env["CRR_PEERS"] = "us", "eu"
    client = httpx.Client(timeout=10)
    try:
        eu.start()
        us.start()
        p = load([eu.url], 80, 5, tmp_path / "h.jsonl", ("--concurrency", "8"))
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        recs = acked(tmp_path / "h.jsonl")
        assert len(recs) == 80
        wait_until(lambda: converged([eu, us], client, recs), 60)

        def streams() -> set[str]:
            return {k.rsplit("/", 1)[0] for k in DirectoryObjectStore(str(shared)).list("eu/")}

        # The kernel decides which worker accepts a keep-alive connection; if the load's few
        # connections all landed on one worker, top up over fresh connections (one per request)
        # until the other worker has shipped too, so the check does not depend on that draw.
        extra = [it for it in make_plan(PlanConfig(n=400, seed=99, tenants=K), BASE) if it.kind == "valid"]
        for it in extra:
            if streams() == {"eu", "eu/w1"}:
                break
            with httpx.Client(timeout=10) as fresh:
                r = fresh.post(f"{eu.url}/v1/pcs/submit", content=json.dumps(it.pcs).encode(),
                               headers={"X-Tenant-Id": it.tenant, "Connection": "close"})
                assert r.status_code in (200, 202), r.text
        wait_until(lambda: streams() == {"eu", "eu/w1"}, 30)
        assert streams() == {"eu", "eu/w1"}  # both workers took requests and shipped them
    finally:
        client.close()
        for r in (eu, us):
            r.stop()
            r.kill()
