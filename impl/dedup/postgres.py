"""PostgreSQL dedup store: ``INSERT ... ON CONFLICT ... RETURNING`` on a pool.

``put_if_absent`` is a single statement::

    INSERT INTO t VALUES (...) ON CONFLICT (tenant, pcs_id)
      DO UPDATE SET ... WHERE t.expires_at <= now   -- only an *expired* row is replaced
    RETURNING 1

which is ``ON CONFLICT DO NOTHING`` for every live row (the row lock taken by
the conflict check makes it atomic under READ COMMITTED); when it returns no
row the winner is read in the same transaction. The table (name configurable,
so test runs never collide) is created if absent. Keys sort with ``COLLATE "C"``
(code-point order, like the other backends). Connection and server errors
raise :class:`StoreUnavailable`.
"""

from __future__ import annotations

import logging
import math
import re

from ..core.optional import require
from .base import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_TTL_S,
    CallDeadline,
    GenerationLost,
    GenerationMarked,
    SqlBatchMixin,
    StoredOutcome,
    StoreUnavailable,
    check_key,
    check_keys,
    check_ttl,
    decode_cursor,
    encode_cursor,
    generation_problem,
)

psycopg = require("psycopg")
_pool = require("psycopg_pool")
ConnectionPool, PoolTimeout = _pool.ConnectionPool, _pool.PoolTimeout
# The pool logs every failed connection attempt (a warning each, with the driver's text) and
# leaves the handling to the application. Without a handler of its own, Python's last-resort
# handler wrote those lines raw onto stderr: several lines of a driver's text before the one
# error an flk command gives, and non-JSON lines in flk serve's JSON-lines log. What failed
# reaches the user through StoreUnavailable; an application that configures logging still gets
# the pool's records (they propagate as before).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

_CHUNK = 200
PIPELINED = psycopg.Pipeline.is_supported()  # libpq 14+: a transaction is one round trip (_run_now)
# rows the running transaction wrote carry its xid as xmin (32 bits of txid_current()): a
# batch's own winners are left out of the read of the losers' winners (put_many_if_absent)
_NOT_OURS = "d.xmin::text::bigint <> txid_current() %% 4294967296"  # %% : a literal % (psycopg)
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _why_unreachable(dsn: str, timeout_s: float) -> str:
    """`` (<the server's or the network's reason>)`` for a pool that never connected (the
    pool's timeout names no cause: one direct attempt does), or "" when that attempt connects
    or fails otherwise. Only a connection failure's first line is quoted: it names host, port,
    user or database, never the password; a DSN the driver cannot parse is not quoted, as its
    message may echo the DSN's text."""
    try:
        psycopg.connect(dsn, connect_timeout=max(1, math.ceil(timeout_s))).close()
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [""])[0].removeprefix("connection failed: ").strip()
        return f" ({first[:200]})" if first else ""
    except Exception:  # noqa: BLE001 -- a reason is a courtesy: the store is reported unreachable either way
        return ""
    return ""


class PostgresStore(GenerationMarked, SqlBatchMixin):
    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        table: str = "flk_dedup",
        ttl_s: float = DEFAULT_TTL_S,
        min_size: int = 1,
        max_size: int = 8,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        if not _TABLE_RE.fullmatch(table):
            raise ValueError("table must match ^[a-z_][a-z0-9_]{0,62}$")
        self.table = table
        self.ttl_s = check_ttl(ttl_s, DEFAULT_TTL_S)
        self.timeout_s = timeout_s
        self.deadline = CallDeadline(timeout_s, threads=max_size + 8, name="postgres")
        self.generation_table = f"{table}_generation"
        self.expected_generation: str | None = None
        self.lost: str | None = None
        self._pool = None
        try:
            # check: a pooled connection is validated when it is taken, so connections a
            # Postgres restart broke are replaced, not used (they gave 503s ~20 s after
            # the store was back); keepalives so a dead peer is noticed on idle ones too
            self._pool = ConnectionPool(
                dsn, min_size=min_size, max_size=max_size, timeout=timeout_s, open=True,
                check=ConnectionPool.check_connection, reconnect_timeout=0, max_lifetime=600.0,
                configure=self._on_connect,
                # autocommit: a call's transaction is its own BEGIN ... COMMIT, pipelined (_run_now)
                kwargs={"connect_timeout": max(1, math.ceil(timeout_s)), "keepalives": 1, "keepalives_idle": 5,
                        "keepalives_interval": 2, "keepalives_count": 2, "autocommit": True},
            )
            self._pool.wait(timeout=timeout_s)
        except (psycopg.Error, PoolTimeout) as exc:
            self.close()  # the pool would go on reconnecting, its threads with it
            raise StoreUnavailable(f"postgres store unreachable: {type(exc).__name__}"
                                   f"{_why_unreachable(dsn, timeout_s)}") from None
        t = self.table
        self._upsert = (
            f"INSERT INTO {t} (tenant, pcs_id, expires_at, outcome) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, "
            f"outcome = EXCLUDED.outcome WHERE {t}.expires_at <= %s RETURNING 1"
        )
        self._get = f"SELECT outcome FROM {t} WHERE tenant = %s AND pcs_id = %s AND expires_at > %s"
        try:
            self._run(
                lambda c: c.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} (tenant TEXT COLLATE \"C\" NOT NULL, "
                    f"pcs_id TEXT COLLATE \"C\" NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
                    f"outcome BYTEA NOT NULL, PRIMARY KEY (tenant, pcs_id))"
                ),
                ddl=True,
            )
        except BaseException:
            self.close()  # a store that failed to open holds no pool and no threads
            raise

    def _run(self, fn, ddl: bool = False, check: bool = True, piped: bool = False):
        if check and self.lost is not None:
            raise GenerationLost(self.lost)
        try:
            return self.deadline.call(lambda: self._run_now(fn, ddl, piped), "postgres store call")
        except StoreUnavailable:
            if check and self.lost is not None:
                raise GenerationLost(self.lost) from None
            raise

    # -- generation marker (data loss detection) -------------------------------------
    def _on_connect(self, conn) -> None:
        """Every new pooled connection -- so every reconnect after a restart -- checks the
        marker before the pool hands it out."""
        if self.expected_generation is None:
            return
        try:
            row = conn.execute(f"SELECT generation FROM {self.generation_table} WHERE id = 1").fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        conn.rollback()
        problem = generation_problem(self.expected_generation, None if row is None else row[0])
        if problem is not None:
            self.lost = self.lost or problem
            raise psycopg.OperationalError("dedup store generation marker mismatch")

    def _create_generation_table(self, c) -> None:
        c.execute(f"CREATE TABLE IF NOT EXISTS {self.generation_table} (id INTEGER PRIMARY KEY, "
                  "generation TEXT NOT NULL)")

    def read_generation(self) -> str | None:
        def fn(c):
            self._create_generation_table(c)
            row = c.execute(f"SELECT generation FROM {self.generation_table} WHERE id = 1").fetchone()
            return None if row is None else row[0]

        return self._run(fn, ddl=True, check=False)

    def create_generation(self, generation: str, force: bool = False) -> str:
        """Write ``generation`` if there is no marker (or always, ``force``); the marker now."""
        conflict = "DO UPDATE SET generation = EXCLUDED.generation" if force else "DO NOTHING"

        def fn(c):
            self._create_generation_table(c)
            c.execute(f"INSERT INTO {self.generation_table} (id, generation) VALUES (1, %s) "
                      f"ON CONFLICT (id) {conflict}", (generation,))

        self._run(fn, ddl=True, check=False)
        if force:
            self.lost = None
        return self.read_generation() or generation

    def _run_now(self, fn, ddl: bool = False, piped: bool = False):
        """``fn(conn)`` in one transaction. ``piped`` (the batch calls): its statements are
        pipelined (libpq 14+) -- BEGIN, what ``fn`` sends and COMMIT leave in one write and
        their answers come back together, one network round trip for the whole transaction
        instead of one per statement (a store across a network: every batch pays each one).
        Such an ``fn`` only sends: it returns a callable that reads its cursors once the
        answers are in (a cursor's rows and rowcount are not there before), whose value is
        the call's. Any other ``fn`` runs statement by statement, as it reads."""
        try:
            with self._pool.connection() as conn:
                if ddl:
                    return self._run_ddl(conn, fn)
                if piped and PIPELINED:
                    with conn.pipeline():
                        conn.execute("BEGIN")
                        out = fn(conn)
                        conn.execute("COMMIT")
                else:
                    with conn.transaction():
                        out = fn(conn)
                return out() if callable(out) else out
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StoreUnavailable(f"postgres store failed: {type(exc).__name__}") from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres store error: {type(exc).__name__}") from None

    def _run_ddl(self, conn, fn):
        """``fn`` with its DDL under a transaction-level advisory lock on the table's name:
        CREATE TABLE IF NOT EXISTS is not safe against itself -- two processes opening a new
        table at once (servers starting together) race on the catalog and one fails with
        DuplicateTable, DuplicateObject or UniqueViolation. Under the lock the second waits
        for the first's commit and then finds the table. A peer that does not take the lock
        (an older version, creating at the same moment) can still race: then the transaction
        runs once more, and finds the table the peer made."""
        def locked():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                return fn(conn)

        try:
            return locked()
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable):
            return locked()

    def get(self, tenant, pcs_id, now):
        check_key(tenant, pcs_id)
        row = self._run(lambda c: c.execute(self._get, (tenant, pcs_id, now)).fetchone())
        return None if row is None else StoredOutcome.from_bytes(row[0])


    def _select(self, c, keys, now, others_only: bool = False):
        """The live rows of ``keys`` (``others_only``: not those this transaction wrote): the
        statement sent, a callable reading ``{(tenant, pcs_id): outcome}`` from its answer."""
        if not keys:
            return dict
        sql = ("SELECT d.tenant, d.pcs_id, d.outcome FROM (VALUES " + ",".join(["(%s, %s)"] * len(keys))
               + f") AS k (t, p) JOIN {self.table} AS d ON d.tenant = k.t AND d.pcs_id = k.p "
               "WHERE d.expires_at > %s" + (f" AND {_NOT_OURS}" if others_only else ""))
        params: list = []
        for t, p in keys:
            params += (t, p)
        params.append(now)
        cur = c.execute(sql, params)
        return lambda: {(t, p): StoredOutcome.from_bytes(bytes(o)) for t, p, o in cur.fetchall()}

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.put_many_if_absent([(tenant, pcs_id, outcome)], now, ttl_s)[0]

    def put_many_if_absent(self, items, now, ttl_s=None):
        """One transaction for the batch: a multi-row upsert of the first item of
        each key (Postgres refuses to touch a row twice in one statement; later
        items with the same key lose to the first, as run in order) whose
        ``RETURNING`` names the winners, then one read of every loser's winner."""
        ttl = check_ttl(ttl_s, self.ttl_s)
        check_keys(items)
        if not items:
            return []
        firsts: dict = {}
        for t, p, o in items:
            firsts.setdefault((t, p), o)
        rows = sorted(firsts.items(), key=lambda kv: kv[0])  # one lock order for all writers: no deadlocks

        def fn(c):
            inserts = []
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i:i + _CHUNK]
                sql = (f"INSERT INTO {self.table} (tenant, pcs_id, expires_at, outcome) VALUES "
                       + ",".join(["(%s, %s, %s, %s)"] * len(chunk))
                       + f" ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, "
                       f"outcome = EXCLUDED.outcome WHERE {self.table}.expires_at <= %s RETURNING tenant, pcs_id")
                params: list = []
                for (t, p), o in chunk:
                    params += (t, p, now + ttl, o.to_bytes())
                params.append(now)
                inserts.append(c.execute(sql, params))
            # the losers' winners, read in the same transaction after the upserts (pipelined with
            # them: which keys lost is not known yet, so every key's row this transaction did not
            # write); the upsert's conflict check locked each of those rows until the commit
            keys = [k for k, _ in rows]
            reads = [self._select(c, keys[i:i + _CHUNK], now, others_only=True) for i in range(0, len(keys), _CHUNK)]

            def result():
                won = {(t, p) for cur in inserts for t, p in cur.fetchall()}
                stored = {}
                for read in reads:
                    stored.update(read())
                for k in won:
                    stored[k] = firsts[k]
                return won, stored

            return result

        won, stored = self._run(fn, piped=True)
        res, seen = [], set()
        for t, p, _ in items:
            k = (t, p)
            w = stored.get(k)
            if w is None:  # a live row that is not there: fail closed rather than guess
                raise StoreUnavailable("postgres store: conflicting row vanished")
            res.append((k in won and k not in seen, w))
            seen.add(k)
        return res

    def delete_copies(self, items, now):
        """Delete each ``(tenant, pcs_id, outcome)`` whose live row holds exactly ``outcome``
        (one transaction); the number deleted (a migration's prune only)."""
        check_keys(items)
        if not items:
            return 0
        sql = f"DELETE FROM {self.table} WHERE tenant = %s AND pcs_id = %s AND outcome = %s AND expires_at > %s"

        def fn(c):
            curs = [c.execute(sql, (t, p, o.to_bytes(), now)) for t, p, o in items]
            return lambda: sum(cur.rowcount for cur in curs)  # counted once the answers are in

        return self._run(fn, piped=True)

    def count(self, now):
        sql = f"SELECT count(*) FROM {self.table} WHERE expires_at > %s"
        return int(self._run(lambda c: c.execute(sql, (now,)).fetchone()[0]))

    def scan(self, cursor, limit, now):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = decode_cursor(cursor) if cursor is not None else ("", "")
        sql = (
            f"SELECT tenant, pcs_id, outcome FROM {self.table} WHERE expires_at > %s "
            f"AND (tenant, pcs_id) > (%s, %s) ORDER BY tenant, pcs_id LIMIT %s"
        )
        rows = self._run(lambda c: c.execute(sql, (now, after[0], after[1], limit + 1)).fetchall())
        page = [(t, p, StoredOutcome.from_bytes(bytes(o))) for t, p, o in rows[:limit]]
        nxt = encode_cursor(page[-1][0], page[-1][1]) if len(rows) > limit else None
        return page, nxt

    def sample(self, n, seed, now):
        if n < 0:
            raise ValueError("n must be >= 0")
        sql = (
            f"SELECT tenant, pcs_id, outcome FROM {self.table} WHERE expires_at > %s ORDER BY "
            f"encode(sha256(convert_to(%s || '|' || tenant || '|' || pcs_id, 'UTF8')), 'hex'), "
            f"tenant, pcs_id LIMIT %s"
        )
        rows = self._run(lambda c: c.execute(sql, (now, str(int(seed)), n)).fetchall())
        return [(t, p, StoredOutcome.from_bytes(bytes(o))) for t, p, o in rows]

    def drop_table(self) -> None:
        """Remove the table (tests use a table per run)."""
        self._run(lambda c: c.execute(f"DROP TABLE IF EXISTS {self.table}"))

    def make_durable(self) -> bool:
        """Committed transactions are durable in Postgres (fsync on commit)."""
        return True

    def ping(self):
        try:
            self._run(lambda c: c.execute("SELECT 1").fetchone())
            self.check_generation()  # every ping compares the marker too
            return True
        except StoreUnavailable:
            return False

    def close(self):
        self.deadline.close()
        if self._pool is not None:
            self._pool.close()
