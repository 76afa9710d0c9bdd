"""``flk bench metrics``: /metrics scrape cost with 10,000 tenants, capped and uncapped.

Figures: the exposition's time (median of ``repeat`` scrapes), bytes and lines
with the server's default cap (``METRICS_MAX_TENANTS`` = 100: later tenants
counted under ``_other``), and the same-run anchor without a cap (every tenant
its own series). ``loop_worst_delay_ms``: the worst delay of
a 1 ms ticker on an asyncio loop while a capped scrape renders on a thread, as
the server's /metrics endpoint does -- what a concurrent request would wait --
and, as the anchor, the same ticker's worst delay with no scrape.
Each tenant sees the pipeline events of a request (ingest, accepted, latency).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from ...verifier.metrics import DEFAULT_MAX_TENANTS, Metrics


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


async def _loop_delay_during(m: Metrics | None, scrapes: int) -> float:
    loop = asyncio.get_running_loop()
    worst, stop = 0.0, False

    async def ticker() -> None:
        nonlocal worst
        while not stop:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t0 - 0.001)

    task = asyncio.create_task(ticker())
    with ThreadPoolExecutor(1) as pool:
        for _ in range(scrapes):
            if m is None:  # the anchor: the same ticker with no scrape (machine noise)
                await asyncio.sleep(0.05)
            else:
                await loop.run_in_executor(pool, m.exposition)
    stop = True
    await task
    return worst


def run(repeat: int = 5, quick: bool = False) -> dict:
    tenants = 2_000 if quick else 10_000
    capped = filled(tenants, DEFAULT_MAX_TENANTS)
    c_times, c_text = scrape_times(capped, repeat)
    uncapped = filled(tenants, None)
    u_times, u_text = scrape_times(uncapped, max(1, min(repeat, 3)))
    worst = asyncio.run(_loop_delay_during(capped, repeat))
    idle = asyncio.run(_loop_delay_during(None, repeat))
    return {
        "tenants": tenants,
        "max_tenants": DEFAULT_MAX_TENANTS,
        "scrape_ms_median": round(statistics.median(c_times) * 1000, 2),
        "scrape_bytes": len(c_text),
        "scrape_lines": c_text.count(b"\n"),
        "uncapped_scrape_ms_median": round(statistics.median(u_times) * 1000, 2),
        "uncapped_scrape_bytes": len(u_text),
        "uncapped_scrape_lines": u_text.count(b"\n"),
        "loop_worst_delay_ms": round(worst * 1000, 2),
        "loop_worst_delay_idle_ms": round(idle * 1000, 2),
    }
