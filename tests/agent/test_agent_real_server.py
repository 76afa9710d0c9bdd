"""The load generator against the real ``flk serve`` (multi-tenant, TENANTS from
``flk agent tenants-env``): every kind gets the answer it is built for."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import httpx
import pytest
from agent_ports import dead_url

pytestmark = [pytest.mark.server]

FLK = str(pathlib.Path(sys.executable).parent / "flk")
BASE = "agent-real-server-base-secret"
SERVER_VARS = ("HOST", "PORT", "WORKERS", "DATA_DIR", "WAL_DIR", "DEDUP_BACKEND", "SQLITE_PATH", "REDIS_ADDR",
               "POSTGRES_CONN", "TOKEN_RATE", "PCS_SIGN_ALG", "PCS_HMAC_KEY", "PCS_HMAC_KEYS",
               "PCS_ED25519_PUB_B64", "MULTI_TENANT", "TENANTS", "REGION_ID", "POLICY")


def env_without_server_config(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    env.update(extra)
    return env


@pytest.fixture(params=[(1, "hmac"), (3, "hmac"), (1, "ed25519")],
                ids=["single-tenant", "multi-tenant", "single-tenant-ed25519"])
def server(request, tmp_path):
    k, alg = request.param
    tenants = subprocess.run([FLK, "agent", "tenants-env", "--tenants", str(k), "--hmac-key-env", "LG_BASE",
                              "--sign-alg", alg],
                             capture_output=True, text=True, env=env_without_server_config(LG_BASE=BASE),
                             timeout=60)
    assert tenants.returncode == 0, tenants.stderr
    line = tenants.stdout.strip()
    assert line.startswith("TENANTS=")
    if k == 1 and alg == "hmac":
        assert line == f"TENANTS=default:hmac:{BASE}"
        env = env_without_server_config(PCS_HMAC_KEY=BASE, DATA_DIR=str(tmp_path / "data"))
    elif k == 1:
        prefix = "TENANTS=default:ed25519:"
        assert line.startswith(prefix)
        env = env_without_server_config(PCS_SIGN_ALG="ed25519", PCS_ED25519_PUB_B64=line[len(prefix):],
                                        DATA_DIR=str(tmp_path / "data"))
    else:
        env = env_without_server_config(MULTI_TENANT="true", TENANTS=line[len("TENANTS="):],
                                        DATA_DIR=str(tmp_path / "data"))
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([FLK, "serve", "--port", "0"], cwd=tmp_path, env=env, stdout=log, stderr=log,
                                start_new_session=True)
    url = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and url is None:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            for text in log_path.read_text(errors="replace").splitlines():
                if text.startswith("{") and '"event":"listening"' in text:
                    url = f"http://127.0.0.1:{json.loads(text)['port']}"
            time.sleep(0.05)
        assert url, log_path.read_text()[-2000:]
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield url, k, alg
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_loadgen_against_real_flk_serve_every_kind_gets_its_answer(server, tmp_path):
    url, k, alg = server
    hist = tmp_path / "h.jsonl"
    proc = subprocess.run(
        [FLK, "agent", "load", "--url", dead_url(), "--url", url, "--n", "400", "--seed", "21",
         "--tenants", str(k), "--sign-alg", alg, "--dup-rate", "0.15", "--bad-sig-rate", "0.1", "--conflict-rate", "0.1",
         "--concurrency", "8", "--history", str(hist), "--json", "--no-progress", "--strict",
         "--hmac-key-env", "LG_BASE", "--timeout", "5"],
        capture_output=True, text=True, env=env_without_server_config(LG_BASE=BASE), timeout=180)
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    s = json.loads(proc.stdout)
    assert s["unexpected"] == 0 and s["items"] == 400
    assert s["by_kind"]["bad_sig"] and set(s["by_kind"]["bad_sig"]) == {"401"}
    assert set(s["by_kind"]["conflict"]) == {"409"}
    lines = [json.loads(x) for x in hist.read_text().splitlines()]
    # half the items start on the dead URL and fail over: recorded as transport errors
    assert any(x["status"] is None and x["error"] for x in lines)
    dups = [x for x in lines if x["kind"] == "dup" and x["final"]]
    assert dups and all(x["replay"] is True for x in dups)
    want = {"default"} if k == 1 else {f"lg-tenant-{i:03d}" for i in range(k)}
    assert {x["tenant"] for x in lines} == want
