"""In-memory dedup store: the reference backend (and the simulator's).

A dict under a lock; the lock makes ``put_if_absent`` atomic across threads of
one process (the only sharing a memory store can have).
"""

from __future__ import annotations

import bisect
import threading

from .base import (
    DEFAULT_TTL_S,
    BatchMixin,
    Entry,
    StoredOutcome,
    check_key,
    check_keys,
    check_ttl,
    decode_cursor,
    encode_cursor,
    sample_entries,
)


class MemoryStore(BatchMixin):
    kind = "memory"

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = check_ttl(ttl_s, DEFAULT_TTL_S)
        self._data: dict[tuple[str, str], tuple[float, StoredOutcome]] = {}
        self._lock = threading.Lock()
        # a lower bound of every entry's expiry: before it, every entry is live and the
        # whole-store reads need no expiry filter
        self._min_expiry = float("inf")

    def get(self, tenant: str, pcs_id: str, now: float) -> StoredOutcome | None:
        check_key(tenant, pcs_id)
        with self._lock:
            hit = self._data.get((tenant, pcs_id))
        if hit is None or hit[0] <= now:
            return None
        return hit[1]

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        check_key(tenant, pcs_id)
        ttl = check_ttl(ttl_s, self.ttl_s)
        with self._lock:
            hit = self._data.get((tenant, pcs_id))
            if hit is not None and hit[0] > now:
                return False, hit[1]
            expiry = now + ttl
            self._data[(tenant, pcs_id)] = (expiry, outcome)
            if expiry < self._min_expiry:
                self._min_expiry = expiry
            return True, outcome

    def delete_copies(self, items, now: float) -> int:
        """Delete each ``(tenant, pcs_id, outcome)`` whose live entry holds exactly ``outcome``;
        the number deleted (ARCHITECTURE.md "Dedup contract": a migration's prune only)."""
        check_keys(items)
        n = 0
        with self._lock:
            for t, p, o in items:
                hit = self._data.get((t, p))
                if hit is not None and hit[0] > now and hit[1] == o:
                    del self._data[(t, p)]
                    n += 1
        return n

    def _unsorted_live(self, now: float) -> list[Entry]:
        with self._lock:
            if now < self._min_expiry:
                return [(t, p, o) for (t, p), (_, o) in self._data.items()]
            return [(t, p, o) for (t, p), (exp, o) in self._data.items() if exp > now]

    def _live(self, now: float) -> list[Entry]:
        return sorted(self._unsorted_live(now))

    def count(self, now: float) -> int:
        with self._lock:
            if now < self._min_expiry:
                return len(self._data)
            return sum(1 for exp, _ in self._data.values() if exp > now)

    def scan(self, cursor, limit, now):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        live = self._live(now)
        start = 0
        if cursor is not None:
            start = bisect.bisect_right([(t, p) for t, p, _ in live], decode_cursor(cursor))
        page = live[start : start + limit]
        nxt = encode_cursor(page[-1][0], page[-1][1]) if start + limit < len(live) and page else None
        return page, nxt

    def sample(self, n, seed, now):
        return sample_entries(self._unsorted_live(now), n, seed)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass
