"""``flk bench NAME [--json] [--repeat N]``: run a benchmark and print its figures.

Each benchmark is a module ``flk.impl.lab.bench.<name>`` exporting
``run(repeat: int, quick: bool) -> dict`` of named figures. With ``--json`` exactly one
JSON object is printed on stdout (and nothing else); without, a table.
"""

from __future__ import annotations

import importlib
import json
import os

BENCHES = {
    "canon": "canonical bytes + HMAC signatures per second vs bare hmac.digest",
    "verify": "in-process verify pipeline throughput per dedup store",
    "serve": "HTTP server throughput and latency vs a bare Starlette handler",
    "ring": "consistent-hash ring lookups and distribution",
    "sim": "simulator: 3-region CRR scenario, 1M submissions",
    "loadgen": "load generator req/s against a no-op HTTP sink, PCS synthesis rate",
    "crr": "cross-region replication: WAL shipping and verified replay records/s",
    "model": "exhaustive model checking: default and larger scope, with and without symmetry",
    "restart": "flk serve restart time with 1,000,000 inbox WAL records: checkpoints + retention vs full replay",
    "metrics": "/metrics at 10,000 tenants: scrape time and size, live requests' worst latency during scrapes",
    "explore": "swarm exploration: runs per core-hour, simulated seconds per wall second (anchor: client-partition)",
}


def configure(p) -> None:
    p.add_argument("name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("--json", action="store_true", help="print one JSON object of figures")
    p.add_argument("--repeat", type=int, default=5, help="runs to take the median of (default 5)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    p.add_argument("--n", type=int, default=None, help="sim only: submissions to simulate (default 1,000,000)")
    p.add_argument("--wall-share", action="store_true",
                   help="sim only: one more run under py-spy, its wall time by whose code ran (the profile extra)")


def run(args) -> int:
    from . import UsageError

    if args.repeat < 1:
        raise UsageError("--repeat must be >= 1")
    mod = importlib.import_module(f"flk.impl.lab.bench.{args.name}")
    extra = {}
    if getattr(args, "n", None) is not None:
        if args.name != "sim" or args.n < 1:
            raise UsageError("--n takes a positive count and applies to the sim benchmark only")
        extra["n"] = args.n
    if getattr(args, "wall_share", False):
        if args.name != "sim":
            raise UsageError("--wall-share applies to the sim benchmark only")
        extra["wall_share"] = True
    figures = mod.run(repeat=args.repeat, quick=args.quick, **extra)
    figures.setdefault("benchmark", args.name)
    figures.setdefault("cores", os.cpu_count())
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        width = max(len(k) for k in figures)
        for k in sorted(figures):
            print(f"{k:<{width}}  {figures[k]}")
    return 0
