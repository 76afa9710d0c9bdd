"""``flk bench canon``: canonical bytes + HMAC-SHA256 signatures per second on one core.

Also measures bare ``hmac.digest`` over a payload of the same size in the same
run, so the figure can be read as overhead over the primitive. The two are
measured alternately (sign, bare, sign, bare, ...) so that load from other
processes on a shared machine hits both alike and the ratio stays meaningful;
each is also reported per CPU-second of this process (``*_per_cpu_s``).
A whole realistic PCS (optional fields included) is signed too
(``canon_hmac_realistic_pcs_per_cpu_s``). ``core_path`` says whether the
compiled fast path or the pure-Python core ran (``FLK_PURE=1`` forces the pure
one).
"""

from __future__ import annotations

import hmac
import statistics
import time
from collections.abc import Callable

from ...agent.factory import synthetic_pcs
from ...core.canonical import CORE_PATH, canonical_bytes
from ...core.signing import sign_hmac
from .common import median_rate

SUBSET = {
    "pcs_id": "c50bb25a7aff94164147b73c846f0e5e10890d75df204875ca70c448f52c6edf",
    "merkle_root": "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112",
    "epoch": 1,
    "shard_id": "shard-001",
    "D_hat": 1.234567891,
    "coh_star": 0.75,
    "r": 0.318421053,
    "budget": 0.35,
}
KEY = b"bench-key-0123456789abcdef"


def realistic_pcs() -> dict:
    """A whole PCS as an agent sends it (signals, optional ``seed`` and ``ft``): signing
    must pick the signed subset out of it."""
    return synthetic_pcs(SUBSET["merkle_root"], SUBSET["shard_id"], SUBSET["epoch"], seed=42, ft={"attempt": 1})


def _loop(n: int, fn, *args) -> Callable[[], int]:
    def run_n() -> int:
        for _ in range(n):
            fn(*args)
        return n

    return run_n


def _cpu_rate(fn: Callable[[], int]) -> float:
    t0 = time.process_time()
    done = fn()
    dt = time.process_time() - t0
    return done / dt if dt > 0 else float("inf")


def run(repeat: int = 5, quick: bool = False) -> dict:
    n = 20_000 if quick else 200_000
    payload = canonical_bytes(SUBSET)
    signs, bare = _loop(n, sign_hmac, SUBSET, KEY), _loop(n, hmac.digest, KEY, payload, "sha256")
    realistic = _loop(n, sign_hmac, realistic_pcs(), KEY)
    wall: dict[str, list[float]] = {"sign": [], "bare": []}
    cpu: dict[str, list[float]] = {"sign": [], "bare": [], "realistic": []}
    for _ in range(repeat):  # alternate, so load from other processes hits both alike
        wall["sign"] += median_rate(signs, 1)[1]
        wall["bare"] += median_rate(bare, 1)[1]
        for name, fn in (("sign", signs), ("bare", bare), ("realistic", realistic)):
            cpu[name].append(_cpu_rate(fn))
    sign_rate, bare_rate = statistics.median(wall["sign"]), statistics.median(wall["bare"])
    sign_cpu, bare_cpu = statistics.median(cpu["sign"]), statistics.median(cpu["bare"])
    return {
        "core_path": CORE_PATH,
        # per second of this process's CPU time: what one core does, less sensitive to other
        # processes on a shared machine than the wall-clock figures
        "canon_hmac_per_cpu_s": round(sign_cpu),
        "bare_hmac_digest_per_cpu_s": round(bare_cpu),
        "ratio_canon_to_bare_cpu": round(sign_cpu / bare_cpu, 4),
        "canon_hmac_realistic_pcs_per_cpu_s": round(statistics.median(cpu["realistic"])),
        "canon_hmac_per_s": round(sign_rate),
        "bare_hmac_digest_per_s": round(bare_rate),
        "ratio_canon_to_bare": round(sign_rate / bare_rate, 4),
        "payload_bytes": len(payload),
        "n_per_run": n,
        "repeat": repeat,
        "canon_hmac_runs": [round(r) for r in wall["sign"]],
        "bare_runs": [round(r) for r in wall["bare"]],
        "goal_canon_hmac_per_cpu_s": 200_000,
        "goal_ratio_canon_to_bare": 0.8,
    }
