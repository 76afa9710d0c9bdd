"""The dedup contract on all four backends (real Redis and Postgres from scripts/services.sh)."""

from __future__ import annotations

import os
import uuid

import pytest

from dedup.contract import DedupContract, StoreSpec, open_by_url, redis_cleanup


@pytest.fixture(params=["memory", "sqlite", "sqlite-keyed", "redis", "postgres"])
def store_spec(request, tmp_path, slow_machine_s):
    run = f"{os.getpid()}_{uuid.uuid4().hex[:10]}"
    kind = request.param
    if kind == "memory":
        spec = StoreSpec("memory", open_by_url, ("memory", {}), cross_process=False)
        yield spec
        spec.close_all()
    elif kind == "sqlite":
        # the default layout, log: one row per key in write order (scan pages in that order), an index in
        # memory per store
        spec = StoreSpec("sqlite", open_by_url, (f"sqlite:///{tmp_path}/dedup.db", {}), ordered_scan=False)
        yield spec
        spec.close_all()
    elif kind == "sqlite-keyed":  # the key index on disk
        spec = StoreSpec("sqlite-keyed", open_by_url, (f"sqlite:///{tmp_path}/dedup.db", {"layout": "keyed"}))
        yield spec
        spec.close_all()
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"flktest:{run}:"
        spec = StoreSpec("redis", open_by_url, (url, {"prefix": prefix, "timeout_s": slow_machine_s}), ordered_scan=False)
        yield spec
        spec.close_all()
        redis_cleanup(url, prefix)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        table = f"flktest_{run}"
        spec = StoreSpec("postgres", open_by_url, (dsn, {"table": table, "max_size": 4, "timeout_s": slow_machine_s}))
        yield spec
        spec.open().drop_table()
        spec.close_all()


class TestDedupContract(DedupContract):
    pass
