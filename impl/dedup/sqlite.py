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
* The batch rows (``get_many``, ``put_many_if_absent``: the verify pipeline's steps 5
  and 7) go through a *rows* object per thread: the compiled
  ``flk.impl.dedup._fastsqlite.Rows`` (its own connection on the same file and pragmas,
  the SQL below prepared once, each row bound in C, the stored outcome's bytes written
  in C, the SQLite work done without the GIL, a transaction's WAL frames written in one
  call at its commit by the ``flk-walbuf`` VFS of ``_walbuf.h``), or its pure reference :class:`SqlRows`
  over this module's ``sqlite3`` connection. Which one is chosen once, when the store
  is made (entry ``open_rows`` of :mod:`flk.impl.core.accel`; ``FLK_PURE=1`` or an
  install without ``sqlite3.h`` means the reference). Both write the same rows: a file
  written by one is read by the other (tests/dedup/test_sqlite_rows_differential.py).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sqlite3
import threading
import time

from ..core import accel, textdata
from ..storage.threads import NamedThread
from .base import (
    _GOOD_TENANTS,
    DEFAULT_TTL_S,
    BatchMixin,
    StoredOutcome,
    StoreUnavailable,
    _tail,
    check_key,
    check_keys,
    check_ttl,
    decode_cursor,
    encode_cursor,
    float_repr,
    sample_rank,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dedup (tenant TEXT NOT NULL, pcs_id TEXT NOT NULL, "
    "expires_at REAL NOT NULL, outcome BLOB NOT NULL, PRIMARY KEY (tenant, pcs_id))"
)
# each connection's page cache, KiB. Not larger: every commit whose B-tree split reordered pages
# (SQLite moves a page through the number past the 1 GiB lock byte, PENDING_BYTE/page_size + 1)
# and every reset after another connection's commit walk the whole hash table of the cache
# (pcache1TruncateUnsafe), which grows with the pages the cache ever held and never shrinks:
# a 64 MiB cache cost 27 us CPU per row at batches of 14 fresh rows (200k rows; 8 MiB: 18.4,
# 4 MiB: 18.4, 2 MiB: 18.5) and 15.2 at batches of 512 (8 MiB: 14.6, 2 MiB: 16.1), medians of 3
# interleaved runs; flk serve WORKERS=1, 32 connections: 8,381 vs 7,636 req/s (median of 4
# interleaved rounds, faster in 3); 2 workers unchanged (each one's commits reset the other's cache)
CACHE_KIB = 8192
# every connection's settings after busy_timeout and WAL mode (the compiled rows' connection too)
_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    f"PRAGMA cache_size = -{CACHE_KIB}",
    # no memory map of the file: the workers of one server share it, and every checkpoint that
    # grows it makes the other connections unmap and remap it and fault its pages in again
    # (perf: munmap and page-fault work in the kernel). Two processes writing batches of 13
    # fresh rows to one file: 37-39 -> 29-31 us CPU per row (get_many + put, median of pairs);
    # one process alone: 20-21 us either way (its page cache keeps what it reads).
    "PRAGMA mmap_size = 0",
)
# a new file's page size (set before its first write; an existing file keeps the size it has): a
# fresh key dirties one page of the key index, which the SQLite WAL and then the checkpoint write
# whole, and every inbox WAL fsync on the same disk waits behind those writes. flk serve, 2 workers,
# 32 connections, every body fresh, interleaved rounds against 4096: ratio to bare Starlette
# median 0.693 vs 0.661 (4 rounds) and 0.735 vs 0.713 (5 rounds), faster in 7 of 9, the sync stage
# 320-340 vs 350-370 us, p99 6.4-9.4 vs 5.8-6.9 ms; 1024 no better than 4096 (p99 9-13 ms);
# flk bench verify (batches of 512) unchanged (57.0k/57.6k vs 57.8k/57.6k PCS/s).
NEW_FILE_PAGE_SIZE = 2048
# checkpoint="inline": a checkpoint per 4000 WAL pages (16 MiB of 4 KiB pages) instead of SQLite's 1000, run by
# the connection whose commit crossed it: with synchronous=NORMAL every checkpoint is two fsyncs
# (WAL, then file) on the writing thread; a batch of 512 random keys dirties some 400 pages, so at
# 1000 every third batch paid them (flk bench verify, SQLite wall PCS/s: median 17.0k -> 22.0k,
# same CPU). Durability is unchanged (make_durable, replay).
INLINE_AUTOCHECKPOINT = 4000
# checkpoint="background": the store's own thread checkpoints (see _Checkpointer); the serving
# connections keep SQLite's automatic checkpoint only as a backstop, should that thread fall behind
BACKSTOP_AUTOCHECKPOINT = 40_000
RESTART_WAIT_MS = 100  # longest the background restart checkpoint holds new writers back
# checkpoint="background": a checkpoint after every this many rows the process wrote. Each
# checkpoint fsyncs the log it folds (and then the file): the SQLite log a thousand fresh rows
# leave (some 1,500 pages, 6 MiB: a random key dirties a page of the key index) took 16-44 ms to
# fsync on a 2-core VM's disk, and the inbox WAL's fsyncs on the same disk waited behind it --
# the submissions' p99. 2 workers, 32 connections, every body fresh, 4 interleaved rounds:
# p99 28.5-35.6 ms at 1000 rows, 17.9-20.1 ms at 200 (one round 89.5), 16.6-19.3 ms at 100,
# 18.8-23.6 ms at 400, 75-95 ms at 5000; req/s within the rounds' noise. Again with the
# restart's file sync moved out of the write lock (_Checkpointer.flush), 5-second turns, 4
# rounds: p99 5.3-14.1 ms at 200, 9.6-32.9 at 1000, 10.7-31.5 at 3000; CPU per request 65.5,
# 63.9, 61.7 us, req/s within the noise. flk serve: SQLITE_CHECKPOINT_ROWS.
DEFAULT_CHECKPOINT_ROWS = 200
# one row's put-if-absent: insert, or replace only an expired row; parameters
# (tenant, pcs_id, expires_at, outcome, now); the row was written when it changed one row
_UPSERT_ONE = (
    "INSERT INTO dedup (tenant, pcs_id, expires_at, outcome) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = excluded.expires_at, "
    "outcome = excluded.outcome WHERE dedup.expires_at <= ?"
)
_CHUNK = 200  # rows per statement (4 parameters each, well under SQLite's limit)
_GET = "SELECT outcome FROM dedup WHERE tenant = ? AND pcs_id = ? AND expires_at > ?"

# the compiled rows (None: the pure reference, SqlRows); chosen when a store is made
_ROWS_EXTENSION = "flk.impl.dedup._fastsqlite"
OPEN_ROWS = accel.register("open_rows", _ROWS_EXTENSION, "flk.impl.dedup.sqlite:SqlRows",
                           "tests/dedup/test_sqlite_rows_differential.py::test_compiled_rows_answer_as_the_reference")
_compiled_open_rows = accel.bind(OPEN_ROWS, globals(), "_compiled_open_rows")
_fast = accel.extension(_ROWS_EXTENSION)
_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,) if _fast is None else (sqlite3.Error, _fast.Error)


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


def fresh_mid(status: int, first_seen: float, region: str, policy_version: str) -> bytes | None:
    """The bytes between a fresh row's digest and its body: ``StoredOutcome(digest, status, body,
    first_seen, region, policy_version).to_bytes()`` is ``b'["' + digest + mid + body`` for a
    digest of ASCII letters and digits (None: ``first_seen`` is not a finite float)."""
    if type(status) is not int or type(first_seen) is not float or not math.isfinite(first_seen):
        return None
    return b'",%d,%s,%s\n' % (status, float_repr(first_seen).encode(), _tail(region, policy_version))


def outcome_bytes(items, mid: bytes | None) -> list | None:
    """The stored bytes of each item of a batch: a *fresh* row ``(tenant, pcs_id, digest, body)``
    as ``b'["' + digest + mid + body`` (see :func:`fresh_mid`), any other its outcome's
    ``to_bytes()``; None when a fresh row is not of the common form (a digest not of ASCII
    letters and digits, or a body not bytes: the store builds the outcomes)."""
    raw: list = []
    for item in items:
        if len(item) == 4:
            d, body = item[2], item[3]
            if type(d) is not str or not (d.isascii() and d.isalnum()) or type(body) is not bytes:
                return None
            raw.append(b'["' + d.encode() + mid + body)
        else:
            raw.append(item[2].to_bytes())
    return raw


class SqlRows:
    """The batch rows over a Python ``sqlite3`` connection: the pure reference of the
    compiled ``_fastsqlite.Rows`` (same methods, same answers, same rows on disk).

    * ``get_many(keys, now, good=None)``: the stored outcome bytes of each key's live row,
      or None, in key order (one ``SELECT`` per chunk of distinct keys);
    * ``put_many(items, now, expires_at, good=None)``: one ``BEGIN IMMEDIATE`` transaction for the
      whole batch, item by item in order (a multi-row upsert per chunk whose
      ``RETURNING`` names the rows written; of several items with one key the first
      ``k`` win, ``k`` the times that key was written -- one, or every item when
      ``expires_at <= now`` makes each write expire at once); ``(True, outcome)`` for a
      written item, ``(False, the stored winner's bytes)`` for the others, read under
      the write lock.

    * ``put_many(items, now, expires_at, good, mid)`` with ``mid`` (bytes, see
      :func:`fresh_mid`): an item may also be a *fresh* row ``(tenant, pcs_id, digest, body)``
      -- the verifier's common 200 outcome, no :class:`StoredOutcome` built -- written as
      ``b'["' + digest + mid + body`` (``StoredOutcome(digest, *fresh, body).to_bytes()``
      when ``digest`` is ASCII letters and digits; any other digest answers None: the
      store builds the outcomes); the answers are then None (written) or the winner's bytes.

    ``good`` (the set of tenants known to pass the tenant-id rule, or None: the keys were
    checked): the keys are checked first (:func:`check_keys`: ValueError). The compiled
    rows check the common case in C and answer None for a key they do not pass; the
    store then runs :func:`check_keys` and calls again with None.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get_many(self, keys, now, good=None) -> list:
        if good is not None:
            check_keys(keys)
        found: dict = {}
        uniq = list(dict.fromkeys((t, p) for t, p in keys))
        for i in range(0, len(uniq), _CHUNK):
            found.update(self._select(uniq[i:i + _CHUNK], now))
        return [found.get((t, p)) for t, p in keys]

    def _select(self, keys, now) -> dict:
        params: list = []
        for t, p in keys:
            params += (t, p)
        params.append(now)
        return {(t, p): o for t, p, o in self.conn.execute(_select_many(len(keys)), params)}

    def put_many(self, items, now, expires_at, good=None, mid=None) -> list | None:
        if mid is not None and (raw := outcome_bytes(items, mid)) is None:
            return None  # not the common form: the store builds the outcomes
        if good is not None:
            check_keys(items)
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        written: dict = {}  # key -> rows written
        for i in range(0, len(items), _CHUNK):
            chunk = items[i:i + _CHUNK]
            params: list = []
            for j, item in enumerate(chunk, i):
                params += (item[0], item[1], expires_at, item[2].to_bytes() if mid is None else raw[j])
            params.append(now)
            for k in c.execute(_upsert_many(len(chunk)), params):
                written[k] = written.get(k, 0) + 1
        if len(written) == len(items):  # every key distinct and written: no loser to read back
            c.execute("COMMIT")
            return [None] * len(items) if mid is not None else [(True, item[2]) for item in items]
        out: list = []
        losers = []
        for item in items:
            k = (item[0], item[1])
            left = written.get(k, 0)
            if left:
                written[k] = left - 1
                out.append(None if mid is not None else (True, item[2]))
            else:
                out.append(False)
                losers.append(k)
        stored = self._select(list(dict.fromkeys(losers)), now) if losers else {}
        c.execute("COMMIT")
        for j, (item, r) in enumerate(zip(items, out, strict=True)):
            if r is False:
                w = stored.get((item[0], item[1]))
                if w is None:  # impossible under the write lock; fail closed rather than guess
                    raise sqlite3.OperationalError("conflicting row vanished")
                out[j] = w if mid is not None else (False, w)
        return out

    def close(self) -> None:
        """The connection belongs to the store (it closes it)."""


# -- the log layout ----------------------------------------------------------------------
# layout="log": one row per key in an append-only table (seqs in write order, never used twice),
# so a batch's fresh rows fill the table's last pages instead of one random page of a key index
# per key (flk bench serve: disk KiB per request ~10 -> ~3); each store object (each flk serve
# worker) finds a key's row through an index in memory, caught up from the table inside every
# call's transaction (LOG_SINCE), so first-write-wins rests on SQLite's write lock as in the
# keyed layout. The compiled rows (_fastsqlite: open_log_rows, LogIndex: a hash table of key
# hash -> seq, ~32-64 bytes a row) or the pure reference below (LogRows over PyLogIndex).
_LOG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dedup_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, "
    "pcs_id TEXT NOT NULL, expires_at REAL NOT NULL, outcome BLOB NOT NULL)"
)
LAYOUTS = ("keyed", "log")
DEFAULT_LAYOUT = "log"  # a new file's (flk serve: SQLITE_LAYOUT)
LOG_SINCE = "SELECT seq, tenant, pcs_id FROM dedup_log WHERE seq > ? ORDER BY seq"
LOG_ROW = "SELECT tenant, pcs_id, expires_at, outcome FROM dedup_log WHERE seq = ?"
LOG_INSERT = "INSERT INTO dedup_log (seq, tenant, pcs_id, expires_at, outcome) VALUES (?, ?, ?, ?, ?)"
LOG_UPDATE = "UPDATE dedup_log SET expires_at = ?, outcome = ? WHERE seq = ?"
# the largest seq ever used (AUTOINCREMENT keeps it past a deleted last row: a seq used again
# would sit at or below another index's ``last`` and never be read by it)
LOG_SEQMAX = "SELECT seq FROM sqlite_sequence WHERE name = 'dedup_log'"
_LOG_SQL = (LOG_SINCE, LOG_ROW, LOG_INSERT, LOG_UPDATE, LOG_SEQMAX)

OPEN_LOG_ROWS = accel.register("open_log_rows", _ROWS_EXTENSION, "flk.impl.dedup.sqlite:LogRows",
                               "tests/dedup/test_sqlite_log_layout.py::test_compiled_log_rows_answer_as_the_reference")
_compiled_open_log_rows = accel.bind(OPEN_LOG_ROWS, globals(), "_compiled_open_log_rows")


class PyLogIndex:
    """The pure index of a log file (the compiled one is ``_fastsqlite.LogIndex``, same methods):
    ``(tenant, pcs_id)`` -> the seq of its row, complete up to ``last``; a store's threads share
    it between :meth:`lock` and :meth:`unlock`."""

    __slots__ = ("_map", "last", "_lock")

    def __init__(self) -> None:
        self._map: dict = {}
        self.last = 0
        self._lock = threading.Lock()

    def lock(self) -> None:
        self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    def add(self, tenant: str, pcs_id: str, seq: int) -> None:
        self._map[(tenant, pcs_id)] = seq  # a key has one row: a newer seq means the old row is gone

    def remove(self, tenant: str, pcs_id: str, seq: int) -> None:
        if self._map.get((tenant, pcs_id)) == seq:
            del self._map[(tenant, pcs_id)]

    def candidates(self, tenant: str, pcs_id: str) -> list:
        s = self._map.get((tenant, pcs_id))
        return [] if s is None else [s]

    def __len__(self) -> int:
        return len(self._map)


@contextlib.contextmanager
def log_held(conn, index, write: bool):
    """A transaction on a log file (``write``: ``BEGIN IMMEDIATE``, under SQLite's write lock)
    with ``index`` held and caught up in it; the block ends with its COMMIT (a failure leaves
    the rollback to the store's ``_run``), and the index is given back either way."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    index.lock()
    try:
        log_catch_up(conn, index)
        yield
    finally:
        index.unlock()


def log_catch_up(conn, index) -> None:
    """File every row committed since ``index.last`` (index held, a transaction open on ``conn``)."""
    last = index.last
    for s, t, p in conn.execute(LOG_SINCE, (last,)):
        index.add(t, p, s)
        last = s
    index.last = last


def log_stored(conn, index, keys) -> dict:
    """The stored row, live or expired, of each key that has one: key -> (seq, expires_at, outcome)
    (index held and caught up); the index forgets rows that are gone."""
    out: dict = {}
    for k in keys:
        for s in index.candidates(*k):
            row = conn.execute(LOG_ROW, (s,)).fetchone()
            if row is None:
                index.remove(k[0], k[1], s)
            elif (row[0], row[1]) == k:
                out[k] = (s, row[2], row[3])
                break
    return out


class LogRows:
    """The batch rows of a log file over a Python ``sqlite3`` connection: the pure reference of
    the compiled log rows (``_fastsqlite.open_log_rows``), with :class:`SqlRows`' methods and answers."""

    __slots__ = ("conn", "index")

    def __init__(self, conn: sqlite3.Connection, index) -> None:
        self.conn = conn
        self.index = index

    def get_many(self, keys, now, good=None) -> list:
        if good is not None:
            check_keys(keys)
        c, index = self.conn, self.index
        with log_held(c, index, write=False):
            rows = log_stored(c, index, list(dict.fromkeys((t, p) for t, p in keys)))
            c.execute("COMMIT")
        out = []
        for t, p in keys:
            r = rows.get((t, p))
            out.append(r[2] if r is not None and r[1] > now else None)
        return out

    def put_many(self, items, now, expires_at, good=None, mid=None) -> list | None:
        if (raw := outcome_bytes(items, mid)) is None:
            return None  # not the common form: the store builds the outcomes
        if good is not None:
            check_keys(items)
        c, index = self.conn, self.index
        keys = [(item[0], item[1]) for item in items]
        with log_held(c, index, write=True):
            state = log_stored(c, index, list(dict.fromkeys(keys)))  # key -> (seq, expires_at, outcome)
            row = c.execute(LOG_SEQMAX).fetchone()
            top = max(index.last, row[0] if row else 0)
            action: dict = {}  # key -> "insert" | "update": what this call writes (the key's final state)
            won = []
            for k, ob in zip(keys, raw, strict=True):
                cur = state.get(k)
                if cur is not None and cur[1] > now:
                    won.append(False)
                    continue
                won.append(True)
                if cur is None:
                    top += 1
                    state[k] = (top, expires_at, ob)
                    action[k] = "insert"
                else:
                    state[k] = (cur[0], expires_at, ob)
                    action.setdefault(k, "update")
            for k, what in action.items():
                s, e, o = state[k]
                if what == "insert":
                    c.execute(LOG_INSERT, (s, k[0], k[1], e, o))
                else:
                    c.execute(LOG_UPDATE, (e, o, s))
            out: list = []
            for k, w, item in zip(keys, won, items, strict=True):
                if w:
                    out.append(None if mid is not None else (True, item[2]))
                    continue
                got = state[k]
                if got[1] <= now:  # impossible under the write lock; fail closed rather than guess
                    raise sqlite3.OperationalError("conflicting row vanished")
                out.append(got[2] if mid is not None else (False, got[2]))
            c.execute("COMMIT")
            for k, what in action.items():
                if what == "insert":
                    index.add(k[0], k[1], state[k][0])
            index.last = max(index.last, top)
        return out

    def close(self) -> None:
        """The connection belongs to the store (it closes it)."""


class SqliteStore(BatchMixin):
    kind = "sqlite"

    def __init__(self, path: str, ttl_s: float = DEFAULT_TTL_S, busy_timeout_ms: int = 10_000,
                 checkpoint: str = "inline", checkpoint_rows: int = DEFAULT_CHECKPOINT_ROWS,
                 layout: str = DEFAULT_LAYOUT) -> None:
        """``checkpoint``: who folds the SQLite WAL into the file -- ``inline`` (SQLite's
        automatic checkpoint, every ``INLINE_AUTOCHECKPOINT`` pages, on the thread whose commit
        crossed it) or ``background`` (:class:`_Checkpointer`: a thread of this store, after
        every ``checkpoint_rows`` rows this process wrote; ``flk serve`` uses it, so no batch
        waits behind a checkpoint's page copies and fsyncs)."""
        if checkpoint not in ("inline", "background"):
            raise ValueError("checkpoint must be 'inline' or 'background'")
        if checkpoint_rows < 1:
            raise ValueError("checkpoint_rows must be >= 1")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        self.layout = layout  # a new file's; an existing file keeps its own (_conn)
        self._open_log_rows = _compiled_open_log_rows  # as _open_rows, for a log file
        self._index = PyLogIndex() if self._open_log_rows is None else _fast.LogIndex()
        self.path = str(path)
        self.ttl_s = check_ttl(ttl_s, DEFAULT_TTL_S)
        self.busy_timeout_ms = int(busy_timeout_ms)
        auto = INLINE_AUTOCHECKPOINT if checkpoint == "inline" else BACKSTOP_AUTOCHECKPOINT
        self._pragmas = (*_PRAGMAS, f"PRAGMA wal_autocheckpoint = {auto}")
        self._local = threading.local()
        self._all: list = []  # every thread's connection and rows object (closed by close())
        self._lock = threading.Lock()
        self._closed = False
        self._open_rows = _compiled_open_rows  # the compiled rows, or None: SqlRows (chosen once)
        self._conn()  # create the file, schema and WAL mode now: fail early
        self._checkpointer = (_Checkpointer(self.path, self.busy_timeout_ms, checkpoint_rows)
                              if checkpoint == "background" else None)

    @property
    def rows_path(self) -> str:
        """``compiled`` when this store's batch rows are the C ones, else ``pure``."""
        return "pure" if self._compiled_opener() is None else "compiled"

    def _compiled_opener(self):
        """The compiled rows' opener of this file's layout (None: the pure rows)."""
        return self._open_log_rows if self.layout == "log" else self._open_rows

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
                # the path is not named (this message reaches logs); how a URL names it is
                raise StoreUnavailable("sqlite store directory does not exist (sqlite:///PATH is relative to the "
                                       "working folder, sqlite:////PATH absolute)")
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute(f"PRAGMA page_size = {NEW_FILE_PAGE_SIZE}")  # a new file's (an existing one keeps its own)
            for attempt in range(50):  # journal_mode needs a brief exclusive lock
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.02)
            for pragma in self._pragmas:
                conn.execute(pragma)
            have = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('dedup', 'dedup_log')")}
            if have:
                self.layout = "log" if "dedup_log" in have else "keyed"  # a file keeps the layout it has
            conn.execute(_LOG_SCHEMA if self.layout == "log" else _SCHEMA)
            conn.create_function("flk_rank", 3, sample_rank, deterministic=True)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store unusable: {type(exc).__name__}") from None
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _rows(self):
        """This thread's rows object (after its connection: the file, schema and WAL mode exist)."""
        rows = getattr(self._local, "rows", None)
        if rows is not None:
            return rows
        conn = self._conn()
        log = self.layout == "log"
        if self._compiled_opener() is None:
            rows = LogRows(conn, self._index) if log else SqlRows(conn)
        else:
            try:
                setup = "; ".join(self._pragmas)
                rows = (self._open_log_rows(self.path, self.busy_timeout_ms, setup, _LOG_SQL, self._index,
                                            StoredOutcome) if log else
                        self._open_rows(self.path, self.busy_timeout_ms, setup, _UPSERT_ONE, _GET, StoredOutcome))
            except _ERRORS as exc:
                raise StoreUnavailable(f"sqlite store unusable: {exc}") from None
            with self._lock:
                self._all.append(rows)
        self._local.rows = rows
        return rows

    def _run(self, fn, rows: bool = False):
        """``fn(conn)`` (or ``fn(rows)``): a SQLite error is :class:`StoreUnavailable`; any
        failure rolls back the transaction it left open."""
        conn = self._conn()
        try:
            return fn(self._rows() if rows else conn)
        except _ERRORS as exc:
            self._rollback(conn)
            raise StoreUnavailable(f"sqlite store failed: {type(exc).__name__}: {exc}") from None
        except BaseException:
            self._rollback(conn)
            raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # -- contract ----------------------------------------------------------------------
    def get(self, tenant, pcs_id, now):
        check_key(tenant, pcs_id)
        if self.layout == "log":
            return self.get_many([(tenant, pcs_id)], now)[0]
        row = self._run(lambda c: c.execute(_GET, (tenant, pcs_id, now)).fetchone())
        return None if row is None else StoredOutcome.from_bytes(row[0])

    def get_many(self, keys, now):
        """The live outcome of each key (None: absent), in key order: one read of the batch."""
        if not keys:
            return []
        raw = self._run(lambda rows: rows.get_many(keys, now, _GOOD_TENANTS), rows=True)
        if raw is None:  # a key the compiled check did not pass: the reference check decides
            check_keys(keys)
            raw = self._run(lambda rows: rows.get_many(keys, now, None), rows=True)
        if raw.count(None) == len(raw):  # nothing found (the common case)
            return raw
        from_bytes = StoredOutcome.from_bytes
        return [None if r is None else from_bytes(r) for r in raw]

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.put_many_if_absent([(tenant, pcs_id, outcome)], now, ttl_s)[0]

    def put_many_if_absent(self, items, now, ttl_s=None):
        """One ``BEGIN IMMEDIATE`` transaction for the whole batch, item by item in order
        (of several items with one key only the first can win), the stored outcome of
        every loser read under the write lock (see :class:`SqlRows`)."""
        ttl = check_ttl(ttl_s, self.ttl_s)
        if not items:
            return []
        expires_at = now + ttl
        res = self._run(lambda rows: rows.put_many(items, now, expires_at, _GOOD_TENANTS), rows=True)
        if res is None:  # as in get_many
            check_keys(items)
            res = self._run(lambda rows: rows.put_many(items, now, expires_at, None), rows=True)
        self._wrote(len(items))
        for k, (won, got) in enumerate(res):
            if not won:
                res[k] = (False, StoredOutcome.from_bytes(got))
        return res

    def put_many_fresh_if_absent(self, items, fresh, now, ttl_s=None):
        """:meth:`put_many_if_absent` of items that are ``(tenant, pcs_id, outcome)`` or *fresh*
        ``(tenant, pcs_id, digest, body)`` -- ``StoredOutcome(digest, *fresh[:1], body, *fresh[1:])``
        with ``fresh = (status, first_seen, region, policy_version)`` shared by the batch,
        written without building it (the verifier's common 200 outcome; the compiled rows
        write its bytes in C). Answers None for a written item, else the winner's
        :class:`StoredOutcome`; the same rows and answers as :meth:`put_many_if_absent` of
        the built outcomes (tests/dedup/test_sqlite_rows_differential.py)."""
        ttl = check_ttl(ttl_s, self.ttl_s)
        if not items:
            return []
        expires_at = now + ttl
        mid = fresh_mid(*fresh)
        res = None
        if mid is not None:
            res = self._run(lambda rows: rows.put_many(items, now, expires_at, _GOOD_TENANTS, mid), rows=True)
            if res is None:  # a key the compiled check did not pass, or a digest not of the common form
                check_keys(items)
                res = self._run(lambda rows: rows.put_many(items, now, expires_at, None, mid), rows=True)
        if res is None:  # the outcomes built (a digest or first_seen not of the common form)
            status, first_seen, region, version = fresh
            built = [(t[0], t[1], StoredOutcome(t[2], status, t[3], first_seen, region, version)) if len(t) == 4
                     else t for t in items]
            return [None if won else got for won, got in self.put_many_if_absent(built, now, ttl_s)]
        self._wrote(len(items))
        for k, got in enumerate(res):
            if got is not None:
                res[k] = StoredOutcome.from_bytes(got)
        return res

    def checkpoint_stats(self) -> dict | None:
        """What the background checkpoint did, by outcome: ``done`` (checkpoints run),
        ``restart`` (restarts among them), ``failed``; None when SQLite checkpoints inline."""
        c = self._checkpointer
        return None if c is None else {"done": c.checkpoints, "restart": c.restarts, "failed": c.failures}

    def index_stats(self) -> dict | None:
        """A log file's in-memory key index: ``keys`` (rows it holds, stale ones included until
        looked up) and ``bytes`` (its table; None for the pure index); None for a keyed file."""
        if self.layout != "log":
            return None
        return {"keys": len(self._index), "bytes": getattr(self._index, "nbytes", None)}

    def _wrote(self, n: int) -> None:
        if self._checkpointer is not None:
            self._checkpointer.wrote(n)

    def delete_copies(self, items, now):
        """Delete each ``(tenant, pcs_id, outcome)`` whose live row holds exactly ``outcome``
        (one ``BEGIN IMMEDIATE`` transaction); the number deleted (a migration's prune only)."""
        check_keys(items)
        if not items:
            return 0
        if self.layout == "log":
            return self._run(lambda c: self._delete_log(c, items, now))
        sql = "DELETE FROM dedup WHERE tenant = ? AND pcs_id = ? AND outcome = ? AND expires_at > ?"

        def fn(c):
            c.execute("BEGIN IMMEDIATE")
            n = 0
            for t, p, o in items:
                n += c.execute(sql, (t, p, o.to_bytes(), now)).rowcount
            c.execute("COMMIT")
            return n

        return self._run(fn)

    def _delete_log(self, c, items, now) -> int:
        index = self._index
        with log_held(c, index, write=True):
            rows = log_stored(c, index, list(dict.fromkeys((t, p) for t, p, _o in items)))
            gone = []
            for t, p, o in items:
                r = rows.get((t, p))
                if r is not None and r[1] > now and r[2] == o.to_bytes():
                    c.execute("DELETE FROM dedup_log WHERE seq = ?", (r[0],))
                    del rows[(t, p)]
                    gone.append((t, p, r[0]))
            c.execute("COMMIT")
            for t, p, seq in gone:
                index.remove(t, p, seq)
        return len(gone)

    @property
    def table(self) -> str:
        """The table that holds this file's rows: ``dedup`` (layout ``keyed``) or ``dedup_log``."""
        return "dedup_log" if self.layout == "log" else "dedup"

    def scans_in_order(self) -> bool:
        """A keyed file's scan pages come in key order; a log file's in the order its rows were
        first written (each live entry once: a row keeps its place when it is replaced)."""
        return self.layout == "keyed"

    def count(self, now):
        sql = f"SELECT count(*) FROM {self.table} WHERE expires_at > ?"
        return self._run(lambda c: c.execute(sql, (now,)).fetchone()[0])

    def scan(self, cursor, limit, now):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if self.layout == "log":
            return self._scan_log(cursor, limit, now)
        after = decode_cursor(cursor) if cursor is not None else ("", "")
        sql = (
            "SELECT tenant, pcs_id, outcome FROM dedup WHERE expires_at > ? AND (tenant, pcs_id) > (?, ?) "
            "ORDER BY tenant, pcs_id LIMIT ?"
        )
        rows = self._run(lambda c: c.execute(sql, (now, after[0], after[1], limit + 1)).fetchall())
        page = [(t, p, StoredOutcome.from_bytes(o)) for t, p, o in rows[:limit]]
        nxt = encode_cursor(page[-1][0], page[-1][1]) if len(rows) > limit else None
        return page, nxt

    def _scan_log(self, cursor, limit, now):
        """A log file's scan: rows in ``seq`` order up to the last row written when the scan began
        (the cursor ``[after, upto]``): a scan under a steady stream of writes would otherwise chase
        the table's end and might never finish. Every entry present for the whole scan is seen once
        (an entry written during it may not be, as with Redis's SCAN)."""
        if cursor is None:
            after, upto = 0, None
        else:
            try:
                after, upto = textdata.json_loads(cursor)
                if type(after) is not int or type(upto) is not int or not 0 <= after <= upto:
                    raise TypeError
            except (ValueError, TypeError):
                raise ValueError("invalid scan cursor") from None
        sql = ("SELECT seq, tenant, pcs_id, outcome FROM dedup_log WHERE expires_at > ? AND seq > ? AND seq <= ? "
               "ORDER BY seq LIMIT ?")

        def fn(c):
            top = upto if upto is not None else (c.execute("SELECT max(seq) FROM dedup_log").fetchone()[0] or 0)
            return top, c.execute(sql, (now, after, top, limit + 1)).fetchall()

        top, rows = self._run(fn)
        page = [(t, p, StoredOutcome.from_bytes(o)) for _s, t, p, o in rows[:limit]]
        nxt = f"[{rows[limit - 1][0]},{top}]" if len(rows) > limit else None
        return page, nxt

    def _log_row(self, c, tenant: str, pcs_id: str, write: bool, change=None):
        """A log file's row of one key, ``(seq, expires_at, outcome)`` or None, read in a
        transaction (``write``: under the write lock) that ``change(c, row)`` may write in."""
        with log_held(c, self._index, write):
            row = log_stored(c, self._index, [(tenant, pcs_id)]).get((tenant, pcs_id))
            out = change(c, row) if change is not None else row
            c.execute("COMMIT")
        return out

    def row_expiry(self, tenant: str, pcs_id: str) -> float | None:
        """The stored row's ``expires_at``, live or not (None: no row) -- for the tiered store."""
        check_key(tenant, pcs_id)
        if self.layout == "log":
            row = self._run(lambda c: self._log_row(c, tenant, pcs_id, False))
            return None if row is None else float(row[1])
        row = self._run(lambda c: c.execute("SELECT expires_at FROM dedup WHERE tenant = ? AND pcs_id = ?",
                                            (tenant, pcs_id)).fetchone())
        return None if row is None else float(row[0])

    def replace_row(self, tenant: str, pcs_id: str, old: bytes, new: bytes, now: float, expires_at: float) -> bool:
        """Replace a live row whose stored bytes are exactly ``old`` and whose expiry is
        ``expires_at`` by ``new`` (expiry unchanged), atomically; False if there is no such row
        -- for the tiered store."""
        check_key(tenant, pcs_id)
        where = "outcome = ? AND expires_at > ? AND expires_at = ?"
        if self.layout == "keyed":
            sql = f"UPDATE dedup SET outcome = ? WHERE tenant = ? AND pcs_id = ? AND {where}"
            return self._run(lambda c: c.execute(sql, (new, tenant, pcs_id, old, now, expires_at)).rowcount) == 1
        sql = f"UPDATE dedup_log SET outcome = ? WHERE seq = ? AND {where}"

        def change(c, row):
            return 0 if row is None else c.execute(sql, (new, row[0], old, now, expires_at)).rowcount

        return self._run(lambda c: self._log_row(c, tenant, pcs_id, True, change)) == 1

    def sample(self, n, seed, now):
        if n < 0:
            raise ValueError("n must be >= 0")
        sql = (
            f"SELECT tenant, pcs_id, outcome FROM {self.table} WHERE expires_at > ? "
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
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except _ERRORS:
                pass
        self._local = threading.local()


class _Checkpointer:
    """A :class:`SqliteStore`'s WAL checkpoints on a thread of their own (``checkpoint="background"``).

    Why: with SQLite's automatic checkpoint the commit that crosses the threshold copies the
    WAL's pages into the file and fsyncs both on the thread that committed -- in ``flk serve``
    the batch thread, so every batch queued behind it waits (``flk serve``, every body fresh,
    medians of 5-6 rounds: p99 at 32 connections 14.2 -> 9.6 ms, req/s +3 %; at 128,
    18.7 -> 14.1 ms, req/s +1 %, CPU per request +3 %). Here the batch only counts its rows
    (:meth:`wrote`); after ``rows`` of them (``rows`` >= 1: the store checks it), or
    ``max_wait_s`` after the first one, this thread runs a ``PASSIVE`` checkpoint on its own
    connection (the GIL is released while SQLite works). A passive
    checkpoint never waits for writers, so under a steady stream of commits it may never
    catch the log's end, and the log is restarted from its start only after a checkpoint
    that did; when the log holds more than ``restart_pages`` after one, a ``RESTART``
    checkpoint waits for the writer in progress and for readers of the old log, and restarts
    it; new writers wait while it is pending, so this connection's busy timeout is short
    (``RESTART_WAIT_MS``): a restart that cannot get through in that time gives up
    (``busy``) and is tried at the next trigger. SQLite's own automatic checkpoint stays on at
    ``BACKSTOP_AUTOCHECKPOINT`` pages in case this thread falls behind. A failed checkpoint
    is counted (``failures``) and tried again at the next trigger: the data stays in the WAL,
    which is as durable as before (``make_durable`` is unchanged)."""

    def __init__(self, path: str, busy_timeout_ms: int, rows: int, max_wait_s: float = 1.0,
                 restart_pages: int = 16_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.rows = rows
        self.max_wait_s = max_wait_s
        self.restart_pages = restart_pages
        self.checkpoints = 0  # checkpoints run (passive and restart)
        self.restarts = 0
        self.failures = 0
        self._pending = 0  # rows written since the last checkpoint began (a hint: races are harmless)
        self._due = threading.Event()
        self._stop = False
        self._thread = NamedThread(target=self._run, name="dedup-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending >= self.rows:
            self._due.set()

    def _run(self) -> None:
        conn = None
        try:
            wait_ms = min(self.busy_timeout_ms, RESTART_WAIT_MS)
            conn = sqlite3.connect(self.path, timeout=wait_ms / 1000, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
            while not self._stop:
                self._due.wait(self.max_wait_s)
                if self._stop:
                    break
                self._due.clear()
                if self._pending:
                    self._pending = 0
                    self.fold(conn)
        except sqlite3.Error:
            self.failures += 1  # no connection: SQLite's backstop checkpoint does the work
        finally:
            if conn is not None:
                conn.close()

    def flush(self) -> None:
        """Make the pages the checkpoints copied into the store's file durable, holding no
        SQLite lock: an fdatasync of the file, run before a restart.

        Why: a passive checkpoint syncs the file only when it reached the log's end, which
        under a steady stream of commits it never does; the restart, which does, then synced
        every page copied since the last restart while it held the write lock. ``flk serve``,
        2 workers, 32 connections, 8 s: a restart every ~0.3 s stopped both workers' batches
        for 3-33 ms, growing with the file (its fdatasync alone: 16 ms at ~38 MB). Synced
        here, while the writers go on, the restart's own sync has only the pages copied since:
        the restarts took 0-8 ms, the longest batch finish 9.6 ms instead of 34. flk bench
        serve's server turn (5 s, 4 interleaved rounds, each side twice a round): p99
        6.3-14.3 ms vs 21.7-28.8 ms, req/s within the rounds' noise (ratio to bare Starlette
        0.689 and 0.659 vs 0.650 and 0.705); at 64 connections (3 rounds) p99 8.8-15.7 vs
        21.6-26.4 ms, req/s 27.1k vs 27.4k (medians), CPU per request some 4 % higher (why
        is not measured). Syncing after every passive checkpoint instead cost 10 % of req/s
        (hot pages written over and over); once half-way to the restart, it left the
        restarts at 3-25 ms."""
        fd = os.open(self.path, os.O_RDONLY)  # once per restart (~0.3 s apart under load): nothing kept open
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def fold(self, conn: sqlite3.Connection) -> str:
        """One checkpoint on ``conn``: ``passive``, then a restart when the log is still
        longer than ``restart_pages``: ``restart``, or ``busy`` when it gave up waiting for
        a writer or a reader; ``failed`` on an error."""
        try:
            busy, log, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            if busy or log <= self.restart_pages:
                return "passive"
            self.flush()  # the restart's own sync then has only the pages copied since
            if conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]:
                return "busy"
            self.checkpoints += 1
            self.restarts += 1
            return "restart"
        except (sqlite3.Error, OSError):
            self.failures += 1
            return "failed"

    def close(self) -> None:
        self._stop = True
        self._due.set()
        self._thread.join(timeout=10)
