"""``flk bench ring``: consistent-hash ring lookups per second and the key distribution.

Figures: scalar ``Ring.owner`` lookups/s (key hashing included), bulk
lookups/s (``probe_matrix`` + numpy ``owner_indexes``), the max/min shard load
over 1,000,000 random keys (100,000 with ``--quick``) at 150 vnodes for 3..16
shards with the default 4 probes and with the classic single probe, and the
fraction of keys moved when a shard is added / removed (ideal 1/(N+1), 1/N).
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np

from ...dedup.sharded import DEFAULT_PROBES, DEFAULT_VNODES, Ring, probe_matrix


def run(repeat: int = 5, quick: bool = False) -> dict:
    n_keys = 100_000 if quick else 1_000_000
    rng = random.Random(7)
    h = rng.randbytes(16 * n_keys).hex()
    keys = [(f"t{i % 7}", h[32 * i: 32 * i + 32]) for i in range(n_keys)]
    ring4 = Ring([f"shard-{i}" for i in range(4)])
    scalar_n = 20_000 if quick else 100_000
    scalar, bulk = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t, p in keys[:scalar_n]:
            ring4.owner(t, p)
        scalar.append(scalar_n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        ring4.owner_indexes(probe_matrix(keys))
        bulk.append(n_keys / (time.perf_counter() - t0))
    probes = probe_matrix(keys)
    dist: dict = {}
    classic: dict = {}
    for n in (3, 4, 5, 8, 12, 16):
        names = [f"shard-{i}" for i in range(n)]
        for target, pr in ((dist, DEFAULT_PROBES), (classic, 1)):
            c = np.bincount(np.asarray(Ring(names, DEFAULT_VNODES, pr).owner_indexes(probes)), minlength=n)
            target[str(n)] = round(float(c.max() / c.min()), 4)
    moved_add, moved_remove = {}, {}
    for n in (3, 4, 8):
        old = Ring([f"shard-{i}" for i in range(n)])
        a = np.asarray(old.owner_indexes(probes))
        new = old.with_shard("shard-new")
        b = np.asarray([new.shards[i] for i in new.owner_indexes(probes)], dtype=object)
        a_names = np.asarray([old.shards[i] for i in a], dtype=object)
        moved_add[str(n)] = round(float((a_names != b).mean()), 4)
        gone = old.without_shard("shard-0")
        c = np.asarray([gone.shards[i] for i in gone.owner_indexes(probes)], dtype=object)
        moved_remove[str(n)] = round(float((a_names != c).mean()), 4)
    return {
        "keys": n_keys,
        "vnodes": DEFAULT_VNODES,
        "probes": DEFAULT_PROBES,
        "lookups_per_s_scalar": round(statistics.median(scalar)),
        "lookups_per_s_bulk": round(statistics.median(bulk)),
        "scalar_runs": [round(r) for r in scalar],
        "bulk_runs": [round(r) for r in bulk],
        "max_over_min_by_shards": dist,
        "max_over_min_by_shards_single_probe": classic,
        "max_over_min_goal": 1.2,
        "moved_fraction_add_one_by_shards": moved_add,
        "moved_fraction_remove_one_by_shards": moved_remove,
        "repeat": repeat,
    }
