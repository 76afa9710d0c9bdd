"""``flk bench NAME [--json] [--repeat N]``: run a benchmark and print its figures.

Each benchmark is a module ``flk.impl.lab.bench.<name>`` exporting
``run(repeat: int, quick: bool) -> dict`` of named figures. With ``--json`` exactly one
JSON object is printed on stdout (and nothing else); without, a table.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

BENCHES = {
    "canon": "canonical bytes + HMAC signatures per second vs bare hmac.digest (issue 2)",
    "verify": "in-process verify pipeline throughput per dedup store (issue 4)",
    "serve": "HTTP server throughput and latency vs a bare Starlette handler (issue 6)",
    "ring": "consistent-hash ring lookups and distribution (issue 7)",
    "sim": "simulator: 3-region CRR scenario, 1M submissions (issue 9)",
    "loadgen": "load generator req/s against a no-op HTTP sink, PCS synthesis rate (issue 3)",
    "crr": "cross-region replication: WAL shipping and verified replay records/s (issue 8)",
}


def configure(p) -> None:
    p.add_argument("name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("--json", action="store_true", help="print one JSON object of figures")
    p.add_argument("--repeat", type=int, default=5, help="runs to take the median of (default 5)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")


def run(args) -> int:
    from . import UsageError

    if args.repeat < 1:
        raise UsageError("--repeat must be >= 1")
    mod_name = f"flk.impl.lab.bench.{args.name}"
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name != mod_name:
            raise
        print(f"flk bench {args.name}: not implemented yet ({BENCHES[args.name]})", file=sys.stderr)
        return 2
    figures = mod.run(repeat=args.repeat, quick=args.quick)
    figures.setdefault("benchmark", args.name)
    figures.setdefault("cores", os.cpu_count())
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        width = max(len(k) for k in figures)
        for k in sorted(figures):
            print(f"{k:<{width}}  {figures[k]}")
    return 0
