"""Signed PCS request bodies in bulk, for the benchmark and the server tests.

Why this module exists: a throughput or crash run needs thousands of
*distinct*, validly signed PCS -- otherwise every request after the first is a
dedup hit and the run measures a cache. Building each from an event stream
(numpy signals) is slow, so one template is built with
:func:`flk.impl.agent.builder.build_pcs_from_stream` and copies differ only in
``epoch``, with ``pcs_id`` recomputed (INV-PCSID) and the signature redone over
the new canonical bytes. Seeded: the same ``(key, n, seed)`` gives the same
bodies.
"""

from __future__ import annotations

import json
import random

from ..agent import factory


def template(key: bytes, shard_id: str = "bench", seed: int = 0) -> dict:
    from ..agent import builder as agent

    rng = random.Random(seed)
    rows = "\n".join(f"{rng.random():.6f},{rng.random():.6f}" for _ in range(64)).encode()
    signer = agent.Signer("hmac", key)
    return agent.build_pcs_from_stream(rows, "csv", shard_id, 0, signer, seed=0)


def variant(base: dict, key: bytes, epoch: int) -> dict:
    return factory.with_identity(base, key, epoch=epoch)


def bodies(key: bytes, n: int, seed: int = 0, shard_id: str = "bench", first_epoch: int = 1) -> list[bytes]:
    """``n`` distinct signed PCS bodies (compact JSON)."""
    base = template(key, shard_id, seed)
    return [json.dumps(variant(base, key, first_epoch + i), separators=(",", ":")).encode() for i in range(n)]
