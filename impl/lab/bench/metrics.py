"""``flk bench metrics``: /metrics at 10,000 tenants -- scrape time, size, and what live
requests wait while scrapes run.

Two parts, medians over ``repeat`` runs:

* In process: :class:`flk.impl.verifier.metrics.Metrics` holding 10,000 tenants (each
  tenant sees the pipeline events of a request: ingest, accepted, latency), rendered
  with the server's default top-N (``METRICS_MAX_TENANTS`` = 100 tenants by activity,
  the rest under ``_other``; the ranking runs in every scrape): ``render_ms_median``,
  bytes, lines; the same-run anchor without a cap (``uncapped_*``: every tenant its own
  series, what froze a worker before).
* Live: a real ``flk serve`` (one worker, SQLite, a tenants file of 10,000 tenants; then the
  same with two workers, ``w2_*``: each scrape answered with both workers' series),
  one PCS submitted per tenant first, then per repeat two phases of equal length on
  the same server: the *anchor* (only live requests: keep-alive connections each
  sending duplicate submissions of rotating tenants, one at a time, over raw HTTP/1.1)
  and the *scrape phase* (the same live requests while a separate process -- as
  Prometheus is -- scrapes ``/metrics`` back to back with a 50 ms pause). Figures: ``scrape_ms_median`` (an
  HTTP scrape as Prometheus sees it), ``worst_request_during_scrape_ms`` (the
  slowest live request that overlapped a scrape, median over repeats) and
  ``worst_request_anchor_ms`` (the slowest live request without scrapes, the same
  run: the machine's own noise), with p99s, ``scrape_bytes_live`` and
  ``scrape_workers_live`` (the ``worker="..."`` values the last scrape names: both
  workers in every two-worker answer but a phase's first, where a worker that has not
  yet answered a scrape request is missing; at least two scrapes a phase), and the
  1-minute load average before and after (the machine is shared).

Targets (/metrics cost bounded): scrape < 200 ms; no request delayed > 50 ms
by a scrape -- read against the anchor on a loaded machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time

from ...core import textdata
from ...verifier.metrics import DEFAULT_MAX_TENANTS, Metrics

KEY = "bench-metrics-key-0123456789abcdef"
CONNECTIONS = 4
POPULATE_CONNECTIONS = 16  # storing the tenants on more than one worker (see _live)


def filled(tenants: int, max_tenants: int | None) -> Metrics:
    m = Metrics(max_tenants=max_tenants)
    for i in range(tenants):
        label = f"tenant-{i:05d}"
        for kind in ("ingest", "accepted"):
            m({"kind": kind, "tenant_label": label, "status": 200})
        m.observe_latency(label, 0.001 + (i % 50) / 10_000)
    m.exposition()  # fold the tally once, as a first scrape would
    return m


def scrape_times(m: Metrics, repeat: int) -> tuple[list[float], bytes]:
    times, text = [], b""
    for _ in range(repeat):
        t0 = time.perf_counter()
        text = m.exposition()
        times.append(time.perf_counter() - t0)
    return times, text


# -- live: a real server ------------------------------------------------------------------
def _tenants_file(path: str, tenants: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(tenants):
            fh.write(f'[tenants.tenant-{i:05d}]\nalg = "hmac"\n[[tenants.tenant-{i:05d}.keys]]\nid = "k1"\n'
                     f'secret = "{KEY}"\n')


def _request(body: bytes, tenant: str) -> bytes:
    return (f"POST /v1/pcs/submit HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"X-Tenant-Id: {tenant}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def _populate(port: int, requests: list[bytes], connections: int = CONNECTIONS) -> dict[int, int]:
    """Send every request over ``connections`` keep-alive connections until it is answered
    other than 503/429 (the server's overload answers: sent again after a pause);
    the count of each final status."""
    queue = list(reversed(requests))
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                raw = queue.pop()
                status = await _exchange(reader, writer, raw)
                if status in (429, 503):
                    queue.insert(0, raw)
                    await asyncio.sleep(0.05)
                    continue
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


async def _live_load(port: int, requests: list[bytes], seconds: float) -> list[tuple[float, float]]:
    """Live requests (one at a time per connection) for ``seconds``: (start, end) of each."""
    spans: list[tuple[float, float]] = []
    stop = time.monotonic() + seconds

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                await _exchange(reader, writer, requests[i % len(requests)])
                spans.append((t0, time.monotonic()))
                i += CONNECTIONS
        finally:
            writer.close()

    await asyncio.gather(*(worker(k) for k in range(CONNECTIONS)))
    return spans


SCRAPER = r"""
import http.client, json, re, sys, time
port, seconds, pause = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
stop, n = time.monotonic() + seconds, 0
print("ready", flush=True)
while time.monotonic() < stop or n < 2:
    t0 = time.monotonic()
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    body = resp.read()
    workers = len(set(re.findall(rb'worker="([^"]*)"', body)))
    print(json.dumps([t0, time.monotonic(), len(body) if resp.status == 200 else -resp.status, workers]), flush=True)
    n += 1
    time.sleep(pause)
"""
# at least two scrapes a phase, however slow the machine: a worker that has not answered a
# scrape request yet contributes nothing to the first answer (flk.impl.server.workermetrics),
# its snapshot is in every later one


def _phase(port: int, requests: list[bytes], seconds: float, scrape: bool) -> dict:
    """Live requests for ``seconds``; with ``scrape``, a separate process (as Prometheus is)
    scrapes /metrics back to back meanwhile (``time.monotonic`` is one clock for both)."""
    import subprocess
    import sys

    proc = None
    if scrape:
        proc = subprocess.Popen([sys.executable, "-c", SCRAPER, str(port), str(seconds), "0.05"],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # "ready"
    spans = asyncio.run(_live_load(port, requests, seconds))
    scrapes: list[tuple[float, float, int, int]] = []
    if proc is not None:
        out, _ = proc.communicate(timeout=120)
        scrapes = [tuple(textdata.json_loads(line)) for line in out.splitlines() if line.startswith("[")]
        spans = [(a, b) for a, b in spans if any(a < e and b > s for s, e, *_ in scrapes)]
    lat = sorted(b - a for a, b in spans)
    return {"worst_ms": lat[-1] * 1000 if lat else 0.0,
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else 0.0,
            "requests": len(lat),
            "scrape_ms": [(e - s) * 1000 for s, e, *_ in scrapes], "scrape_bytes": scrapes[-1][2] if scrapes else 0,
            "scrape_workers": scrapes[-1][3] if scrapes else 0}


def _live(repeat: int, tenants: int, seconds: float, workers: int = 1) -> dict:
    from ...testing.workload import bodies
    from .serve import _env, _flk, _Proc

    work = tempfile.mkdtemp(prefix="flk-bench-metrics-")
    tf = os.path.join(work, "tenants.toml")
    _tenants_file(tf, tenants)
    docs = bodies(KEY.encode(), tenants, seed=7)
    requests = [_request(doc, f"tenant-{i:05d}") for i, doc in enumerate(docs)]
    data = os.path.join(work, "data")
    os.makedirs(data)
    proc = _Proc([_flk(), "serve", "--port", "0"],
                 _env(MULTI_TENANT="1", TENANTS_FILE=tf, DATA_DIR=data, WORKERS=str(workers), LOG_LEVEL="info"),
                 data, "/ready")
    try:
        # the kernel spreads connections over the workers at random (SO_REUSEPORT): over 4, one of
        # two workers gets none one time in 8 and stores no tenant (w2_* then reads like one worker);
        # over 16, one time in 32,768
        statuses = asyncio.run(_populate(proc.port, requests, CONNECTIONS if workers == 1 else POPULATE_CONNECTIONS))
        runs = []
        for _ in range(repeat):
            anchor = _phase(proc.port, requests, seconds, scrape=False)
            during = _phase(proc.port, requests, seconds, scrape=True)
            runs.append((anchor, during))
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    return {
        "live_tenants_stored": statuses.get(200, 0),
        "live_populate_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "scrape_ms_median": round(med([med(d["scrape_ms"]) for _, d in runs]), 2),
        "scrape_ms_max": round(max(max(d["scrape_ms"]) for _, d in runs), 2),
        "scrapes": sum(len(d["scrape_ms"]) for _, d in runs),
        "scrape_bytes_live": runs[-1][1]["scrape_bytes"],
        "scrape_workers_live": runs[-1][1]["scrape_workers"],  # worker="..." values in the last scrape
        "worst_request_during_scrape_ms": round(med([d["worst_ms"] for _, d in runs]), 2),
        "worst_request_during_scrape_ms_runs": [round(d["worst_ms"], 2) for _, d in runs],
        "p99_request_during_scrape_ms": round(med([d["p99_ms"] for _, d in runs]), 2),
        "requests_during_scrape": sum(d["requests"] for _, d in runs),
        "worst_request_anchor_ms": round(med([a["worst_ms"] for a, _ in runs]), 2),
        "worst_request_anchor_ms_runs": [round(a["worst_ms"], 2) for a, _ in runs],
        "p99_request_anchor_ms": round(med([a["p99_ms"] for a, _ in runs]), 2),
    }


def run(repeat: int = 5, quick: bool = False) -> dict:
    tenants = 1_000 if quick else 10_000
    load_before = os.getloadavg()[0]
    capped = filled(tenants, DEFAULT_MAX_TENANTS)
    c_times, c_text = scrape_times(capped, repeat)
    uncapped = filled(tenants, None)
    u_times, u_text = scrape_times(uncapped, max(1, min(repeat, 3)))
    out = {
        "tenants": tenants,
        "max_tenants": DEFAULT_MAX_TENANTS,
        "render_ms_median": round(statistics.median(c_times) * 1000, 2),
        "render_bytes": len(c_text),
        "render_lines": c_text.count(b"\n"),
        "uncapped_render_ms_median": round(statistics.median(u_times) * 1000, 2),
        "uncapped_render_bytes": len(u_text),
        "uncapped_render_lines": u_text.count(b"\n"),
    }
    out.update(_live(repeat, tenants, 1.0 if quick else 4.0))
    # two workers: every scrape carries both workers' series (flk.impl.server.workermetrics), the
    # answering worker waits for the other's snapshot and merges the two texts
    out.update({f"w2_{k}": v for k, v in _live(repeat, tenants, 1.0 if quick else 4.0, workers=2).items()})
    out["loadavg_1m_before"] = round(load_before, 2)
    out["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return out
