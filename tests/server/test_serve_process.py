"""``flk serve`` as a real process: acceptance, bad configuration, logs, signals, workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import httpx
import pytest

from .proc import FLK, ServerProc, clean_env

pytestmark = pytest.mark.server

EVENTS = "0.1,0.2\n0.4,0.9\n0.5,0.5\n0.7,0.1\n0.2,0.8\n0.9,0.3\n0.3,0.3\n"


def agent_build(cwd, key: str, shard: str, epoch: int) -> bytes:
    (cwd / "events.csv").write_text(EVENTS)
    out = subprocess.run(
        [FLK, "agent", "build", "--input", "events.csv", "--shard-id", shard, "--epoch", str(epoch), "--compact"],
        cwd=cwd, env=clean_env(PCS_HMAC_KEY=key), capture_output=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.strip()


def test_acceptance_no_config_sqlite_local_data_dir_accepts_agent_built_pcs(tmp_path) -> None:
    """`flk serve` with no configuration (only --port 0 to avoid port clashes on a shared
    machine) starts on SQLite in ./data and accepts a PCS built by `flk agent build`."""
    with ServerProc(tmp_path) as srv:
        log = srv.log_text()
        assert "local data dir" in log and "hmac.key" in log
        assert (tmp_path / "data" / "dedup.sqlite3").exists()
        assert (tmp_path / "data" / "wal" / "worker-0").is_dir()
        key = (tmp_path / "data" / "hmac.key").read_text().strip()
        pcs = agent_build(tmp_path, key, "acceptance", 7)
        r = httpx.post(srv.url + "/v1/pcs/submit", content=pcs, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] is True and r.json()["pcs_id"] == json.loads(pcs)["pcs_id"]
        assert httpx.get(srv.url + "/ready").json()["store"] == "sqlite"
        # the key is never in the log, only its path
        assert key not in srv.log_text()
    assert srv.proc.returncode == 0


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"DEDUP_BACKEND": "redis", "REDIS_ADDR": "127.0.0.1:1"}, "dedup store redis"),
        ({"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": "postgresql://nobody@127.0.0.1:1/x"}, "dedup store postgres"),
        ({"PCS_SIGN_ALG": "none"}, "requires signed PCS"),
        ({"WORKERS": "0"}, "WORKERS must be in"),
        ({"CRR_STORE_DIR": "crr-objects", "CRR_MODE": "bogus"}, "replication: CRR_MODE"),
    ],
)
def test_bad_configuration_exits_2_before_binding(tmp_path, env, fragment) -> None:
    env = {"PORT": "0", **env}
    out = subprocess.run([FLK, "serve"], cwd=tmp_path, env=clean_env(**env), capture_output=True, timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert fragment in err and "Traceback" not in err
    assert '"event":"listening"' not in err


def test_logs_never_contain_payloads_signatures_or_keys(tmp_path) -> None:
    key = "log-test-key-0123456789abcdef"
    env = {"PCS_HMAC_KEY": key, "LOG_LEVEL": "debug", "METRICS_USER": "u", "METRICS_PASS": "metrics-password-xyz"}
    with ServerProc(tmp_path, env) as srv:
        pcs = agent_build(tmp_path, key, "logs", 1)
        doc = json.loads(pcs)
        assert httpx.post(srv.url + "/v1/pcs/submit", content=pcs).status_code == 200
        bad = dict(doc, sig="A" * 43 + "=")
        assert httpx.post(srv.url + "/v1/pcs/submit", json=bad).status_code == 401
        assert httpx.post(srv.url + "/v1/pcs/submit", content=b'{"secret-body-marker": 1').status_code == 400
        httpx.get(srv.url + "/metrics", auth=("u", "metrics-password-xyz"))
        httpx.get(srv.url + "/metrics", auth=("u", "wrong-password-abc"))
        for raw in (b"GARBAGE secret-body-marker\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00"):  # not HTTP: uvicorn logs
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(raw)
                assert s.recv(64).startswith(b"HTTP/1.1 400")
    log = srv.log_text()
    assert '"event":"request"' in log  # debug level: every request was logged
    for secret in (key, doc["sig"], bad["sig"], doc["merkle_root"], "secret-body-marker",
                   "metrics-password-xyz", "wrong-password-abc", json.dumps(doc["v_star"])):
        assert secret not in log, secret
    # every line is one JSON object, from the first (the start-up notes) to uvicorn's own warnings
    events = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert {e["event"] for e in events} >= {"config_note", "config", "listening"}
    assert [e["detail"] for e in events if e.get("logger") == "uvicorn.error"] == ["Invalid HTTP request received."] * 2


def test_sigterm_drains_and_exits_0(tmp_path) -> None:
    # The request waits WAL_GROUP_DELAY_MS for its group commit; SIGTERM is sent only once the
    # server counts it in flight (a fixed sleep raced the connect on a loaded machine).
    env = {"PCS_HMAC_KEY": "0123456789abcdef0123", "WAL_GROUP_DELAY_MS": "1000"}
    with ServerProc(tmp_path, env) as srv:
        from flk.impl.testing.workload import bodies

        body = bodies(b"0123456789abcdef0123", 1)[0]
        import threading

        result = {}

        def submit() -> None:
            result["r"] = httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=20)

        t = threading.Thread(target=submit)
        t.start()
        deadline = time.monotonic() + 20
        while "\nflk_inflight 1.0" not in httpx.get(srv.url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.02)
        os.kill(srv.proc.pid, signal.SIGTERM)
        t.join(20)
        assert result["r"].status_code == 200  # in-flight request was drained, not dropped
        assert srv.proc.wait(20) == 0
    assert '"event":"worker_stopped"' in srv.log_text()


def test_workers_share_the_store_and_a_dead_worker_is_replaced(tmp_path) -> None:
    from flk.impl.testing.workload import bodies

    env = {"PCS_HMAC_KEY": "0123456789abcdef0123", "WORKERS": "2"}
    bs = bodies(b"0123456789abcdef0123", 40)
    with ServerProc(tmp_path, env) as srv:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            first = [c.post("/v1/pcs/submit", content=b) for b in bs[:20]]
            assert all(r.status_code == 200 for r in first)
            workers = {json.loads(c.get("/ready").text)["worker"] for _ in range(1)}
            assert workers <= {0, 1}
        pids = [json.loads(line)["pid"] for line in srv.log_text().splitlines()
                if '"event":"worker_started"' in line]
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while '"event":"worker_died"' not in srv.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert '"event":"worker_died"' in srv.log_text()
        time.sleep(1.5)
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            # every acknowledged outcome is still answered the same (shared store, FWW)
            again = [c.post("/v1/pcs/submit", content=b) for b in bs[:20]]
            assert [r.content for r in again] == [r.content for r in first]
            assert all(c.post("/v1/pcs/submit", content=b).status_code == 200 for b in bs[20:])
        assert (tmp_path / "data" / "wal" / "worker-1").is_dir()
    assert srv.proc.returncode == 0


def test_second_server_on_the_same_data_dir_is_refused(tmp_path) -> None:
    with ServerProc(tmp_path, {"PCS_HMAC_KEY": "0123456789abcdef0123"}):
        out = subprocess.run([FLK, "serve", "--port", "0"], cwd=tmp_path,
                             env=clean_env(PCS_HMAC_KEY="0123456789abcdef0123"), capture_output=True, timeout=60)
        assert out.returncode == 2
        assert "in use by another process" in out.stderr.decode()


_FREEZE_PROBE = """
import asyncio, gc, socket
import uvicorn
from flk.impl.server.supervisor import _frozen_after_startup
from flk.impl.testing.bare import app

async def main():
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    server = _frozen_after_startup(uvicorn)(config)
    server.lifespan = config.lifespan_class(config)  # as uvicorn's serve() sets it before startup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    before = gc.get_freeze_count()
    await server.startup(sockets=[sock])
    after = gc.get_freeze_count()
    await server.shutdown(sockets=[sock])
    print(before, after)

asyncio.run(main())
"""


def test_a_served_worker_freezes_its_heap_once_started() -> None:
    """The worker's uvicorn server (every ``flk serve`` worker, and the bench's bare
    anchors, which run through the same supervisor) moves what the started process holds
    into the collector's permanent generation: full collections then skip it."""
    import sys

    out = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, timeout=60,
                         env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 10_000  # the started process's objects (modules, the app)


def test_a_workers_library_records_and_python_warnings_are_json_lines() -> None:
    """What a worker configures (flk.impl.server.logs.worker_log_config, logging.captureWarnings):
    a library's warning and a Python warning each become one JSON line; below WARNING nothing."""
    code = ("import logging, logging.config, warnings\n"
            "from flk.impl.server.logs import worker_log_config\n"
            "logging.config.dictConfig(worker_log_config(3, lambda t: t.replace('s3cr3t', '***')))\n"
            "logging.captureWarnings(True)\n"
            "warnings.warn('w-marker')\n"
            "logging.getLogger('some.lib').warning('lib-marker s3cr3t')\n"
            "logging.getLogger('some.lib').info('quiet')\n"
            "logging.getLogger('psycopg.pool').warning('reconnect')\n")
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [(e["event"], e["worker"], e["logger"]) for e in events] == [("library_log", 3, "py.warnings"),
                                                                        ("library_log", 3, "some.lib")]
    assert "w-marker" in events[0]["detail"] and events[1]["detail"] == "lib-marker ***"
