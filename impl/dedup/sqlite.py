"""SQLite dedup store: the embedded default.

* WAL journal mode, ``busy_timeout`` so several processes can share one file;
  each thread gets its own connection (``sqlite3`` connections are not shared).
* ``put_if_absent`` is one ``BEGIN IMMEDIATE`` transaction holding an
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= now RETURNING``
  (insert, or replace only an *expired* row) followed, when nothing was
  written, by a read of the winner -- under the write lock, so the winner
  cannot change in between.
* ``synchronous=NORMAL``: a power loss may drop the last dedup transactions but
  never corrupts the file; the inbox WAL is the durable record and replay
  restores them (INV-IDEMPOTENT-REPLAY).
* ``put_many_if_absent`` runs a whole batch in one transaction (the batching
  driver's group commit), item by item in order.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time

from .base import (
    DEFAULT_TTL_S,
    SqlBatchMixin,
    StoredOutcome,
    StoreUnavailable,
    check_key,
    check_keys,
    check_ttl,
    decode_cursor,
    encode_cursor,
    sample_rank,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dedup (tenant TEXT NOT NULL, pcs_id TEXT NOT NULL, "
    "expires_at REAL NOT NULL, outcome BLOB NOT NULL, PRIMARY KEY (tenant, pcs_id))"
)
_UPSERT = (
    "INSERT INTO dedup (tenant, pcs_id, expires_at, outcome) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = excluded.expires_at, "
    "outcome = excluded.outcome WHERE dedup.expires_at <= ? RETURNING 1"
)
_CHUNK = 200  # rows per statement (4 parameters each, well under SQLite's limit)
_GET = "SELECT outcome FROM dedup WHERE tenant = ? AND pcs_id = ? AND expires_at > ?"


@functools.lru_cache(maxsize=_CHUNK)
def _select_many(n: int) -> str:
    """The live rows of ``n`` keys: a join on a VALUES list searches the primary key per key
    ("IN (VALUES ...)" would scan the whole table)."""
    return ("SELECT d.tenant, d.pcs_id, d.outcome FROM (VALUES " + ",".join(["(?, ?)"] * n)
            + ") AS k JOIN dedup AS d ON d.tenant = k.column1 AND d.pcs_id = k.column2 WHERE d.expires_at > ?")


@functools.lru_cache(maxsize=_CHUNK)
def _upsert_many(n: int) -> str:
    """The multi-row upsert of ``n`` rows; ``RETURNING`` names the rows written."""
    return ("INSERT INTO dedup (tenant, pcs_id, expires_at, outcome) VALUES " + ",".join(["(?, ?, ?, ?)"] * n)
            + " ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = excluded.expires_at, "
            "outcome = excluded.outcome WHERE dedup.expires_at <= ? RETURNING tenant, pcs_id")


class SqliteStore(SqlBatchMixin):
    kind = "sqlite"

    def __init__(self, path: str, ttl_s: float = DEFAULT_TTL_S, busy_timeout_ms: int = 10_000) -> None:
        self.path = str(path)
        self.ttl_s = check_ttl(ttl_s, DEFAULT_TTL_S)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._conn()  # create the file, schema and WAL mode now: fail early

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailable("sqlite store is closed")
        try:
            d = os.path.dirname(self.path)
            if d and not os.path.isdir(d):
                raise StoreUnavailable("sqlite store directory does not exist")
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            for attempt in range(50):  # journal_mode needs a brief exclusive lock
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.02)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
            conn.execute("PRAGMA mmap_size = 268435456")
            conn.execute(_SCHEMA)
            conn.create_function("flk_rank", 3, sample_rank, deterministic=True)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store unusable: {type(exc).__name__}") from None
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _run(self, fn):
        conn = self._conn()
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise StoreUnavailable(f"sqlite store failed: {type(exc).__name__}: {exc}") from None

    # -- contract ----------------------------------------------------------------------
    def get(self, tenant, pcs_id, now):
        check_key(tenant, pcs_id)
        row = self._run(lambda c: c.execute(_GET, (tenant, pcs_id, now)).fetchone())
        return None if row is None else StoredOutcome.from_bytes(row[0])


    @staticmethod
    def _select(c, keys, now) -> dict:
        if not keys:
            return {}
        sql = _select_many(len(keys))
        params: list = []
        for t, p in keys:
            params += (t, p)
        params.append(now)
        return {(t, p): StoredOutcome.from_bytes(o) for t, p, o in c.execute(sql, params)}

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.put_many_if_absent([(tenant, pcs_id, outcome)], now, ttl_s)[0]

    def put_many_if_absent(self, items, now, ttl_s=None):
        """One ``BEGIN IMMEDIATE`` transaction for the whole batch: a multi-row
        upsert per chunk (rows are applied in order, so of several items with one
        key only the first can win) whose ``RETURNING`` names the winners, then
        one read of the stored outcome for every loser."""
        ttl = check_ttl(ttl_s, self.ttl_s)
        check_keys(items)
        if not items:
            return []

        expires_at = now + ttl

        def fn(c):
            c.execute("BEGIN IMMEDIATE")
            won: set = set()
            for i in range(0, len(items), _CHUNK):
                chunk = items[i:i + _CHUNK]
                params: list = []
                for t, p, o in chunk:
                    params += (t, p, expires_at, o.to_bytes())
                params.append(now)
                won.update(c.execute(_upsert_many(len(chunk)), params))
            if len(won) == len(items):  # every key distinct and written: no loser to read back
                c.execute("COMMIT")
                return [(True, o) for _, _, o in items]
            out, losers, first = [], [], set()
            for t, p, o in items:
                k = (t, p)
                if k in won and k not in first:
                    first.add(k)
                    out.append((True, o))
                else:
                    first.add(k)
                    out.append(None)
                    losers.append(k)
            stored = self._select(c, list(dict.fromkeys(losers)), now) if losers else {}
            c.execute("COMMIT")
            res = []
            for (t, p, _), r in zip(items, out, strict=True):
                if r is None:
                    w = stored.get((t, p))
                    if w is None:  # impossible under the write lock; fail closed rather than guess
                        raise sqlite3.OperationalError("conflicting row vanished")
                    r = (False, w)
                res.append(r)
            return res

        return self._run(fn)

    def count(self, now):
        return self._run(lambda c: c.execute("SELECT count(*) FROM dedup WHERE expires_at > ?", (now,)).fetchone()[0])

    def scan(self, cursor, limit, now):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = decode_cursor(cursor) if cursor is not None else ("", "")
        sql = (
            "SELECT tenant, pcs_id, outcome FROM dedup WHERE expires_at > ? AND (tenant, pcs_id) > (?, ?) "
            "ORDER BY tenant, pcs_id LIMIT ?"
        )
        rows = self._run(lambda c: c.execute(sql, (now, after[0], after[1], limit + 1)).fetchall())
        page = [(t, p, StoredOutcome.from_bytes(o)) for t, p, o in rows[:limit]]
        nxt = encode_cursor(page[-1][0], page[-1][1]) if len(rows) > limit else None
        return page, nxt

    def sample(self, n, seed, now):
        if n < 0:
            raise ValueError("n must be >= 0")
        sql = (
            "SELECT tenant, pcs_id, outcome FROM dedup WHERE expires_at > ? "
            "ORDER BY flk_rank(?, tenant, pcs_id), tenant, pcs_id LIMIT ?"
        )
        rows = self._run(lambda c: c.execute(sql, (now, int(seed), n)).fetchall())
        return [(t, p, StoredOutcome.from_bytes(o)) for t, p, o in rows]

    def ping(self):
        try:
            self._run(lambda c: c.execute("SELECT 1").fetchone())
            return True
        except StoreUnavailable:
            return False

    def make_durable(self) -> bool:
        """Every committed outcome on disk (``synchronous=NORMAL`` syncs only at a WAL
        checkpoint): a full checkpoint, fsynced. True when done."""
        self._run(lambda c: c.execute("PRAGMA wal_checkpoint(FULL)").fetchone())
        return True

    def close(self):
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
