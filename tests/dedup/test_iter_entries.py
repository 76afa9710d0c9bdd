"""``iter_entries``: every entry a store holds, each once, in key order -- streamed from the
ordered backends, gathered and sorted from Redis, whose SCAN pages come in hash order and may
repeat an entry (``flk history final-reads``, the cluster runner's final state and the
sharded store's copies read through it)."""

from __future__ import annotations

import random
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import open_store
from flk.impl.dedup.base import StoredOutcome, iter_entries, scans_in_order

NOW = 1_700_000_000.0


def _outcome(i: int) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", 200, b'{"ok":true}', NOW, "r1", "v1")


class _ScanLikeRedis:
    """The contract's scan as Redis answers it: pages of any size in any order, an entry
    possibly twice, empty pages with more to come."""

    kind = "redis"

    def __init__(self, entries: list, pages: list[list[int]]) -> None:
        self.pages = [[entries[i] for i in page] for page in pages]
        self.calls = 0

    def scan(self, cursor, limit, now):
        k = 0 if cursor is None else int(cursor)
        self.calls += 1
        return list(self.pages[k]), (None if k + 1 == len(self.pages) else str(k + 1))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.integers(0, 40), st.randoms(use_true_random=False), st.integers(1, 8))
def test_an_unordered_scan_is_read_once_per_key_in_key_order(n, rnd, page_count) -> None:
    entries = [(f"t{i % 3}", f"p{i:04d}", _outcome(i)) for i in range(n)]
    order = list(range(n)) + [rnd.randrange(n) for _ in range(n // 3)] if n else []  # repeats
    rnd.shuffle(order)
    cuts = sorted(rnd.randrange(len(order) + 1) for _ in range(page_count - 1))
    pages = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    store = _ScanLikeRedis(entries, pages)
    assert not scans_in_order(store)
    got = list(iter_entries(store, NOW))
    assert got == sorted(entries, key=lambda e: (e[0], e[1]))  # each once, in key order
    assert store.calls == len(pages)


def test_an_ordered_store_is_streamed_page_by_page() -> None:
    store = open_store("memory")
    store.put_many_if_absent([("t", f"p{i:04d}", _outcome(i)) for i in range(25)], NOW)
    assert scans_in_order(store)
    it = iter_entries(store, NOW, page=10)
    first = next(it)  # one page read, not the whole store
    assert first[:2] == ("t", "p0000") and len(list(it)) == 24


def test_a_real_redis_keyspace_is_read_in_key_order_across_scan_pages(redis_url) -> None:
    """30 keys among 6,000 others: SCAN hands them out over several pages, in hash order."""
    import redis

    ns, other = "ie_" + uuid.uuid4().hex[:8], "ie_fill_" + uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(redis_url)
    filler = open_store(redis_url, prefix=f"flk:dedup:{other}:")
    store = open_store(redis_url, prefix=f"flk:dedup:{ns}:")
    items = [("t", f"p{i:04d}", _outcome(i)) for i in range(30)]
    random.Random(1).shuffle(items)
    try:
        filler.put_many_if_absent([("f", f"x{i:05d}", _outcome(i)) for i in range(6000)], NOW)
        store.put_many_if_absent(items, NOW)
        pages, cursor = [], None
        while True:
            page, cursor = store.scan(cursor, 1, NOW)
            pages.append([e[1] for e in page])
            if cursor is None:
                break
        assert sum(1 for p in pages if p) > 1, pages  # the case the reader must order: several pages
        got = list(iter_entries(store, NOW))
        assert [(t, p) for t, p, _ in got] == [("t", f"p{i:04d}") for i in range(30)]
        assert [o.payload_digest for _, _, o in got] == [f"{i:064x}" for i in range(30)]
    finally:
        for prefix in (ns, other):
            keys = list(client.scan_iter(f"flk:dedup:{prefix}:*", count=5000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        filler.close()
        store.close()
