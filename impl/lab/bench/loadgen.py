"""``flk bench loadgen``: can the load generator drive 5,000 req/s on this machine?

Measures (medians over ``repeat`` runs):

* ``plan_pcs_per_s`` -- deterministic PCS synthesis + HMAC signing
  (:func:`flk.impl.agent.loadgen.make_plan`, mixed kinds);
* ``loadgen_rps`` -- requests per second the generator completes against a
  *sink*: a minimal HTTP/1.1 keep-alive server in a separate process that
  reads each request and answers ``202`` without doing any work. The sink
  shares the two cores with the generator, so this is a lower bound on what
  the generator alone can do; a real server doing real work is slower than
  the sink, which is the point: the generator is not the bottleneck if
  ``loadgen_rps`` is well above the 5,000 req/s target;
* ``loadgen_cpu_us_per_request`` -- the generator's own CPU time (user + sys
  of this process) per request, and ``loadgen_rps_per_cpu_core`` = 1e6 / that:
  the rate one fully available core would sustain. Unlike ``loadgen_rps`` it
  hardly depends on what else is running on the machine.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

SINK = r"""
import asyncio, sys
RESP = (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
        b"content-length: 17\r\n\r\n{\"accepted\":true}")
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                n = int(head[i + 15:head.find(b"\r\n", i)])
            if n:
                await reader.readexactly(n)
            writer.write(RESP)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
try:
    import uvloop
    uvloop.run(main(int(sys.argv[1])))
except ImportError:
    asyncio.run(main(int(sys.argv[1])))
"""


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_sink() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError("sink server did not start")
    return proc, f"http://127.0.0.1:{port}"


def run(repeat: int = 5, quick: bool = False) -> dict:
    from ...agent import loadgen

    n = 4_000 if quick else 40_000
    concurrency = 64
    cfg = loadgen.PlanConfig(n=n, seed=1, tenants=4, dup_rate=0.1, bad_sig_rate=0.05, conflict_rate=0.05)
    plan_rates = []
    items = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        items = loadgen.make_plan(cfg, b"bench-base-secret")
        plan_rates.append(n / (time.perf_counter() - t0))
    proc, url = start_sink()
    try:
        runs = []
        p99 = []
        cpu = []
        for _ in range(repeat):
            c0 = time.process_time()
            res = loadgen.run_load(items, [url], concurrency=concurrency, seed=1)
            cpu.append((time.process_time() - c0) / n * 1e6)
            s = res.summary()
            if s["by_status"] != {"202": n}:
                raise RuntimeError(f"sink answered unexpectedly: {s['by_status']}")
            runs.append(s["throughput_rps"])
            p99.append(s["latency_ms"]["p99"])
    finally:
        proc.kill()
        proc.wait()
    return {
        "plan_pcs_per_s": round(statistics.median(plan_rates)),
        "loadgen_rps": round(statistics.median(runs)),
        "loadgen_rps_runs": [round(r) for r in runs],
        "loadgen_cpu_us_per_request": round(statistics.median(cpu), 1),
        "loadgen_rps_per_cpu_core": round(1e6 / statistics.median(cpu)),
        "latency_p99_ms_median": round(statistics.median(p99), 3),
        "n_per_run": n,
        "concurrency": concurrency,
        "repeat": repeat,
        "goal_rps": 5_000,
        "cores": os.cpu_count(),
    }
