"""/metrics of a server with several workers carries every worker's series, each labelled
``worker`` (flk.impl.server.workermetrics).

Each scrape is one connection, and the kernel gives it to one worker: answered by that worker
alone, the submit counters jumped between the workers' counts from scrape to scrape (a
counter that drops is a reset to Prometheus) and the other worker's gauges were missing."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flk.impl.server.workermetrics import merge
from flk.impl.testing.workload import bodies

from .proc import ServerProc

KEY = "0123456789abcdef0123456789abcdef"


def _samples(text: str) -> set[tuple[str, tuple, float]]:
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


worker_metrics = st.fixed_dictionaries({
    "requests": st.dictionaries(st.sampled_from(["200", "409", "503"]), st.integers(1, 10**6), max_size=3),
    "breaker": st.sampled_from([0, 1, 2]),
    "latency": st.lists(st.floats(0, 3, allow_nan=False), max_size=5),
    "crr_lag": st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
    # label values the text format escapes or not: quotes, backslashes, braces, commas, a worker="..." look-alike
    "tenants": st.dictionaries(st.lists(st.sampled_from(["a", "{", "}", ",", "=", '"', "\\", " ", "\n", 'worker="',
                                                        ',worker="', '{worker="0"}']), min_size=1, max_size=8)
                               .map("".join), st.integers(1, 99), max_size=3),
})


def _exposition(worker: int, m: dict) -> str:
    r = CollectorRegistry()
    c = Counter("flk_http_requests", "answers", ["route", "status"], registry=r)
    for status, n in m["requests"].items():
        c.labels("/v1/pcs/submit", status).inc(n)
    Gauge("flk_store_breaker_state", "breaker", registry=r).set(m["breaker"])
    h = Histogram("flk_http_latency_seconds", "latency", buckets=(0.01, 1.0), registry=r)
    for x in m["latency"]:
        h.observe(x)
    Gauge("flk_worker_info", "worker", ["worker"], registry=r).labels(str(worker)).set(1)
    hits = Counter("flk_dedup_hits", "hits", ["tenant"], registry=r)
    for tenant, n in m["tenants"].items():
        hits.labels(tenant).inc(n)
    if m["crr_lag"] is not None:  # a family that labels its worker itself
        Gauge("flk_crr_replication_lag_seconds", "lag", ["worker"], registry=r).labels(str(worker)).set(m["crr_lag"])
    return generate_latest(r).decode()


@settings(max_examples=150, deadline=None)
@given(st.lists(worker_metrics, min_size=1, max_size=4))
def test_the_merge_holds_every_workers_samples_under_its_worker_label(workers):
    texts = {w: _exposition(w, m) for w, m in enumerate(workers)}
    merged = merge(texts).decode()
    want = set()
    for w, text in texts.items():
        for name, labels, value in _samples(text):
            d = dict(labels)
            d.setdefault("worker", str(w))
            want.add((name, tuple(sorted(d.items())), value))
    assert _samples(merged) == want
    # one HELP and one TYPE per family, whatever the number of workers (the text format's rule)
    types = re.findall(r"^# TYPE (\S+) ", merged, re.M)
    assert len(types) == len(set(types))


@pytest.mark.parametrize(("line", "want"), [
    ("x 1", 'x{worker="3"} 1'),
    ("x 1 1700000000000", 'x{worker="3"} 1 1700000000000'),
    ("x{} 1", 'x{worker="3"} 1'),
    ('x{a="}"} 1', 'x{worker="3",a="}"} 1'),
    ('x{worker="0"} 1', 'x{worker="0"} 1'),
    ('x{a="1",worker="0"} 1', 'x{a="1",worker="0"} 1'),
    ('x{a="worker=\\"0\\""} 1', 'x{worker="3",a="worker=\\"0\\""} 1'),
])
def test_each_kind_of_sample_line_gets_its_worker_once(line, want):
    out = merge({3: f"# HELP x d\n# TYPE x gauge\n{line}\n"}).decode()
    assert out == f"# HELP x d\n# TYPE x gauge\n{want}\n"
    assert all(s.labels["worker"] in ("0", "3") for fam in text_string_to_metric_families(out) for s in fam.samples)


def _scrape(srv: ServerProc) -> str:
    with httpx.Client() as c:  # a new connection: the kernel picks the worker
        r = c.get(srv.url + "/metrics", timeout=10)
    assert r.status_code == 200
    return r.text


def _submitted(text: str) -> dict[str, float]:
    """Submissions answered 200, per worker label."""
    return {s.labels["worker"]: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == "flk_http_requests_total" and s.labels.get("status") == "200"
            and s.labels.get("route") == "/v1/pcs/submit"}


@pytest.mark.server
def test_every_scrape_of_two_workers_counts_both_workers(tmp_path):
    n = 80
    srv = ServerProc(tmp_path, {"WORKERS": "2", "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0"})
    with srv:
        for body in bodies(KEY.encode(), n, seed=11):
            with httpx.Client() as c:  # a connection each: both workers take some
                assert c.post(srv.url + "/v1/pcs/submit", content=body, timeout=30).status_code == 200
        seen = []
        for _ in range(10):
            got = _submitted(_scrape(srv))
            seen.append(got)
            assert set(got) == {"0", "1"} and sum(got.values()) == n, seen
        assert min(min(g.values()) for g in seen) > 0  # both workers answered submissions
        # a worker killed: its replacement counts from zero, its series stay labelled apart
        pids = [int(p) for p in re.findall(r'"event":"worker_ready","worker":\d,"pid":(\d+)', srv.log_text())]
        assert len(pids) == 2, srv.log_tail()
        os.kill(pids[-1], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                text = _scrape(srv)
            except httpx.TransportError:
                # a connection still waiting in the killed worker's backlog is reset with it
                # (flk.impl.server.supervisor, SO_REUSEPORT): the replacement is not up yet
                time.sleep(0.2)
                continue
            if len(re.findall(r"^flk_worker_info\{", text, re.M)) == 2 and sum(_submitted(text).values()) < n:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed worker's replacement never reported")
        assert len(re.findall(r"^# TYPE flk_http_requests_total counter", text, re.M)) == 1
    assert not (tmp_path / "data" / "metrics" / "worker-0.prom").exists()


def test_workers_in_one_process_answer_for_each_other_and_a_failed_request_still_answers(tmp_path, monkeypatch):
    """Two WorkerScrape of one data dir (as two worker processes share it): worker 0's answer
    holds worker 1's fresh snapshot; when the request cannot be written (here: a directory in
    its place), the answer is worker 0's series and the snapshots already there, at once --
    not after the wait for the others (made 5 s here, so a busy machine cannot blur the two)."""
    from flk.impl.server import workermetrics
    from flk.impl.server.workermetrics import WorkerScrape

    monkeypatch.setattr(workermetrics, "WAIT_S", 5.0)

    counts = {0: 0, 1: 0}

    def render(w):
        def one() -> bytes:
            counts[w] += 1
            return _exposition(w, {"requests": {"200": 10 * (w + 1) + counts[w]}, "breaker": 0, "latency": [],
                                   "crr_lag": None, "tenants": {}}).encode()
        return one

    w0 = WorkerScrape(str(tmp_path), 0, 2, render(0)).start()
    w1 = WorkerScrape(str(tmp_path), 1, 2, render(1)).start()
    try:
        first = _submitted(w0.answer().decode())
        assert set(first) == {"0", "1"}, first
        second = _submitted(w0.answer().decode())
        assert second["1"] > first["1"], (first, second)  # a fresh snapshot for each answer
        os.remove(w0.request)
        os.mkdir(w0.request)  # the request cannot be written
        t0 = time.monotonic()
        third = _submitted(w0.answer().decode())
        assert time.monotonic() - t0 < 2.5 and set(third) == {"0", "1"} and third["1"] == second["1"], third
        # no temporary left, and no snapshot of worker 0 (it answered its own requests with its own render)
        assert sorted(os.listdir(w0.dir)) == ["scrape", "worker-1.prom"]
    finally:
        w0.stop()
        w1.stop()
    assert not os.path.exists(w1.path(1))
