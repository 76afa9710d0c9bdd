"""SIGHUP reloads the tenants file (flk.impl.server.reload): keys rotate without a restart.

Real ``flk serve`` processes (one worker, and two behind the supervisor), and the reload
object itself over any file content."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import types

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.replication.applying import ReplayApplier
from flk.impl.server.reload import TenantsReload, file_stamp
from flk.impl.testing.workload import bodies
from flk.impl.verifier.pipeline import Verifier
from flk.impl.verifier.tenants import load_toml

from .proc import ServerProc

OLD = "reload-old-key-0123456789abcdef"
NEW = "reload-new-key-0123456789abcdef"


def write_tenants(path, keys: list[tuple[str, str, dict]], limits: dict | None = None) -> None:
    """Tenant ``acme`` with ``keys`` [(id, secret, window)], written as an operator would:
    a temporary file renamed over the old one."""
    lines = []
    if limits:
        lines.append("[defaults]")
        lines += [f"{k} = {v}" for k, v in limits.items()]
    lines += ["[tenants.acme]", 'alg = "hmac"']
    for kid, secret, window in keys:
        lines += ["[[tenants.acme.keys]]", f'id = "{kid}"', f'secret = "{secret}"']
        lines += [f"{k} = {v}" for k, v in window.items()]
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def post(srv: ServerProc, body: bytes) -> httpx.Response:
    return httpx.post(srv.url + "/v1/pcs/submit", content=body, headers={"X-Tenant-Id": "acme"}, timeout=10)


def wait_for(srv: ServerProc, text: str, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while srv.log_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} x {text} in the log: {srv.log_tail()}")
        time.sleep(0.05)


def log_events(srv: ServerProc, name: str) -> list[dict]:
    out = []
    for line in srv.log_text().splitlines():
        if line.startswith("{") and f'"event":"{name}"' in line:
            out.append(json.loads(line))
    return out


def serve(tmp_path, tenants, workers: int = 1, **env) -> ServerProc:
    return ServerProc(tmp_path / "srv", {"MULTI_TENANT": "true", "TENANTS_FILE": str(tenants),
                                         "WORKERS": str(workers), "WAL_GROUP_DELAY_MS": "0", **env})


@pytest.mark.timeout(120)
def test_a_key_rotates_without_a_restart(tmp_path) -> None:
    """The new key verifies after the SIGHUP only; inside the overlap both do; once the old key
    is gone from the file, a PCS it signs is refused -- one process throughout."""
    tenants = tmp_path / "tenants.toml"
    write_tenants(tenants, [("k0", OLD, {})])
    old, new = bodies(OLD.encode(), 6, seed=1), bodies(NEW.encode(), 6, seed=2)
    with serve(tmp_path, tenants) as srv:
        pid = srv.proc.pid
        assert post(srv, old[0]).status_code == 200
        assert post(srv, new[0]).status_code == 401  # not configured yet
        write_tenants(tenants, [("k0", OLD, {"not_after": time.time() + 600}), ("k1", NEW, {})])
        srv.signal(signal.SIGHUP)
        wait_for(srv, '"event":"tenants_reloaded"')
        assert post(srv, new[1]).status_code == 200
        assert post(srv, old[1]).status_code == 200  # inside the overlap
        write_tenants(tenants, [("k1", NEW, {})])
        srv.signal(signal.SIGHUP)
        wait_for(srv, '"event":"tenants_reloaded"', 2)
        r = post(srv, old[2])
        assert r.status_code == 401 and "bad-signature" in r.text
        assert post(srv, new[2]).status_code == 200
        # a resend is verified before the dedup look-up (INV-VERIFY-BEFORE-DEDUP): the retired
        # key's PCS is refused even though the store holds it; the new key's is a replay
        assert post(srv, old[0]).status_code == 401
        assert post(srv, new[1]).headers.get("idempotent-replayed") == "true"
        assert srv.proc.pid == pid and srv.proc.poll() is None and srv.starts == 1
        assert [e["generation"] for e in log_events(srv, "tenants_reloaded")] == [1, 2]
        metrics = httpx.get(srv.url + "/metrics", timeout=10).text
        assert 'flk_tenants_reloads_total{result="ok"} 2.0' in metrics


@pytest.mark.timeout(120)
def test_a_bad_file_changes_nothing_and_is_logged(tmp_path) -> None:
    tenants = tmp_path / "tenants.toml"
    write_tenants(tenants, [("k0", OLD, {})])
    old = bodies(OLD.encode(), 3, seed=3)
    with serve(tmp_path, tenants) as srv:
        for text in (b"[tenants.acme\nalg = ", b"\xff\xfe\x00garbage", b"[tenants.acme]\nalg = 'rot13'\n"):
            tenants.write_bytes(text)
            srv.signal(signal.SIGHUP)
        wait_for(srv, '"event":"tenants_reload_failed"', 1)
        time.sleep(0.5)
        assert srv.proc.poll() is None
        assert post(srv, old[0]).status_code == 200  # the tenants it had
        failed = log_events(srv, "tenants_reload_failed")
        assert failed and all("TENANTS_FILE" in e["error"] for e in failed)
        assert OLD not in srv.log_text()  # a message never shows a key
        tenants.unlink()
        srv.signal(signal.SIGHUP)
        wait_for(srv, '"event":"tenants_reload_failed"', len(failed) + 1)
        assert post(srv, old[1]).status_code == 200
        assert "tenants_reloaded" not in srv.log_text()


@pytest.mark.timeout(180)
def test_the_supervisor_passes_the_signal_to_every_worker(tmp_path) -> None:
    """SIGHUP to the supervisor alone (as ``kill -HUP <pid>`` does): both workers reload, and
    whichever worker a connection reaches verifies the new key."""
    tenants = tmp_path / "tenants.toml"
    write_tenants(tenants, [("k0", OLD, {})])
    new = bodies(NEW.encode(), 24, seed=4)
    with serve(tmp_path, tenants, workers=2) as srv:
        write_tenants(tenants, [("k1", NEW, {})])
        os.kill(srv.proc.pid, signal.SIGHUP)  # the supervisor only, not its process group
        wait_for(srv, '"event":"tenants_reloaded"', 2)
        assert sorted(e["worker"] for e in log_events(srv, "tenants_reloaded")) == [0, 1]
        assert all(httpx.post(srv.url + "/v1/pcs/submit", content=b, headers={"X-Tenant-Id": "acme"},
                              timeout=10).status_code == 200 for b in new)  # new connections: both workers
        assert srv.proc.poll() is None and "worker_died" not in srv.log_text()


@pytest.mark.timeout(120)
def test_a_reload_keeps_the_tenants_buckets(tmp_path) -> None:
    """The token bucket a tenant emptied stays empty across a reload (no burst for free)."""
    tenants = tmp_path / "tenants.toml"
    limits = {"rate_per_s": 0.01, "burst": 2}
    write_tenants(tenants, [("k0", OLD, {})], limits)
    old, new = bodies(OLD.encode(), 4, seed=5), bodies(NEW.encode(), 2, seed=6)
    with serve(tmp_path, tenants) as srv:
        assert [post(srv, b).status_code for b in old[:3]] == [200, 200, 429]
        write_tenants(tenants, [("k0", OLD, {}), ("k1", NEW, {})], limits)
        srv.signal(signal.SIGHUP)
        wait_for(srv, '"event":"tenants_reloaded"')
        assert post(srv, new[0]).status_code == 429


# -- the reload object, without a process ----------------------------------------------------
class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def info(self, event: str, **fields) -> None:
        self.lines.append((event, fields))

    error = info


def _reload_for(path, verifier_box: list) -> tuple[TenantsReload, _Log]:
    from prometheus_client import CollectorRegistry

    log = _Log()
    reload = TenantsReload(types.SimpleNamespace(tenants_file=str(path)), log, CollectorRegistry(),
                           lambda: verifier_box[0], lambda v: verifier_box.__setitem__(0, v))
    return reload, log


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=300),
                         st.text(max_size=300).map(str.encode),
                         st.sampled_from([b'[tenants.x]\nalg = "hmac"\n[[tenants.x.keys]]\nid = "a"\n'
                                          b'secret = "0123456789abcdef0123"\n',
                                          b'[tenants.x]\nalg = "hmac"\n[[tenants.x.keys]]\nid = "a"\n',
                                          b'[tenants."a b"]\nalg = "hmac"\n',
                                          b'[tenants.x]\nalg = "ed25519"\n[[tenants.x.keys]]\nid = "a"\n'
                                          b'public_key_b64 = "AAAA"\n'])))
def test_any_file_content_is_an_answer_never_an_exception(tmp_path, content) -> None:
    path = tmp_path / "t.toml"
    write_tenants(path, [("k0", OLD, {})])
    first = Verifier(load_toml(str(path)))
    box = [first]
    reload, log = _reload_for(path, box)
    path.write_bytes(content)
    ok = asyncio.run(reload.reload())
    event, fields = log.lines[-1]
    if ok:
        assert event == "tenants_reloaded" and box[0] is not first and reload.generation == 1
        assert box[0].limiter is first.limiter and box[0].policy is first.policy
    else:
        assert event == "tenants_reload_failed" and box[0] is first and reload.generation == 0
        assert fields["error"].startswith("TENANTS_FILE")


def test_a_change_made_while_the_worker_started_is_read_when_its_handler_is_installed(tmp_path) -> None:
    """A rewrite (and its SIGHUP) that came before the handler was in place is not lost."""
    path = tmp_path / "t.toml"
    write_tenants(path, [("k0", OLD, {})])
    box = [Verifier(load_toml(str(path)))]
    reload, log = _reload_for(path, box)  # the start reads the file after this
    stamp = file_stamp(str(path))
    time.sleep(0.01)
    write_tenants(path, [("k1", NEW, {})])
    assert file_stamp(str(path)) != stamp

    async def start() -> None:
        assert reload.install(asyncio.get_running_loop())
        for _ in range(100):
            if reload.generation:
                break
            await asyncio.sleep(0.01)
        reload.uninstall()

    asyncio.run(start())
    assert reload.generation == 1 and [k.key_id for k in box[0].tenants.resolve("acme").keys] == ["k1"]


def test_an_unchanged_file_is_not_reloaded_at_install(tmp_path) -> None:
    path = tmp_path / "t.toml"
    write_tenants(path, [("k0", OLD, {})])
    box = [Verifier(load_toml(str(path)))]
    reload, log = _reload_for(path, box)

    async def start() -> None:
        assert reload.install(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        reload.uninstall()

    asyncio.run(start())
    assert reload.generation == 0 and log.lines == []


def test_the_replay_applier_takes_the_new_verifier_for_every_origin(tmp_path) -> None:
    path = tmp_path / "t.toml"
    write_tenants(path, [("k0", OLD, {})])
    first = Verifier(load_toml(str(path)), region="eu")
    applier = ReplayApplier(first, store=None)
    before = applier._verifier("us")
    assert before.tenants is first.tenants and applier._verifier("eu") is first
    write_tenants(path, [("k1", NEW, {})])
    second = first.with_tenants(load_toml(str(path)), ())
    applier.set_verifier(second)
    after = applier._verifier("us")
    assert after is not before and after.tenants is second.tenants and after.region == "us"
    assert applier._verifier("eu") is second
