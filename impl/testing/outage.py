"""A dedup store whose outage a test or the simulator can switch on and off.

Why this module exists: shard-loss scenarios and the sharded-store tests need
a real store that can become unreachable on command; production code never
imports it (spec/ARCHITECTURE.md).
"""

from __future__ import annotations

from ..dedup.base import BatchMixin, DedupStore, StoreUnavailable


class OutageStore(BatchMixin):
    """Wraps a real store; ``available = False`` makes every call raise
    :class:`StoreUnavailable` and ``ping`` answer False -- a shard outage the
    simulator (and a test) can switch, like ``MemoryObjectStore.available``.

    While available, the store calls are the inner store's own bound methods (set on
    the instance when ``available`` turns True): no frame of this wrapper per call. An
    outage removes them, so the class's methods answer (each raises)."""

    _CALLS = ("get", "put_if_absent", "get_many", "put_many_if_absent", "count", "scan", "sample",
              "delete_copies")

    def __init__(self, inner: DedupStore) -> None:
        self.inner = inner
        self.kind = getattr(inner, "kind", "wrapped")
        self.available = True

    @property
    def available(self) -> bool:
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = bool(value)
        calls = self.__dict__
        for name in self._CALLS:
            if self._available and hasattr(self.inner, name):  # delete_copies: a shard backend's only
                calls[name] = getattr(self.inner, name)
            else:
                calls.pop(name, None)

    def _check(self) -> None:
        if not self._available:
            raise StoreUnavailable("shard is down")

    def get(self, tenant, pcs_id, now):
        self._check()
        return self.inner.get(tenant, pcs_id, now)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        self._check()
        return self.inner.put_if_absent(tenant, pcs_id, outcome, now, ttl_s)

    def get_many(self, keys, now):
        """One check, then the inner store's own batch form (the same answers as per key)."""
        self._check()
        return self.inner.get_many(keys, now)

    def put_many_if_absent(self, items, now, ttl_s=None):
        """One check, then the inner store's own batch form (the same answers as per item)."""
        self._check()
        return self.inner.put_many_if_absent(items, now, ttl_s)

    def count(self, now):
        self._check()
        return self.inner.count(now)

    def scan(self, cursor, limit, now):
        self._check()
        return self.inner.scan(cursor, limit, now)

    def sample(self, n, seed, now):
        self._check()
        return self.inner.sample(n, seed, now)

    def delete_copies(self, items, now):
        self._check()
        return self.inner.delete_copies(items, now)

    def make_durable(self) -> bool:
        """The inner store's answer (False for a store that cannot say its outcomes are durable);
        False during an outage: a WAL checkpoint is then not written."""
        durable = getattr(self.inner, "make_durable", None)
        return self._available and durable is not None and bool(durable())

    @property
    def count_exact(self) -> bool:
        """The inner store's (:attr:`flk.impl.dedup.migrate.DualWriteStore.count_exact`; True for the rest)."""
        return bool(getattr(self.inner, "count_exact", True))

    def ping(self) -> bool:
        return self._available and bool(self.inner.ping())

    def close(self) -> None:
        self.inner.close()
