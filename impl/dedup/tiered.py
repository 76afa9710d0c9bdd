"""Tiered dedup: hot (memory/Redis) / warm (memory/SQLite/Postgres) / cold (object store).

Why this module exists: dedup entries live 14 days but are read mostly in
their first minutes. Keeping every body in the warm database costs space; the
cold tier keeps old bodies zlib-compressed in an object store (a directory by
default, S3 through boto3) -- without ever letting a key hold two different
outcomes in two tiers (INV-FWW across tiers).

Layout (SPEC 13.2):

* **warm is the authority for existence.** Every live key has exactly one warm
  row, for its whole lifetime: either the *full* outcome, or -- once demoted --
  a *stub*: an empty header and ``body = b"\\x00flk-cold:<oh>@<expires_at>"``. A
  JSON response body never starts with NUL, so a stub is never mistaken for
  an outcome. First-write-wins is decided by ``warm.put_if_absent`` alone
  (atomic in every backend), so two writers can never both win, whatever tier
  the key's body is in.
* **cold** holds ``b"Z2" + zlib(outcome.to_bytes(), zdict=COLD_ZDICT)`` under
  ``<prefix>/<kh[:2]>/<kh>-<oh>`` (``kh`` = SHA-256 of ``tenant NUL pcs_id``,
  ``oh`` = first 16 hex of SHA-256 of the uncompressed bytes, checked on every
  read: a damaged object fails closed) with metadata ``format``,
  ``expires-at``, ``raw-bytes``. Objects are write-once; a key that expired
  and was stored again gets a new object (its ``oh`` differs).
* **hot** is a cache of warm/cold outcomes with a short TTL that never outlives
  the entry (``min(hot_s, expires_at - now)``), so a hot copy is always the
  live authoritative outcome. Hot failures are ignored (it is a cache).
* **demotion** (:meth:`TieredStore.demote_step`, bounded batches, driven by a
  thread or the simulator with ``now`` passed in): for warm rows whose age
  (``now - first_seen``) reached the tenant's ``warm_s``: write the cold object
  (idempotent: an existing object with the same bytes is fine), then replace the
  full row by its stub with a compare-and-swap on the exact stored bytes. A
  crash between the two steps leaves a full row and an orphan object that the
  next step reuses. Hot -> warm "demotion" is the hot TTL running out.
* **lazy promotion**: a read of a stubbed key fetches the cold object and puts
  the outcome into hot (not back into warm) until ``min(hot_s, expires_at)``
  (the stub carries the entry's expiry). New writes go to warm and hot; a warm
  read is not cached (its expiry is not in the contract's answer).
* **cold outage**: reading a stubbed ("cold-only") key raises
  :class:`~flk.impl.dedup.StoreUnavailable` (503); hot and warm keys and new keys
  are unaffected (they never touch cold).

Only the compare-and-swap reaches below the dedup contract (one ``UPDATE`` on
the backend's own table / dict, :func:`_replace_row`); memory, SQLite and
Postgres are supported as warm tiers.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from ..storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from ..storage.threads import NamedThread
from .base import (
    DEFAULT_TTL_S,
    BatchMixin,
    DedupStore,
    StoredOutcome,
    StoreUnavailable,
    check_key,
    check_ttl,
    encode_cursor,
    item_by_item,
    scans_in_order,
)

STUB_PREFIX = b"\x00flk-cold:"
COLD_FORMAT = "flk-cold-2"
COLD_MAGIC = b"Z2"
# A fixed preset dictionary (format flk-cold-2; never change it, add a format):
# the verifier's outcome skeleton, so a ~360-byte outcome compresses to about
# its two 64-hex digests instead of 0.7x of itself.
COLD_ZDICT = (
    b'"reasons":["pii","anomaly","vrf","budget","regime","signature"],"escalated":true,"accepted":false,'
    b'"regime":"non_sticky","regime":"mixed","status":202,"detail":"","title":"","type":"about:blank",'
    b'"recomputed":{"D_hat":0.,"budget":0.,"regime":"sticky"},"region":"eu-west","region":"us-east",'
    b'",200,1000000000.0,"eu-west","1.0.0"]\n{"accepted":true,"escalated":false,"first_seen":1700000000.0,'
    b'"pcs_id":"0123456789abcdef","policy_version":"1.0.0","reasons":[],"recomputed":{"D_hat":0.8,'
    b'"budget":0.2,"regime":"sticky"},"region":"eu-west"}'
)
WARM_KINDS = ("memory", "sqlite", "postgres")


@dataclass(frozen=True)
class TierTTL:
    """``hot_s``: how long an outcome stays in hot after a write or a promotion;
    ``warm_s``: age (since ``first_seen``) after which demotion moves its body
    to cold; ``retention_s``: the entry TTL when ``put_if_absent`` gets none
    (None: the store's default, 14 days)."""

    hot_s: float = 300.0
    warm_s: float = 86400.0
    retention_s: float | None = None

    def __post_init__(self) -> None:
        if not (self.hot_s > 0 and self.warm_s >= 0):
            raise ValueError("hot_s must be > 0 and warm_s >= 0")
        if self.retention_s is not None and not self.retention_s > 0:
            raise ValueError("retention_s must be > 0")


def key_hash(tenant: str, pcs_id: str) -> str:
    return hashlib.sha256(tenant.encode() + b"\x00" + pcs_id.encode()).hexdigest()[:32]


def is_stub(o: StoredOutcome) -> bool:
    return o.body.startswith(STUB_PREFIX)


def make_stub(oh: str, expires_at: float) -> StoredOutcome:
    """The warm row of a demoted key: an empty header and ``PREFIX<oh>@<expires_at>``."""
    return StoredOutcome("", 0, STUB_PREFIX + f"{oh}@{expires_at!r}".encode(), 0.0, "", "")


def stub_target(stub: StoredOutcome) -> tuple[str, float]:
    """``(oh, expires_at)`` of a stub."""
    oh, _, exp = stub.body[len(STUB_PREFIX):].decode().partition("@")
    return oh, float(exp)


def compress(raw: bytes, level: int = 9) -> bytes:
    c = zlib.compressobj(level, zdict=COLD_ZDICT)
    return COLD_MAGIC + c.compress(raw) + c.flush()


def decompress(data: bytes) -> bytes:
    if not data.startswith(COLD_MAGIC):
        raise ValueError("not a flk-cold-2 object")
    d = zlib.decompressobj(zdict=COLD_ZDICT)
    return d.decompress(data[len(COLD_MAGIC):]) + d.flush()


def stub_expiry(stub: StoredOutcome) -> float:
    return stub_target(stub)[1]


def _replace_row(warm: DedupStore, tenant: str, pcs_id: str, old: StoredOutcome, new: StoredOutcome,
                 now: float, expires_at: float) -> bool:
    """Atomically replace a live row whose stored bytes are exactly ``old`` and whose
    expiry is ``expires_at`` by ``new`` (expiry unchanged). False if the row
    changed, expired, was stored again or vanished."""
    kind = getattr(warm, "kind", "")
    ob, nb = old.to_bytes(), new.to_bytes()
    if kind == "memory":
        with warm._lock:  # noqa: SLF001 - the memory backend's own lock
            hit = warm._data.get((tenant, pcs_id))  # noqa: SLF001
            if hit is None or hit[0] <= now or hit[0] != expires_at or hit[1] != old:
                return False
            warm._data[(tenant, pcs_id)] = (hit[0], new)  # noqa: SLF001
            return True
    if kind == "sqlite":
        return warm.replace_row(tenant, pcs_id, ob, nb, now, expires_at)
    if kind == "postgres":
        sql = (f"UPDATE {warm.table} SET outcome = %s WHERE tenant = %s AND pcs_id = %s AND outcome = %s "
               "AND expires_at > %s AND expires_at = %s")
        args = (nb, tenant, pcs_id, ob, now, expires_at)
        return warm._run(lambda c: c.execute(sql, args).rowcount) == 1  # noqa: SLF001
    raise ValueError(f"warm tier must be one of {WARM_KINDS}, not {kind!r}")


def _row_expiry(warm: DedupStore, tenant: str, pcs_id: str) -> float | None:
    """The stored row's ``expires_at`` (None if there is no row)."""
    kind = getattr(warm, "kind", "")
    if kind == "memory":
        with warm._lock:  # noqa: SLF001
            hit = warm._data.get((tenant, pcs_id))  # noqa: SLF001
        return None if hit is None else hit[0]
    if kind == "sqlite":
        return warm.row_expiry(tenant, pcs_id)
    if kind == "postgres":
        sql = f"SELECT expires_at FROM {warm.table} WHERE tenant = %s AND pcs_id = %s"
    else:
        raise ValueError(f"warm tier must be one of {WARM_KINDS}, not {kind!r}")
    row = warm._run(lambda c: c.execute(sql, (tenant, pcs_id)).fetchone())  # noqa: SLF001
    return None if row is None else float(row[0])


class ColdUnavailable(StoreUnavailable):
    """A cold-only key whose cold object could not be read (the object store down, the object
    missing or damaged): that key fails closed; the others are unaffected."""


class TieredStore(BatchMixin):
    """A :class:`~flk.impl.dedup.DedupStore` over ``hot`` (a DedupStore or None),
    ``warm`` (memory / SQLite / Postgres store) and ``cold`` (an ObjectStore)."""

    kind = "tiered"

    def __init__(self, hot: DedupStore | None, warm: DedupStore, cold: ObjectStore, *,
                 ttl: TierTTL = TierTTL(), tenant_ttl: Mapping[str, TierTTL] | None = None,
                 prefix: str = "dedup-cold", compress_level: int = 9) -> None:
        if getattr(warm, "kind", "") not in WARM_KINDS:
            raise ValueError(f"warm tier must be one of {WARM_KINDS}")
        self.hot, self.warm, self.cold = hot, warm, cold
        self.ttl = ttl
        self.tenant_ttl = dict(tenant_ttl or {})
        self.prefix = prefix.strip("/")
        self.compress_level = int(compress_level)
        self._cursor: str | None = None
        self.stats = {"demoted": 0, "promoted": 0, "cold_reads": 0, "cold_bytes_written": 0,
                      "raw_bytes_demoted": 0, "hot_errors": 0}

    def ttl_for(self, tenant: str) -> TierTTL:
        return self.tenant_ttl.get(tenant, self.ttl)

    # -- cold objects ---------------------------------------------------------

    def object_key(self, tenant: str, pcs_id: str, raw: bytes) -> str:
        return self._key(tenant, pcs_id, hashlib.sha256(raw).hexdigest()[:16])

    def _key(self, tenant: str, pcs_id: str, oh: str) -> str:
        kh = key_hash(tenant, pcs_id)
        return f"{self.prefix}/{kh[:2]}/{kh}-{oh}"

    def _cold_read(self, tenant: str, pcs_id: str, stub: StoredOutcome, batch: list | None = None) -> StoredOutcome:
        """The full outcome of a stub. ``batch``: a batch call's ``[cold unreachable]`` flag --
        once one read of the batch found the object store down, the batch's later cold reads
        fail at once (each could cost the object store's timeout)."""
        if batch is not None and batch[0]:
            raise ColdUnavailable("cold tier unavailable")
        oh = stub_target(stub)[0]
        key = self._key(tenant, pcs_id, oh)
        try:
            data = self.cold.get(key)
        except ObjectStoreUnavailable:
            if batch is not None:
                batch[0] = True
            raise ColdUnavailable("cold tier unavailable") from None
        except ObjectNotFound:
            raise ColdUnavailable("cold object missing") from None
        self.stats["cold_reads"] += 1
        try:
            raw = decompress(data)
            if not hmac.compare_digest(hashlib.sha256(raw).hexdigest()[:16], oh):
                raise ValueError("digest mismatch")
            return StoredOutcome.from_bytes(raw)
        except (zlib.error, ValueError):
            raise ColdUnavailable("cold object damaged") from None

    def _resolve(self, tenant: str, pcs_id: str, o: StoredOutcome | None,
                 batch: list | None = None) -> StoredOutcome | None:
        return self._cold_read(tenant, pcs_id, o, batch) if o is not None and is_stub(o) else o

    # -- hot cache ------------------------------------------------------------

    def _hot_get(self, tenant, pcs_id, now):
        if self.hot is None:
            return None
        try:
            return self.hot.get(tenant, pcs_id, now)
        except StoreUnavailable:
            self.stats["hot_errors"] += 1
            return None

    def _hot_put(self, tenant, pcs_id, o: StoredOutcome, now, expires_at: float | None):
        if self.hot is None:
            return
        ttl = self.ttl_for(tenant).hot_s
        if expires_at is not None:
            ttl = min(ttl, expires_at - now)
        if ttl <= 0:
            return
        try:
            self.hot.put_if_absent(tenant, pcs_id, o, now, ttl)
        except StoreUnavailable:
            self.stats["hot_errors"] += 1

    # -- the dedup contract ---------------------------------------------------

    def get(self, tenant: str, pcs_id: str, now: float) -> StoredOutcome | None:
        return self._get(tenant, pcs_id, now, None)

    def _get(self, tenant: str, pcs_id: str, now: float, batch: list | None) -> StoredOutcome | None:
        check_key(tenant, pcs_id)
        hit = self._hot_get(tenant, pcs_id, now)
        if hit is not None:
            return hit
        row = self.warm.get(tenant, pcs_id, now)
        if row is None or not is_stub(row):
            return row  # a warm read is not cached: only writes and cold promotions fill hot
        full = self._cold_read(tenant, pcs_id, row, batch)
        self.stats["promoted"] += 1
        self._hot_put(tenant, pcs_id, full, now, stub_expiry(row))
        return full

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self._put(tenant, pcs_id, outcome, now, ttl_s, None)

    def _put(self, tenant, pcs_id, outcome, now, ttl_s, batch: list | None):
        check_key(tenant, pcs_id)
        if is_stub(outcome):
            raise ValueError("an outcome body may not start with NUL")
        tt = self.ttl_for(tenant)
        ttl = check_ttl(ttl_s if ttl_s is not None else tt.retention_s, getattr(self.warm, "ttl_s", DEFAULT_TTL_S))
        hit = self._hot_get(tenant, pcs_id, now)
        if hit is not None:
            return False, hit
        won, winner = self.warm.put_if_absent(tenant, pcs_id, outcome, now, ttl)
        if won:
            self._hot_put(tenant, pcs_id, outcome, now, now + ttl)
            return True, outcome
        return False, self._resolve(tenant, pcs_id, winner, batch)

    # Batch forms: the per-item calls in order (a later item sees an earlier item's write). A
    # cold-only key whose cold read fails fails alone (the module docstring's cold outage: hot,
    # warm and new keys are unaffected, also in a batch), the batch partial even when every item
    # failed (warm answered); a warm failure fails the batch. ``cold`` is the batch's [cold
    # unreachable] flag (_cold_read).

    def get_many(self, keys, now):
        cold = [False]
        return item_by_item(keys, lambda key: self._get(key[0], key[1], now, cold), ColdUnavailable,
                            lambda: True)

    def put_many_if_absent(self, items, now, ttl_s=None):
        cold = [False]
        return item_by_item(items, lambda it: self._put(it[0], it[1], it[2], now, ttl_s, cold), ColdUnavailable,
                            lambda: True)

    def count(self, now: float) -> int:
        return self.warm.count(now)

    def scans_in_order(self) -> bool:
        """As the warm tier's scan (whose pages this scan answers)."""
        return scans_in_order(self.warm)

    def scan(self, cursor, limit, now):
        page, nxt = self.warm.scan(cursor, limit, now)
        return [(t, p, self._resolve(t, p, o)) for t, p, o in page], nxt

    def sample(self, n, seed, now):
        return [(t, p, self._resolve(t, p, o)) for t, p, o in self.warm.sample(n, seed, now)]

    def ping(self) -> bool:
        return bool(self.warm.ping())

    def close(self) -> None:
        for s in (self.hot, self.warm):
            if s is not None:
                s.close()

    def prewarm(self, tenant: str, pcs_id: str, now: float) -> bool:
        """Predictive promotion: put a cold key's outcome into hot before it is read
        (``TieringPolicy``'s pre-warm, :mod:`flk.impl.operator.tiering`). True if it was
        cold and is now hot; a hot, warm or absent key is left alone. Raises
        ``StoreUnavailable`` on a cold outage (as a read of the key would)."""
        check_key(tenant, pcs_id)
        if self._hot_get(tenant, pcs_id, now) is not None:
            return False
        row = self.warm.get(tenant, pcs_id, now)
        if row is None or not is_stub(row):
            return False
        self._hot_put(tenant, pcs_id, self._cold_read(tenant, pcs_id, row), now, stub_expiry(row))
        self.stats["prewarmed"] = self.stats.get("prewarmed", 0) + 1
        return True

    # -- tiers ----------------------------------------------------------------

    def tier_of(self, tenant: str, pcs_id: str, now: float) -> str | None:
        """Where the key's outcome is served from now: hot, warm, cold, or None."""
        if self._hot_get(tenant, pcs_id, now) is not None:
            return "hot"
        row = self.warm.get(tenant, pcs_id, now)
        if row is None:
            return None
        return "cold" if is_stub(row) else "warm"

    def demote_step(self, now: float, max_items: int = 100, scan_limit: int | None = None) -> dict:
        """Move at most ``max_items`` bodies whose warm age is reached to cold,
        looking at at most ``scan_limit`` (default ``4 * max_items``) warm rows,
        continuing where the previous step stopped. Returns counts; ``wrapped``
        is True when this step finished a pass over the warm tier."""
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        limit = scan_limit or 4 * max_items
        page, nxt = self.warm.scan(self._cursor, limit, now)
        demoted = scanned = 0
        report = {"scanned": 0, "demoted": 0, "wrapped": False, "cold_unavailable": False}
        last = None
        for t, p, row in page:
            if demoted >= max_items:
                break
            scanned += 1
            last = (t, p)
            if is_stub(row) or now - row.first_seen < self.ttl_for(t).warm_s:
                continue
            try:
                if self._demote_one(t, p, row, now):
                    demoted += 1
            except (ObjectStoreUnavailable, StoreUnavailable):
                report["cold_unavailable"] = True
                last = None
                break
        if report["cold_unavailable"]:
            pass  # retry the same page next step
        elif scanned == len(page):
            self._cursor = nxt
            report["wrapped"] = nxt is None
        elif last is not None:  # stopped inside the page: go on after the last entry looked at
            self._cursor = (encode_cursor(*last) if scans_in_order(self.warm)  # the cursor of a key-ordered scan
                            else self.warm.scan(self._cursor, scanned, now)[1])  # any other: its own, that far
        report.update(scanned=scanned, demoted=demoted)
        return report

    def _demote_one(self, tenant: str, pcs_id: str, row: StoredOutcome, now: float) -> bool:
        raw = row.to_bytes()
        expires_at = _row_expiry(self.warm, tenant, pcs_id)
        if expires_at is None or expires_at <= now:
            return False
        oh = hashlib.sha256(raw).hexdigest()[:16]
        key = self._key(tenant, pcs_id, oh)
        data = compress(raw, self.compress_level)
        meta = {"format": COLD_FORMAT, "raw-bytes": str(len(raw)), "expires-at": repr(expires_at)}
        if not self.cold.put(key, data, meta):
            try:  # left by an interrupted demotion: must hold exactly these bytes
                if decompress(self.cold.get(key)) != raw:
                    raise StoreUnavailable("cold object differs")
            except (zlib.error, ValueError, ObjectNotFound):
                raise StoreUnavailable("cold object damaged") from None
        stub = make_stub(oh, expires_at)
        if not _replace_row(self.warm, tenant, pcs_id, row, stub, now, expires_at):
            return False
        self.stats["demoted"] += 1
        self.stats["cold_bytes_written"] += len(data)
        self.stats["raw_bytes_demoted"] += len(raw)
        return True

    def gc_step(self, now: float, max_items: int = 1000) -> dict:
        """Delete up to ``max_items`` cold objects whose entry has expired
        (``expires-at`` metadata <= now): objects of expired keys and of keys
        stored again after expiring. A live stub never points at an expired object."""
        deleted = checked = 0
        try:
            for key in self.cold.list(self.prefix):
                if checked >= max_items:
                    break
                checked += 1
                try:
                    exp = float(self.cold.get_metadata(key).get("expires-at", "inf"))
                except ObjectNotFound:
                    continue
                if exp <= now:
                    self.cold.delete(key)
                    deleted += 1
        except ObjectStoreUnavailable:
            return {"checked": checked, "deleted": deleted, "cold_unavailable": True}
        return {"checked": checked, "deleted": deleted, "cold_unavailable": False}


class DemotionWorker:
    """A driver (not protocol logic): a daemon thread calling
    ``store.demote_step(clock(), max_items)`` every ``interval_s`` (at once again
    while a step demoted a full batch), and ``gc_step`` every ``gc_every``
    steps. The simulator calls ``demote_step`` itself with simulated time."""

    def __init__(self, store: TieredStore, interval_s: float = 1.0, max_items: int = 100,
                 clock=None, gc_every: int = 60) -> None:
        import threading
        import time

        self.store = store
        self.interval_s = float(interval_s)
        self.max_items = int(max_items)
        self.clock = clock or time.time
        self.gc_every = int(gc_every)
        self.steps = 0
        self.last: dict | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = NamedThread(target=self._run, name="flk-demotion", daemon=True)

    def start(self) -> DemotionWorker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.store.demote_step(self.clock(), self.max_items)
                self.steps += 1
                if self.gc_every and self.steps % self.gc_every == 0:
                    self.store.gc_step(self.clock())
                self.error = None
            except StoreUnavailable as exc:
                self.error = type(exc).__name__
                self.last = None
            full = self.last is not None and self.last["demoted"] >= self.max_items
            if not full:
                self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
