"""Sharded dedup: a consistent-hash ring with virtual nodes over N dedup stores.

Why this module exists: when one dedup store is not enough, keys are spread
over several stores ("shards") of any backend. First-write-wins (INV-FWW) then
depends on every key having exactly one owning shard (INV-RING-OWNER): a key
read from or written to a different shard would see "absent" and could be
stored twice with two outcomes.

Ring (SPEC 13.1, tied to :mod:`flk.model.ring` by a test):

* positions are u32; a shard ``s`` has ``vnodes`` positions
  ``u32(blake2b("<s>#<i>", 4 bytes))`` for ``i in range(vnodes)``;
* a key ``(tenant, pcs_id)`` has ``probes`` (default 4, 1..4) positions, the
  big-endian u32 words of ``blake2b(tenant NUL pcs_id, 16 bytes)``;
* each probe selects the first vnode at or after its position (ties between
  equal positions broken by shard name), wrapping around to the first vnode --
  exactly :func:`flk.model.ring.successor_index` over :func:`flk.model.ring.build`;
* the key's owner is the shard of the selected vnode *closest* to its probe
  (clockwise distance; a tie goes to the lower probe number). With
  ``probes=1`` this is the classic ring.

Why probes: with vnodes placed independently per shard (which is what makes
adding a shard move only the keys the new shard takes), a shard's share has a
relative spread of about ``1/sqrt(vnodes)`` -- 8 % at 150 vnodes, a max/min
of 1.25-1.3 at 5-16 shards. Multi-probe lookup (Appleton & O'Reilly 2015)
brings 1,000,000 keys to max/min <= 1.13 at 3-16 shards with 4 probes and
keeps the consistency property: adding a shard only shortens some probes'
distances to the *new* shard's vnodes, so a key moves only to the new shard;
removing one moves only that shard's keys.

The ring holds the *member* shards. Health does not change ownership: a shard
that is down keeps its keys, and those keys fail closed
(:class:`~flk.impl.dedup.StoreUnavailable`, the pipeline's 503) while every other
key keeps flowing. Re-routing a down shard's keys elsewhere would let a
duplicate be stored with a second outcome.

Sans-I/O in the sense of the architecture: no clock is read (``now`` is passed
in to every call and to :meth:`ShardedStore.probe`), no thread is started.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..core import textdata
from .base import (
    BatchMixin,
    DedupStore,
    Entry,
    StoredOutcome,
    StoreUnavailable,
    check_key,
    encode_cursor,
    iter_entries,
    partial_answer,
    sample_entries,
    scans_in_order,
)

SPACE = 2**32
DEFAULT_VNODES = 150
DEFAULT_PROBES = 4


def _u32(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "big")


def key_digest(tenant: str, pcs_id: str) -> bytes:
    """16 bytes = 4 probe positions (NUL cannot occur in a tenant)."""
    return hashlib.blake2b(tenant.encode() + b"\x00" + pcs_id.encode(), digest_size=16).digest()


def key_probes(tenant: str, pcs_id: str, probes: int = DEFAULT_PROBES) -> tuple[int, ...]:
    """The u32 probe positions of a dedup key."""
    d = key_digest(tenant, pcs_id)
    return tuple(int.from_bytes(d[4 * j: 4 * j + 4], "big") for j in range(probes))


def key_position(tenant: str, pcs_id: str) -> int:
    """The first probe position of a key (the classic single-probe ring position)."""
    return key_probes(tenant, pcs_id, 1)[0]


def vnode_position(shard: str, i: int) -> int:
    return _u32(f"{shard}#{i}".encode())


def check_shard_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise ValueError(f"shard name must be 1..64 characters of [A-Za-z0-9._-], got {name!r}")
    return name


class Ring:
    """An immutable consistent-hash ring over named shards."""

    def __init__(self, shards: Iterable[str], vnodes: int = DEFAULT_VNODES, probes: int = DEFAULT_PROBES) -> None:
        names = sorted({check_shard_name(s) for s in shards})
        if not names:
            raise ValueError("a ring needs at least one shard")
        if not isinstance(vnodes, int) or not 1 <= vnodes <= 10_000:
            raise ValueError("vnodes must be an integer in 1..10000")
        if not isinstance(probes, int) or not 1 <= probes <= 4:
            raise ValueError("probes must be an integer in 1..4")
        self.shards: tuple[str, ...] = tuple(names)
        self.vnodes = vnodes
        self.probes = probes
        nodes = sorted((vnode_position(s, i), s) for s in names for i in range(vnodes))
        self.positions: list[int] = [p for p, _ in nodes]
        self.owners: list[str] = [s for _, s in nodes]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and self._ident() == other._ident()

    def _ident(self) -> tuple:
        return (self.shards, self.vnodes, self.probes)

    def __hash__(self) -> int:
        return hash(self._ident())

    def __repr__(self) -> str:
        return f"Ring({list(self.shards)!r}, vnodes={self.vnodes}, probes={self.probes})"

    def vnode_list(self) -> list[tuple[int, str]]:
        """``(position, shard)`` sorted -- the input of :func:`flk.model.ring.build`."""
        return list(zip(self.positions, self.owners, strict=True))

    def index_of_position(self, h: int) -> int:
        """Index of the first vnode with position >= h, wrapping to 0 (the model's successor)."""
        i = bisect.bisect_left(self.positions, h % SPACE)
        return i if i < len(self.positions) else 0

    def owner_of_position(self, h: int) -> str:
        return self.owners[self.index_of_position(h)]

    def select(self, probe_positions: Sequence[int]) -> tuple[int, int]:
        """``(probe number, vnode index)`` chosen for a key's probe positions."""
        best = None
        n = len(self.positions)
        for j, h in enumerate(probe_positions):
            i = bisect.bisect_left(self.positions, h)
            if i == n:
                i = 0
            d = (self.positions[i] - h) % SPACE
            if best is None or d < best[0]:
                best = (d, j, i)
        return best[1], best[2]

    def owner_of_probes(self, probe_positions: Sequence[int]) -> str:
        return self.owners[self.select(probe_positions)[1]]

    def owner(self, tenant: str, pcs_id: str) -> str:
        return self.owners[self.select(key_probes(tenant, pcs_id, self.probes))[1]]

    def owner_indexes(self, probe_matrix) -> list[int]:
        """Vectorised :meth:`select` (numpy): shard index (into ``shards``) per row of
        a ``(keys, probes)`` u32 array."""
        import numpy as np

        pos = np.asarray(self.positions, dtype=np.int64)
        own = np.asarray([self.shards.index(o) for o in self.owners], dtype=np.int64)
        P = np.asarray(probe_matrix, dtype=np.int64)[:, : self.probes]
        idx = np.searchsorted(pos, P, side="left")
        idx[idx == len(pos)] = 0
        d = (pos[idx] - P) % SPACE
        j = np.argmin(d, axis=1)  # first minimum: the lower probe number wins a tie
        return own[idx[np.arange(len(P)), j]].tolist()

    def with_shard(self, name: str) -> Ring:
        return Ring([*self.shards, name], self.vnodes, self.probes)

    def without_shard(self, name: str) -> Ring:
        if name not in self.shards:
            raise ValueError(f"shard {name!r} is not on the ring")
        return Ring([s for s in self.shards if s != name], self.vnodes, self.probes)

    def arc_shares(self) -> dict[str, float]:
        """The fraction of the u32 space each shard's vnodes succeed (the single-probe share)."""
        share = dict.fromkeys(self.shards, 0)
        prev = self.positions[-1] - SPACE
        for p, s in zip(self.positions, self.owners, strict=True):
            share[s] += p - prev
            prev = p
        return {s: share[s] / SPACE for s in self.shards}

    def to_json(self) -> dict:
        return {"shards": list(self.shards), "vnodes": self.vnodes, "probes": self.probes}

    @classmethod
    def from_json(cls, doc: Mapping) -> Ring:
        return cls(doc["shards"], int(doc["vnodes"]), int(doc.get("probes", DEFAULT_PROBES)))


def probe_matrix(keys: Iterable[tuple[str, str]]):
    """``(n, 4)`` u32 numpy array of the keys' probe positions."""
    import numpy as np

    b2 = hashlib.blake2b
    raw = b"".join(b2(t.encode() + b"\x00" + p.encode(), digest_size=16).digest() for t, p in keys)
    return np.frombuffer(raw, dtype=">u4").reshape(-1, 4)


def distribution(ring: Ring, keys: Iterable[tuple[str, str]]) -> dict:
    """Count keys per shard: ``{"keys": n, "counts": {shard: n}, "max_over_min": x}``."""
    import numpy as np

    owners = ring.owner_indexes(probe_matrix(keys))
    c = np.bincount(np.asarray(owners, dtype=np.int64), minlength=len(ring.shards))
    counts = {s: int(c[i]) for i, s in enumerate(ring.shards)}
    lo, hi = min(counts.values()), max(counts.values())
    return {"keys": len(owners), "counts": counts, "max_over_min": (hi / lo) if lo else float("inf")}


@dataclass
class ShardHealth:
    up: bool = True
    checked_at: float | None = None
    failures: int = 0  # consecutive
    last_error: str | None = None

    def to_json(self) -> dict:
        return {"up": self.up, "checked_at": self.checked_at, "consecutive_failures": self.failures,
                "last_error": self.last_error}


class ShardedStore(BatchMixin):
    """A :class:`~flk.impl.dedup.DedupStore` over named shards on a :class:`Ring`.

    ``shards``: name -> store (any backend). ``probe_interval_s``: a shard
    marked down is not called again (its keys raise ``StoreUnavailable`` at
    once) until ``probe_interval_s`` after its last check, when the next call
    pings it first (at once if the clock passed in is earlier than that check: it
    stepped back). :meth:`probe` checks every shard at a time passed in.
    """

    kind = "sharded"

    def __init__(self, shards: Mapping[str, DedupStore], vnodes: int = DEFAULT_VNODES,
                 probe_interval_s: float = 5.0, ring: Ring | None = None, probes: int = DEFAULT_PROBES) -> None:
        if not shards:
            raise ValueError("a sharded store needs at least one shard")
        self.shards: dict[str, DedupStore] = {check_shard_name(n): s for n, s in sorted(shards.items())}
        self.ring = ring if ring is not None else Ring(self.shards, vnodes, probes)
        if set(self.ring.shards) != set(self.shards):
            raise ValueError("the ring's shards and the stores given differ")
        self.probe_interval_s = float(probe_interval_s)
        self.health: dict[str, ShardHealth] = {n: ShardHealth() for n in self.shards}
        self._lock = threading.Lock()

    # -- routing and health -------------------------------------------------

    def shard_for(self, tenant: str, pcs_id: str) -> str:
        return self.ring.owner(tenant, pcs_id)

    def _mark(self, name: str, up: bool, now: float | None, err: str | None = None) -> None:
        with self._lock:
            h = self.health[name]
            h.up = up
            if now is not None:
                h.checked_at = now
            h.failures = 0 if up else h.failures + 1
            h.last_error = None if up else err

    def forget_health(self) -> None:
        """Every shard presumed up, none checked: the view a newly opened store starts with
        (a restarted process's; the simulator's regions call it at each start)."""
        with self._lock:
            self.health = {n: ShardHealth() for n in self.shards}

    def probe(self, now: float) -> dict[str, ShardHealth]:
        """Ping every shard (``now`` passed in); returns the health table."""
        for name, store in self.shards.items():
            try:
                ok = bool(store.ping())
            except Exception as exc:  # noqa: BLE001 - a probe never raises
                ok, err = False, type(exc).__name__
            else:
                err = None if ok else "ping failed"
            self._mark(name, ok, now, err)
        return dict(self.health)

    def _store(self, name: str, now: float) -> DedupStore:
        h = self.health[name]
        if not h.up:
            # due after the interval, or at once when the clock stepped back past the last check
            # (a check stamped by a clock running ahead must not keep the shard out until the
            # clock catches up: liveness seed 1000117, a +20 s skew held a healed shard out 25 s)
            due = h.checked_at is None or not 0.0 <= now - h.checked_at < self.probe_interval_s
            if not due:
                raise StoreUnavailable(f"shard {name} is down")
            try:
                ok = bool(self.shards[name].ping())
            except Exception:  # noqa: BLE001
                ok = False
            self._mark(name, ok, now, None if ok else "ping failed")
            if not ok:
                raise StoreUnavailable(f"shard {name} is down")
        return self.shards[name]

    def _call(self, name: str, now: float, fn: Callable[[DedupStore], object]):
        store = self._store(name, now)
        try:
            return fn(store)
        except StoreUnavailable as exc:
            self._mark(name, False, now, type(exc).__name__)
            raise StoreUnavailable(f"shard {name} unavailable") from None

    # -- the dedup contract ---------------------------------------------------

    def get(self, tenant: str, pcs_id: str, now: float) -> StoredOutcome | None:
        check_key(tenant, pcs_id)
        return self._call(self.shard_for(tenant, pcs_id), now, lambda s: s.get(tenant, pcs_id, now))

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        check_key(tenant, pcs_id)
        return self._call(self.shard_for(tenant, pcs_id), now,
                          lambda s: s.put_if_absent(tenant, pcs_id, outcome, now, ttl_s))

    def _grouped(self, keys: Sequence[tuple[str, str]]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, (t, p) in enumerate(keys):
            check_key(t, p)
            groups.setdefault(self.shard_for(t, p), []).append(i)
        return groups

    def get_many(self, keys, now):
        return self._by_shard(keys, self._grouped(keys), lambda s, sub: _get_many(s, sub, now), now)

    def put_many_if_absent(self, items, now, ttl_s=None):
        return self._by_shard(items, self._grouped([(t, p) for t, p, _ in items]),
                              lambda s, sub: _put_many(s, sub, now, ttl_s), now)

    def _by_shard(self, items: Sequence, groups: dict[str, list[int]], fn: Callable, now: float) -> list:
        """One call per shard (in shard order), the answers in input order. A shard that fails
        fails its own items only (SPEC 13.1): :class:`PartialUnavailable` carries the other
        shards' answers, unless no shard of the store is up (then the store is down:
        ``StoreUnavailable``, as a single store's failure)."""
        out: list = [None] * len(items)
        failed: list[int] = []
        reason = ""
        for name, idx in sorted(groups.items()):
            sub = [items[i] for i in idx]
            try:
                res = self._call(name, now, lambda s, sub=sub: fn(s, sub))
            except StoreUnavailable as exc:
                failed.extend(idx)
                reason = reason or str(exc)
                continue
            for i, r in zip(idx, res, strict=True):
                out[i] = r
        return partial_answer(items, out, sorted(failed), reason, lambda: any(h.up for h in self.health.values()))

    def count(self, now: float) -> int:
        """The shards' counts summed: a copy a migration left in a key's old shard counts too
        (unlike :meth:`scan`; counting owned entries would read every entry) until the
        migration's prune deletes it (:func:`flk.impl.dedup.migrate.prune_step`) or it expires.
        Geo-divergence compares these counts: spec/runbooks/geo-divergence.md says so."""
        return sum(self._call(n, now, lambda s: s.count(now)) for n in self.shards)

    def counts(self, now: float) -> dict[str, int | None]:
        """Live entries per shard (None for a shard that is down)."""
        out: dict[str, int | None] = {}
        for n in self.shards:
            try:
                out[n] = self._call(n, now, lambda s: s.count(now))
            except StoreUnavailable:
                out[n] = None
        return out

    def scans_in_order(self) -> bool:
        """Its scan is a k-way merge in key order when every shard's is (:func:`scans_in_order`)."""
        return all(scans_in_order(s) for s in self.shards.values())

    def scan(self, cursor, limit, now):
        """Every entry the ring's owner shard holds, once: a copy a shard keeps of a key the
        ring routes elsewhere (what a shard migration leaves in the old owner: the same
        outcome, never read by ``get``) is not an entry of this store. Ordered shards: a
        k-way merge in key order (the cursor is the last key scanned, which every ordered
        backend's cursor also is; a page may hold fewer than ``limit`` entries, or none,
        with more to come). Otherwise the shards are scanned one after the other
        (``[shard, shard_cursor]``)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        owner = self.ring.owner
        if self.scans_in_order():
            scanned = [(n, self._call(n, now, lambda s: s.scan(cursor, limit, now))) for n in self.shards]
            more = any(nxt is not None for _, (_, nxt) in scanned)
            merged = list(heapq.merge(*([(e, n) for e in got] for n, (got, _) in scanned),
                                      key=lambda en: (en[0][0], en[0][1])))
            window = merged[:limit]
            if len(merged) > limit and window and merged[limit][0][:2] == window[-1][0][:2]:
                # copies of one key in two shards straddle the cut: end the window before that key
                # (its owner's copy may be the one past the cut), unless the key fills the window
                cut = window[-1][0][:2]
                window = ([en for en in window if en[0][:2] != cut]
                          or [en for en in merged if en[0][:2] == cut])  # every copy is in merged: at most one kept
            page = [e for e, n in window if owner(e[0], e[1]) == n]
            if not window or (len(merged) <= len(window) and not more):
                return page, None
            return page, encode_cursor(window[-1][0][0], window[-1][0][1])
        names = list(self.shards)
        if cursor is None:
            i, sub = 0, None
        else:
            try:
                i, sub = textdata.json_loads(cursor)
                i = names.index(i)
            except (ValueError, TypeError):
                raise ValueError("invalid scan cursor") from None
        name = names[i]
        page, sub = self._call(name, now, lambda s: s.scan(sub, limit, now))
        page = [e for e in page if owner(e[0], e[1]) == name]
        if sub is None:
            i += 1
        if i >= len(names):
            return page, None
        return page, json.dumps([names[i], sub], separators=(",", ":"))

    def every_copy(self, now: float) -> list[Entry]:
        """Every entry every shard physically holds, in key order (a key held by two shards --
        a migration's copy -- twice, in shard order): not the store's entries (:meth:`scan`),
        but what an observer checks for copies that disagree (the simulator's final state:
        two different outcomes of one key in two shards is a first-write-wins violation
        inside the store even when no client saw both)."""
        return list(heapq.merge(*(self._call(n, now, lambda s: list(iter_entries(s, now))) for n in self.shards),
                                key=lambda e: (e[0], e[1])))

    def sample(self, n, seed, now):
        """The contract's sample over the entries :meth:`scan` yields (each key once, from its
        owner). A shard's sample is taken larger by the copies it holds for other owners."""
        owner = self.ring.owner
        merged: list[Entry] = []
        for name in self.shards:
            k = n
            while True:
                got = self._call(name, now, lambda s, k=k: s.sample(k, seed, now))
                owned = [e for e in got if owner(e[0], e[1]) == name]
                if len(owned) >= n or len(got) < k:  # enough, or the shard has no more
                    break
                k += n - len(owned)  # copies of other owners' keys took places: ask for as many more
            merged += owned[:n]
        return sample_entries(merged, n, seed)

    def ping(self) -> bool:
        ok = True
        for s in self.shards.values():
            try:
                ok = bool(s.ping()) and ok
            except Exception:  # noqa: BLE001
                ok = False
        return ok

    def close(self) -> None:
        for s in self.shards.values():
            s.close()

    # -- ops views (the /api/shards endpoints) ---------------------------------

    def find(self, tenant: str, pcs_id: str, now: float) -> dict:
        check_key(tenant, pcs_id)
        probes = key_probes(tenant, pcs_id, self.ring.probes)
        j, i = self.ring.select(probes)
        name = self.ring.owners[i]
        try:
            present: bool | None = self._call(name, now, lambda s: s.get(tenant, pcs_id, now)) is not None
        except StoreUnavailable:
            present = None
        return {"tenant": tenant, "pcs_id": pcs_id, "probes": list(probes), "probe": j, "vnode_index": i,
                "vnode_position": self.ring.positions[i], "shard": name, "shard_up": self.health[name].up,
                "present": present}

    def distribution_report(self, now: float) -> dict:
        counts = self.counts(now)
        known = [c for c in counts.values() if c is not None]
        lo, hi = (min(known), max(known)) if known else (0, 0)
        return {"vnodes": self.ring.vnodes, "probes": self.ring.probes, "shards": list(self.shards), "counts": counts,
                "total": sum(known), "max_over_min": (hi / lo) if lo else None,
                "arc_shares": self.ring.arc_shares()}


def _get_many(store, keys, now):
    if hasattr(store, "get_many"):
        return store.get_many(keys, now)
    return [store.get(t, p, now) for t, p in keys]


def _put_many(store, items, now, ttl_s):
    if hasattr(store, "put_many_if_absent"):
        return store.put_many_if_absent(items, now, ttl_s)
    return [store.put_if_absent(t, p, o, now, ttl_s) for t, p, o in items]


def open_sharded(shard_urls: Mapping[str, str], vnodes: int = DEFAULT_VNODES, probes: int = DEFAULT_PROBES,
                 **opts) -> ShardedStore:
    """A sharded store from ``{name: store url}`` (each opened with :func:`flk.impl.dedup.open_store`)."""
    from . import open_store

    opened: dict[str, DedupStore] = {}
    try:
        for name, url in sorted(shard_urls.items()):
            opened[name] = open_store(url, **opts)
    except BaseException:
        for s in opened.values():
            s.close()
        raise
    return ShardedStore(opened, vnodes=vnodes, probes=probes)


# -- ops endpoints ----------------------------------------------------------------


def _deciding_ring(store: object) -> ShardedStore | None:
    if hasattr(store, "decider"):  # a migration's DualWriteStore: the ring that decides now
        store = store.decider()
    return store if isinstance(store, ShardedStore) else None


def _once(params: Mapping[str, str], name: str, default: str) -> str:
    """Query parameter ``name`` (``default`` when absent); ValueError when it is given twice
    (the last one won: ``size=10&size=20`` was 20)."""
    values = params.getlist(name) if hasattr(params, "getlist") else [params[name]] if name in params else []
    if len(values) > 1:
        raise ValueError(f"{name} given {len(values)} times")
    return values[0] if values else default


def _find_query(params: Mapping[str, str]) -> tuple[str, str | None]:
    """``(tenant, key)`` of ``find``: each given at most once, ``key`` required (ValueError);
    key None when it is not a pcs_id (64 lowercase hex digits, the authoritative read's rule)."""
    key, tenant = _once(params, "key", ""), _once(params, "tenant", "default")
    if not key:
        raise ValueError("key (a pcs_id) is required")
    return tenant, key if len(key) == 64 and not key.strip("0123456789abcdef") else None


def _sample_query(params: Mapping[str, str]) -> tuple[int, int]:
    """``size`` (1..1000, default 10) and ``seed`` (0..2^63-1, default 0: a store keeps it
    in a signed 64-bit integer; a larger seed was a 500); ValueError otherwise."""
    raw_size, raw_seed = _once(params, "size", "10"), _once(params, "seed", "0")
    if len(raw_size) > 8 or len(raw_seed) > 20:  # int() of a 5,000-digit string raises too, after work
        raise ValueError("size or seed too long")
    if not (raw_size.isascii() and raw_size.isdigit() and raw_seed.isascii() and raw_seed.isdigit()):
        raise ValueError("size and seed are ASCII digits")  # int() took "+5", " 5", "1_000" and "٣"
    size, seed = int(raw_size), int(raw_seed)
    if not 1 <= size <= 1000 or not 0 <= seed < 2**63:
        raise ValueError("size or seed out of range")
    return size, seed


def routes(get_store: Callable[[], object], clock: Callable[[], float],
           problem: Callable[[str, str], object]) -> list:
    """Starlette routes for ``GET /api/shards/{distribution,health,sample,find}``.

    ``get_store()`` returns the server's dedup store (503 problem+json when it
    is not a :class:`ShardedStore`; during a migration, the
    ``DualWriteStore``'s deciding ring is shown); ``clock()`` is the driver's wall clock (the
    server owns it). ``sample?size=N`` (1..1000, default 10, ``seed`` default 0);
    ``find?key=<pcs_id>&tenant=<tenant>`` (tenant default ``default``). Entries
    are listed by key, digest and status only: never bodies. ``problem(slug, detail)``
    answers errors from the problem catalog (the server passes its own: dedup may not import it).
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def sharded():
        return _deciding_ring(get_store())

    def off():
        return problem("sharding-disabled", "the dedup store is not sharded")

    async def dist(request):
        s = sharded()
        if s is None:
            return off()
        return JSONResponse(await run_in_threadpool(s.distribution_report, clock()))

    async def health(request):
        s = sharded()
        if s is None:
            return off()
        table = await run_in_threadpool(s.probe, clock())
        return JSONResponse({n: h.to_json() for n, h in table.items()},
                            status_code=200 if all(h.up for h in table.values()) else 503)

    async def sample(request):
        s = sharded()
        if s is None:
            return off()
        try:
            size, seed = _sample_query(request.query_params)
        except ValueError:
            return problem("invalid-query", "size must be an integer in 1..1000 and seed in 0..2^63-1")
        try:
            entries = await run_in_threadpool(s.sample, size, seed, clock())
        except StoreUnavailable as exc:
            return problem("shard-unavailable", str(exc))
        return JSONResponse({"size": size, "seed": seed, "entries": [
            {"tenant": t, "pcs_id": p, "shard": s.shard_for(t, p), "payload_digest": o.payload_digest,
             "status": o.status} for t, p, o in entries]})

    async def find(request):
        s = sharded()
        if s is None:
            return off()
        try:
            tenant, key = _find_query(request.query_params)
            if key is None:
                return problem("invalid-pcs-id", "key must be a pcs_id: 64 lowercase hex digits")
            res = await run_in_threadpool(s.find, tenant, key, clock())
        except ValueError as exc:
            return problem("invalid-query", str(exc))
        return JSONResponse(res)

    return [Route("/api/shards/distribution", dist, methods=["GET"]),
            Route("/api/shards/health", health, methods=["GET"]),
            Route("/api/shards/sample", sample, methods=["GET"]),
            Route("/api/shards/find", find, methods=["GET"])]
