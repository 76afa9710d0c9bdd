"""First-write-wins dedup stores behind one contract (see :mod:`flk.impl.dedup.base`).

Modules:

* :mod:`.base`      -- the contract: ``StoredOutcome``, ``DedupStore``, ``StoreUnavailable``, key and TTL checks
* :mod:`.memory`    -- the in-memory reference backend
* :mod:`.sqlite`    -- SQLite (the embedded default, WAL mode; a file's layout ``keyed`` or ``log``); its batch
  rows' pure references ``SqlRows`` and ``LogRows`` (with ``PyLogIndex``)
* ``_fastsqlite.c``  -- the optional C extension ``flk.impl.dedup._fastsqlite``: the SQLite batch rows compiled
* :mod:`.redis`     -- Redis (``SET NX PX`` in a Lua script)
* :mod:`.postgres`  -- PostgreSQL (``INSERT ... ON CONFLICT ... RETURNING``)
* :mod:`.sharded`   -- the consistent-hash ring and ``ShardedStore`` (SPEC 13)
* :mod:`.tiered`    -- hot / warm / cold tiers (``TieredStore``)
* :mod:`.migrate`   -- zero-downtime shard migration (``DualWriteStore``, the state file)

``open_store(url_or_kind, **opts)`` picks a backend:

* ``"memory"`` / ``"memory://"``
* ``"sqlite:///path/to/file.db"`` or ``"sqlite"`` with ``path=...``
* ``"redis://host:port/db"`` (``prefix=``, ``ttl_s=``)
* ``"postgresql://..."`` / ``"postgres://..."`` (``table=``, ``ttl_s=``, pool sizes)
"""

from __future__ import annotations

from .base import (
    DEFAULT_TTL_S,
    DedupStore,
    Entry,
    PartialUnavailable,
    StoredOutcome,
    StoreUnavailable,
    answered_part,
    iter_entries,
    sample_entries,
    sample_rank,
)

__all__ = [
    "DEFAULT_TTL_S",
    "DedupStore",
    "Entry",
    "PartialUnavailable",
    "StoreUnavailable",
    "answered_part",
    "StoredOutcome",
    "iter_entries",
    "open_store",
    "sample_entries",
    "sample_rank",
    "sqlite_path",
]


def sqlite_path(url: str) -> str | None:
    """The file a ``sqlite://`` URL names, as :func:`open_store` opens it (None: no path):
    ``sqlite:////abs/path`` -> ``/abs/path``, ``sqlite:///rel/path`` and ``sqlite://rel/path``
    -> ``rel/path``."""
    path = url[len("sqlite://"):] if url.startswith("sqlite://") else ""
    if path.startswith("//"):
        return path[1:]
    if path.startswith("/"):
        return path[1:] or None
    return path or None


def open_store(url_or_kind: str, **opts) -> DedupStore:
    spec = str(url_or_kind)
    if spec in ("memory", "memory://"):
        from .memory import MemoryStore

        return MemoryStore(**opts)
    if spec == "sqlite" or spec.startswith("sqlite://"):
        from .sqlite import SqliteStore

        path = opts.pop("path", None)
        if spec.startswith("sqlite://"):
            path = sqlite_path(spec)
        if not path:
            raise ValueError("sqlite store needs a path (sqlite:///file.db or path=...)")
        return SqliteStore(path, **opts)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisStore

        return RedisStore(spec, **opts)
    if spec.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(spec, **opts)
    raise ValueError(f"unknown dedup store {spec.split(':', 1)[0]!r}: expected memory, sqlite, redis or postgres")
