"""How ``flk serve``'s workers share the port (``REUSE_PORT``, :mod:`flk.impl.server.supervisor`):
own ``SO_REUSEPORT`` listeners spread a burst of connections over every worker, ``listening``
is logged only once every worker listens, a replaced worker listens again; ``REUSE_PORT=false``
keeps one shared socket."""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import socket
import sys
import time

import pytest

from flk.impl.server import supervisor
from tests.server.proc import ServerProc

pytestmark = pytest.mark.skipif(not supervisor.reuse_port_supported(), reason="SO_REUSEPORT balancing is Linux's")

KEY = {"PCS_HMAC_KEY": "0123456789abcdef0123"}


def _listeners(port: int) -> int:
    """Sockets in LISTEN state on ``port`` (IPv4, this host)."""
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    return sum(1 for r in rows if r[1].endswith(f":{port:04X}") and r[3] == "0A")


def _burst(port: int, n: int) -> collections.Counter:
    """Open ``n`` connections at once, then ask each which worker holds it."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(n)]
    for c in conns:
        c.connect()
    seen: collections.Counter = collections.Counter()
    try:
        for c in conns:
            c.request("GET", "/ready")
            r = c.getresponse()
            assert r.status == 200
            seen[json.loads(r.read())["worker"]] += 1
    finally:
        for c in conns:
            c.close()
    return seen


def _listening_line(srv: ServerProc) -> dict:
    return next(json.loads(line) for line in srv.log_text().splitlines() if '"event":"listening"' in line)


def test_own_listeners_spread_a_burst_over_every_worker(tmp_path) -> None:
    """64 connections opened at once right after ``listening``: none refused, and each of
    the 2 workers holds at least 8 (a hash split falls below that with p ~ 3e-11; one
    shared socket promises no split: whichever worker wakes first accepts what is queued)."""
    with ServerProc(tmp_path, {**KEY, "WORKERS": "2"}) as srv:
        assert _listening_line(srv)["listeners"] == "per-worker"
        assert _listeners(srv.port) == 2
        seen = _burst(srv.port, 64)
        assert set(seen) == {0, 1} and min(seen.values()) >= 8, seen


def test_listening_is_logged_only_once_every_worker_listens(tmp_path) -> None:
    """The line a client waits for comes after both workers' sockets listen: connections
    made the moment it appears are accepted by both."""
    with ServerProc(tmp_path, {**KEY, "WORKERS": "2"}) as srv:
        text = srv.log_text()
        started = [i for i, line in enumerate(text.splitlines()) if '"event":"worker_started"' in line]
        listening = [i for i, line in enumerate(text.splitlines()) if '"event":"listening"' in line]
        assert len(started) == 2 and len(listening) == 1 and listening[0] > max(started)


def test_a_replaced_worker_listens_again(tmp_path) -> None:
    with ServerProc(tmp_path, {**KEY, "WORKERS": "2"}) as srv:
        pids = [json.loads(line)["pid"] for line in srv.log_text().splitlines()
                if '"event":"worker_started"' in line]
        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while srv.log_text().count('"event":"worker_started"') < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.log_text().count('"event":"worker_started"') == 3
        while _listeners(srv.port) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _listeners(srv.port) == 2
        while srv.log_text().count('"event":"worker_ready"') < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = _burst(srv.port, 64)
        assert set(seen) == {0, 1} and min(seen.values()) >= 8, seen


def test_reuse_port_off_keeps_one_shared_socket(tmp_path) -> None:
    with ServerProc(tmp_path, {**KEY, "WORKERS": "2", "REUSE_PORT": "false"}) as srv:
        assert _listening_line(srv)["listeners"] == "shared"
        assert _listeners(srv.port) == 1
        assert sum(_burst(srv.port, 16).values()) == 16


def test_one_worker_listens_on_the_supervisors_socket(tmp_path) -> None:
    with ServerProc(tmp_path, {**KEY, "WORKERS": "1"}) as srv:
        assert _listening_line(srv)["listeners"] == "shared"
        assert _listeners(srv.port) == 1
        assert _burst(srv.port, 4) == {0: 4}


def test_bind_socket_holds_the_port_and_each_worker_listener_is_its_own() -> None:
    held = supervisor.bind_socket("127.0.0.1", 0, 2, reuse_port=True)
    try:
        assert held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        port = held.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):  # holding the port is not listening on it
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        a, b = supervisor.worker_listener(held), supervisor.worker_listener(held)
        try:
            assert len({id(held), id(a), id(b)}) == 3
            assert a.getsockname() == b.getsockname() == held.getsockname()
            assert _listeners(port) == 2
        finally:
            a.close()
            b.close()
    finally:
        held.close()
    shared = supervisor.bind_socket("127.0.0.1", 0)
    try:
        assert supervisor.worker_listener(shared) is shared
    finally:
        shared.close()


def test_a_worker_that_cannot_listen_is_a_startup_failure(capfd) -> None:
    """A port held without ``SO_REUSEPORT`` cannot be joined: the worker exits with the
    start-up failure code (the supervisor then stops) and says why, naming no address."""
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    try:
        code = supervisor.run_worker("no.such.module:factory", (), 0, plain, 1.0)
    finally:
        plain.close()
    assert code == supervisor.STARTUP_FAILURE
    line = json.loads(capfd.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "worker_listen_failed" and line["detail"] == "worker-0"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
