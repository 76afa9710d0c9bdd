"""The dedup contract every backend implements (ARCHITECTURE.md, "Dedup contract").

Why this module exists: first-write-wins (INV-FWW) is only as strong as the
store's ``put_if_absent``. Every backend -- memory, SQLite, Redis, Postgres,
and later the sharded and tiered stores -- answers the same small protocol, and
one contract test-suite (``tests/dedup/contract.py``) runs against all of them.

Rules every backend follows:

* keys are ``(tenant, pcs_id)`` -- never ``pcs_id`` alone (INV-TENANT-ISOLATION);
* time is passed in (``now``, seconds since the epoch); an entry whose
  ``expires_at = now_at_put + ttl_s`` is ``<= now`` is *absent*: ``get`` does not
  return it, ``count``/``scan``/``sample`` skip it, and ``put_if_absent`` may
  replace it;
* ``put_if_absent`` is atomic: of any number of concurrent callers on one live
  key exactly one gets ``(True, its outcome)``; every other gets
  ``(False, winner)`` with the winner's outcome byte for byte;
* a backend that cannot reach its server raises :class:`StoreUnavailable`
  (the pipeline answers 503 + ``Retry-After``); it never guesses;
* ``sample(n, seed, now)`` is the same for every backend holding the same live
  entries: the ``n`` entries with the smallest
  ``SHA-256("<seed>|<tenant>|<pcs_id>")`` (so divergence checks can compare
  samples across stores and regions);
* ``scan`` pages through every live entry at least once (exactly once, in
  ``(tenant, pcs_id)`` order and at most ``limit`` per page for the ordered
  backends: memory, SQLite, Postgres; Redis follows SCAN semantics, ``limit``
  is a hint); the cursor is an opaque string, ``None`` starts and ends a scan.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..core import textdata
from ..core.records import frozen_record
from ..core.tenantid import TENANT_ID_RULE, is_tenant_id
from ..storage.threads import name_pool_thread

DEFAULT_TTL_S = 14 * 86400.0


class StoreUnavailable(Exception):
    """The dedup store cannot be reached or failed mid-operation (fail closed)."""


class PartialUnavailable(StoreUnavailable):
    """A batch call (``get_many``, ``put_many_if_absent``) that part of the store answered: a
    shard down, or a cold tier (SPEC 13.1-13.4: those keys fail closed, every other key is
    served). ``items`` is the very list the call was made with; ``results`` the call's answers
    by position, valid except at the positions in ``failed``, whose items the store did not
    answer (their writes did not happen). A caller that reads the answers checks that the
    exception is about its own call (:func:`answered_part`): one that made its call on a list
    of its own, and got this from a store it called with another list, treats it as a whole
    failure, as any ``StoreUnavailable``."""

    def __init__(self, message: str, items: Sequence, results: list, failed: Iterable[int]) -> None:
        super().__init__(message)
        self.items = items
        self.results = results
        self.failed = frozenset(failed)

    def __reduce__(self):  # a copy in another process holds a copy of the items: not the caller's own call
        return type(self), (str(self), self.items, self.results, sorted(self.failed))


def answered_part(exc: BaseException, items: Sequence) -> tuple[list, frozenset[int]] | None:
    """``(results, failed)`` when ``exc`` is the partial answer to the call made with ``items``
    (the same list object), else None: the whole call failed."""
    if isinstance(exc, PartialUnavailable) and exc.items is items:
        return exc.results, exc.failed
    return None


def partial_answer(items: Sequence, out: list, failed: list[int], reason: str, store_up: Callable[[], bool]) -> list:
    """The end of a batch call that answers items (or groups of them) one part at a time:
    ``out`` when nothing ``failed``; else :class:`PartialUnavailable` with the answered parts,
    or a plain ``StoreUnavailable`` when every item failed and ``store_up()`` says no part of
    the store is up (the store is down, as a single store's failure)."""
    if not failed:
        return out
    if len(failed) == len(items) and not store_up():
        raise StoreUnavailable(reason)
    raise PartialUnavailable(reason, items, out, failed)


def item_by_item(items: Sequence, call: Callable[[Any], Any], alone: Any, store_up: Callable[[], bool]) -> list:
    """``[call(item) for item in items]`` in order (a later item sees an earlier item's write),
    except that an item whose call raises ``alone`` (an exception class or a tuple of them;
    ``()``: none, the first failure fails the batch) fails alone and the others are still
    called: :func:`partial_answer`."""
    out: list = [None] * len(items)
    failed: list[int] = []
    reason = ""
    for i, item in enumerate(items):
        try:
            out[i] = call(item)
        except alone as exc:
            failed.append(i)
            reason = reason or str(exc)
    return partial_answer(items, out, failed, reason, store_up)


class GenerationLost(StoreUnavailable):
    """The store's generation marker is missing or not the one this deployment wrote:
    the store came back empty or was replaced, so it no longer holds the outcomes it
    acknowledged. Sticky: every call fails until an operator recovers (SPEC.md 9.1)."""


def generation_problem(expected: str, found: str | None) -> str | None:
    """Why a store whose marker is ``found`` is not the store marked ``expected``."""
    if found == expected:
        return None
    if found is None:
        return "the dedup store's generation marker is gone: it restarted empty (lost its data)"
    return "the dedup store's generation marker changed: it was replaced or restored from another deployment"


class GenerationMarked:
    """The generation check of a networked store (Redis, Postgres): the backend sets
    ``expected_generation`` and ``lost`` (None) and provides ``read_generation()``."""

    expected_generation: str | None = None
    lost: str | None = None

    def read_generation(self) -> str | None:  # pragma: no cover - every backend provides it
        raise NotImplementedError

    def expect_generation(self, generation: str) -> None:
        self.expected_generation = generation
        self.check_generation()

    def check_generation(self) -> None:
        """Raise :class:`GenerationLost` (sticky) unless the store's marker is the expected one."""
        if self.lost is None and self.expected_generation is not None:
            problem = generation_problem(self.expected_generation, self.read_generation())
            if problem is not None:
                self.lost = problem
        if self.lost is not None:
            raise GenerationLost(self.lost)


DEFAULT_CALL_TIMEOUT_S = 2.0  # STORE_TIMEOUT_S: the longest a networked store call may take
READY_PING_TIMEOUT_S = 2.0  # the longest flk serve's GET /ready waits for its store's ping (then: not ready)


class CallDeadline:
    """Every call of a networked store answers within ``timeout_s``: the call runs on a
    small thread pool and the caller waits at most that long, then gets
    :class:`StoreUnavailable` (the pipeline's 503 + ``Retry-After``; the server's
    breaker counts it). Why threads: a store process that is stopped (SIGSTOP) keeps
    its TCP connections open and its kernel acknowledges every byte, so neither
    libpq nor a TCP timeout ever fires -- a query waits for the whole freeze (57 s
    in an outside test). A call that has not started when its deadline passes is cancelled; one
    that is running finishes (or fails) on its thread when the store comes back; its
    result is dropped (the request was answered 503 and is in the inbox WAL: a retry is
    answered by first-write-wins). ``timed_out`` counts the deadlines missed."""

    def __init__(self, timeout_s: float = DEFAULT_CALL_TIMEOUT_S, threads: int = 16, name: str = "store") -> None:
        import concurrent.futures

        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError("timeout_s must be a positive number of seconds")
        self.timeout_s = float(timeout_s)
        self._futures = concurrent.futures
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=f"{name}-call",
                                                           initializer=name_pool_thread)
        self.timed_out = 0
        self.closed = False

    def call(self, fn, what: str = "store call"):
        try:
            fut = self._pool.submit(fn)
        except RuntimeError as exc:  # a closed store's pool; else a broken pool, an interpreter exiting
            why = "on a closed store" if self.closed else f"could not start ({type(exc).__name__})"
            raise StoreUnavailable(f"{what} {why}") from None
        try:
            return fut.result(self.timeout_s)
        except self._futures.TimeoutError:
            fut.cancel()
            self.timed_out += 1
            raise StoreUnavailable(f"{what} timed out after {self.timeout_s:g} s (STORE_TIMEOUT_S)") from None

    def close(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


@frozen_record
class StoredOutcome:
    payload_digest: str  # hex SHA-256 of the v1 canonical bytes of the signed subset
    status: int  # 200 or 202
    body: bytes  # the JSON response body, replayed verbatim
    first_seen: float  # seconds since the epoch (time passed in, not read)
    region: str
    policy_version: str

    def to_bytes(self) -> bytes:
        """``<compact JSON header>\\n<body>``: the header holds no newline."""
        return _head(self.payload_digest, self.status, self.first_seen, self.region, self.policy_version) + self.body

    @classmethod
    def from_bytes(cls, raw: bytes) -> StoredOutcome:
        head, sep, body = bytes(raw).partition(b"\n")
        if not sep:
            raise ValueError("stored outcome has no header separator")
        digest, status, first_seen, region, policy_version = textdata.json_loads(head)
        return cls(
            payload_digest=digest,
            status=int(status),
            body=body,
            first_seen=float(first_seen),
            region=region,
            policy_version=policy_version,
        )


Entry = tuple[str, str, StoredOutcome]


@functools.lru_cache(maxsize=256)
def _tail(region: str, policy_version: str) -> bytes:
    return json.dumps([region, policy_version], ensure_ascii=True, separators=(",", ":"))[1:].encode("ascii")


_last_repr: tuple[float, str] = (math.nan, "nan")  # (x, repr(x)): a batch shares first_seen


def float_repr(x: float) -> str:
    """``repr(x)`` of a float; the last answer is reused (a batch's requests share one receive
    time), except for zeros (0.0 == -0.0) and NaN (never equal)."""
    global _last_repr
    last = _last_repr
    if x == last[0] and x != 0.0:
        return last[1]
    text = repr(x)
    _last_repr = (x, text)
    return text


def _head(digest: str, status: int, first_seen: float, region: str, policy_version: str) -> bytes:
    """``json.dumps([digest, status, first_seen, region, policy_version])`` (compact) + ``\n``."""
    # an ASCII letters-and-digits string is its own JSON string body (no escapes)
    if type(digest) is str and digest.isascii() and digest.isalnum() and type(status) is int \
            and type(first_seen) is float and math.isfinite(first_seen):
        return b'["%s",%d,%s,%s\n' % (digest.encode(), status, float_repr(first_seen).encode(), _tail(region, policy_version))
    return json.dumps([digest, status, first_seen, region, policy_version], separators=(",", ":"),
                      ensure_ascii=True).encode("ascii") + b"\n"


_GOOD_TENANTS: set[str] = set()  # tenants that passed the tenant-id rule (a bounded cache)


def check_key(tenant: str, pcs_id: str) -> None:
    if type(tenant) is not str or tenant not in _GOOD_TENANTS:
        if not is_tenant_id(tenant):
            raise ValueError(TENANT_ID_RULE)
        if type(tenant) is str and len(_GOOD_TENANTS) < 4096:
            _GOOD_TENANTS.add(tenant)
    if not isinstance(pcs_id, str) or not 1 <= len(pcs_id) <= 256 or "\n" in pcs_id:
        raise ValueError("pcs_id must be a non-empty string of at most 256 characters")


def check_keys(items: Iterable[Sequence]) -> None:
    """:func:`check_key` of every item's first two fields, ``(tenant, pcs_id, ...)``, in order
    (a batch call's keys, validated at the store's boundary in one loop: the same rules, the
    same first error)."""
    good = _GOOD_TENANTS
    for item in items:
        tenant, pcs_id = item[0], item[1]
        if (type(tenant) is not str or tenant not in good or type(pcs_id) is not str
                or not 1 <= len(pcs_id) <= 256 or "\n" in pcs_id):
            check_key(tenant, pcs_id)


def check_ttl(ttl_s: float | None, default: float) -> float:
    ttl = default if ttl_s is None else float(ttl_s)
    if not ttl > 0:
        raise ValueError("ttl_s must be > 0")
    return ttl


def sample_rank(seed: int, tenant: str, pcs_id: str) -> str:
    return hashlib.sha256(f"{seed}|{tenant}|{pcs_id}".encode()).hexdigest()


def sample_entries(entries: Iterable[Entry], n: int, seed: int) -> list[Entry]:
    """The contract's sample: the ``n`` entries of smallest :func:`sample_rank`, in rank order
    (a heap selection: the same list as sorting every entry and taking the first ``n``)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return heapq.nsmallest(n, entries, key=lambda e: (sample_rank(seed, e[0], e[1]), e[0], e[1]))


# the backends whose ``scan`` pages come in (tenant, pcs_id) order, each entry once (the
# contract above); a sharded store is one only when all its shards are (scans_in_order)
ORDERED_KINDS = frozenset({"memory", "sqlite", "postgres", "sharded", "tiered"})


def scans_in_order(store: Any) -> bool:
    """Whether ``store``'s ``scan`` pages come in key order, each entry once: its own
    ``scans_in_order()`` where it has one (a sharded store: all its shards), else its ``kind``."""
    own = getattr(store, "scans_in_order", None)
    return bool(own()) if callable(own) else getattr(store, "kind", "") in ORDERED_KINDS


def iter_entries(store: Any, now: float, page: int = 1000) -> Iterator[Entry]:
    """Every entry ``store`` holds at ``now`` (not expired by then), each once, in key order,
    read ``page`` at a time through the contract's ``scan``: streamed from a store whose scan
    is ordered (:func:`scans_in_order`); from any other (Redis: SCAN's pages come in hash
    order and may repeat an entry) gathered first -- the last copy of a key kept -- then sorted."""
    entries = _scanned(store, now, page)
    if scans_in_order(store):
        yield from entries
        return
    seen = {(e[0], e[1]): e for e in entries}
    for key in sorted(seen):
        yield seen[key]


def _scanned(store: Any, now: float, page: int) -> Iterator[Entry]:
    """The entries of every page of one ``scan`` of ``store``, as the pages come."""
    cursor = None
    while True:
        batch, cursor = store.scan(cursor, page, now)
        yield from batch
        if cursor is None:
            return


def encode_cursor(tenant: str, pcs_id: str) -> str:
    return json.dumps([tenant, pcs_id], separators=(",", ":"))


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        tenant, pcs_id = textdata.json_loads(cursor)
        if not isinstance(tenant, str) or not isinstance(pcs_id, str):
            raise TypeError
    except (ValueError, TypeError):
        raise ValueError("invalid scan cursor") from None
    return tenant, pcs_id


@runtime_checkable
class DedupStore(Protocol):
    def get(self, tenant: str, pcs_id: str, now: float) -> StoredOutcome | None: ...

    def put_if_absent(
        self,
        tenant: str,
        pcs_id: str,
        outcome: StoredOutcome,
        now: float,
        ttl_s: float | None = None,
    ) -> tuple[bool, StoredOutcome]: ...

    def count(self, now: float) -> int: ...

    def scan(self, cursor: str | None, limit: int, now: float) -> tuple[list[Entry], str | None]: ...

    def sample(self, n: int, seed: int, now: float) -> list[Entry]: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class BatchMixin:
    """Batch forms used by the batching driver; backends override them to share
    one transaction / round trip. Semantics are exactly the per-item calls made
    in order (a later item in a batch sees an earlier item's write)."""

    def get_many(self, keys: Sequence[tuple[str, str]], now: float) -> list[StoredOutcome | None]:
        return [self.get(t, p, now) for t, p in keys]  # type: ignore[attr-defined]

    def put_many_if_absent(
        self,
        items: Sequence[tuple[str, str, StoredOutcome]],
        now: float,
        ttl_s: float | None = None,
    ) -> list[tuple[bool, StoredOutcome]]:
        return [self.put_if_absent(t, p, o, now, ttl_s) for t, p, o in items]  # type: ignore[attr-defined]


class SqlBatchMixin(BatchMixin):
    """``get_many`` for a SQL backend (Postgres; SQLite's batch rows have their own): one ``SELECT`` per chunk of
    distinct keys inside one ``_run`` (connection/transaction), answers in request order.
    A backend provides ``_run(fn, piped=True)`` (``fn`` only sends its statements and returns a
    callable whose value is the call's, read once the answers are in) and ``_select(conn, keys,
    now)``: the statement sent, a callable reading ``{(tenant, pcs_id): outcome}`` from its answer."""

    _GET_CHUNK = 200  # keys per statement

    def get_many(self, keys, now):
        check_keys(keys)

        def fn(c):
            uniq = list(dict.fromkeys(keys))
            reads = [self._select(c, uniq[i:i + self._GET_CHUNK], now) for i in range(0, len(uniq), self._GET_CHUNK)]

            def found():
                out = {}
                for read in reads:
                    out.update(read())
                return out

            return found

        found = self._run(fn, piped=True)
        return [found.get((t, p)) for t, p in keys]
