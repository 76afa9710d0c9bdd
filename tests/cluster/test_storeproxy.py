"""The delaying forwarder a real cluster's ``store_latency`` runs through
(:mod:`flk.impl.lab.cluster.storeproxy`), in front of the suite's real Redis and PostgreSQL:
with no delay it passes the store's answers as they are; a delay set through its file and
SIGUSR1 (logged) makes every round trip that much longer and changes no answer; a delay set
back to 0 ends it; a store that refuses leaves the client's connection closed, never hanging;
any file content gives a delay >= 0."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.cluster.prometheus import free_port as _free_port
from flk.impl.lab.cluster.storeproxy import read_delay


class Proxy:
    def __init__(self, tmp_path: Path, upstream: str) -> None:
        self.port = _free_port()
        self.delay_file, self.log = tmp_path / "delay.ms", tmp_path / "events.jsonl"
        self.proc = subprocess.Popen([sys.executable, "-m", "flk.impl.lab.cluster.storeproxy", "--listen",
                                      f"127.0.0.1:{self.port}", "--to", upstream, "--delay-file", str(self.delay_file),
                                      "--log", str(self.log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not self.events("listening"):
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)

    def events(self, name: str) -> list[dict]:
        if not self.log.exists():
            return []
        return [d for d in map(json.loads, self.log.read_text().splitlines()) if d["event"] == name]

    def set_delay(self, ms: float) -> None:
        seen = len(self.events("delay_set"))
        self.delay_file.write_text(f"{ms}\n")
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while len(self.events("delay_set")) == seen:
            assert time.monotonic() < deadline, "the proxy did not log its new delay"
            time.sleep(0.01)
        assert self.events("delay_set")[-1]["ms"] == ms

    def stop(self) -> str:
        """SIGTERM; its stderr (empty: a clean stop, no traceback)."""
        self.proc.terminate()
        self.proc.wait(10)
        return self.proc.stderr.read().decode()


@pytest.fixture
def redis_proxy(tmp_path, redis_url):
    u = urlparse(redis_url)
    proxy = Proxy(tmp_path, f"{u.hostname}:{u.port}")
    yield proxy, u
    proxy.stop()


def _round_trips(client, n: int = 9) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert client.ping()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.redis
def test_a_delay_lengthens_every_redis_round_trip_and_changes_no_answer(redis_proxy):
    import redis

    proxy, u = redis_proxy
    client = redis.Redis(host="127.0.0.1", port=proxy.port, db=int((u.path or "/0").strip("/") or 0),
                         password=u.password, socket_timeout=5)
    key = f"flk-test-proxy-{os.getpid()}"
    try:
        client.set(key, b"v1")
        base = _round_trips(client)
        assert base < 0.05
        proxy.set_delay(80.0)
        slow = _round_trips(client, 5)
        assert 0.08 <= slow < 0.08 + 0.2, slow  # every round trip held 80 ms (a loaded machine adds a little)
        assert client.get(key) == b"v1"
        pipe = client.pipeline(transaction=False)  # a pipeline is one round trip: held once
        for _ in range(20):
            pipe.get(key)
        t0 = time.perf_counter()
        assert pipe.execute() == [b"v1"] * 20
        assert 0.08 <= time.perf_counter() - t0 < 0.5
        proxy.set_delay(0.0)
        assert _round_trips(client) < 0.05
    finally:
        client.delete(key)
    # stopped with the connection open: it exits 0 and says nothing (Python 3.11's stream server
    # logs a traceback for a handler cancelled at the loop's close: the proxy ends them first)
    assert proxy.stop() == "" and proxy.proc.returncode == 0
    client.close()


@pytest.mark.postgres
def test_a_postgres_statement_round_trip_is_held_too(tmp_path, postgres_dsn):
    import psycopg

    u = urlparse(postgres_dsn)
    proxy = Proxy(tmp_path, f"{u.hostname}:{u.port}")
    try:
        dsn = postgres_dsn.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{proxy.port}")
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
            proxy.set_delay(60.0)
            t0 = time.perf_counter()
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert time.perf_counter() - t0 >= 0.06
    finally:
        proxy.stop()


def test_a_store_that_refuses_leaves_the_client_closed_not_hanging(tmp_path):
    proxy = Proxy(tmp_path, f"127.0.0.1:{_free_port()}")  # nothing listens there
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.settimeout(5)
            try:
                got = s.recv(10)
            except ConnectionResetError:
                got = b""
            assert got == b""  # closed (or reset) at once, never a hang till the timeout
    finally:
        proxy.stop()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.one_of(st.text(max_size=12), st.floats(allow_nan=True).map(repr), st.integers(-10**6, 10**6).map(str)))
def test_any_delay_file_gives_a_delay_of_zero_or_more(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("d") / "delay.ms"
    path.write_text(text)
    got = read_delay(path)
    assert got >= 0 and math.isfinite(got)
    try:
        want = float(text.strip())
    except ValueError:
        want = 0.0
    if math.isfinite(want) and want > 0:
        assert got == want / 1000.0
    else:
        assert got == 0.0
    assert read_delay(path.with_name("missing")) == 0.0
