"""Dedup store topologies for simulated regions, built from the real scale-out
components (``flk.impl.dedup.sharded``, ``flk.impl.dedup.tiered``, ``flk.impl.dedup.migrate``)
over in-memory shards, so shard loss, cold-tier outages and live migrations
run under simulated time.

* ``memory``    -- one :class:`MemoryStore` (the default);
* ``sharded``   -- a :class:`ShardedStore` over ``shards`` switchable shards;
* ``tiered``    -- a :class:`TieredStore` (hot memory, warm memory, cold object
  store) with short TTLs so demotion happens inside a scenario;
* ``migrating`` -- a :class:`DualWriteStore` from a ``shards``-shard ring to a
  ring with one more shard; the ``migrate`` fault runs the migration's step
  functions (dual write, copy, verify, cut over, clean up) in simulated time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from hashlib import sha256
from itertools import chain, compress, repeat
from operator import attrgetter, is_not

from flk.impl.dedup import DEFAULT_TTL_S, StoredOutcome, StoreUnavailable, iter_entries
from flk.impl.dedup.base import check_key, check_keys, check_ttl
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.migrate import (
    DualWriteStore,
    RingSpec,
    catchup_step,
    copy_step,
    new_state,
    prune_step,
    reset_verify,
    settle_suspects,
    transition,
    verify_step,
)
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.dedup.tiered import TieredStore, TierTTL
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.testing.outage import OutageStore

STORE_KINDS = ("memory", "sharded", "tiered", "migrating")


class SimMemoryStore(MemoryStore):
    """The reference :class:`MemoryStore`, answering exactly like it, with a leaner layout for
    a million keys per region -- plus two reads only the simulator needs: ``scan_all`` (every
    live entry, sorted, in one pass -- the final state the checkers compare against; the same
    entries as paging through ``scan``) and ``peek``.

    Keys are held per tenant, ``tenant -> pcs_id -> value``: no ``(tenant, pcs_id)`` tuple per
    key. The value is ``(expiry, outcome)``, or the bare outcome when the expiry is the
    outcome's ``first_seen`` plus the store's TTL (a put at the outcome's own ``now`` with the
    default TTL: the pipeline's every put, a replay's too) -- the expiry is recomputed from the
    same two floats on read, so no tuple and no float per such key."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        super().__init__(ttl_s)
        self._bare_ttl = self.ttl_s  # the TTL a bare outcome's expiry is recomputed with
        self._by_tenant: dict[str, dict] = {}
        # the last expiry computed and its (now, ttl): a batch of puts at one ``now`` shares
        # one float object instead of an equal float per key
        self._last_expiry: tuple[float, float, float] = (float("nan"), float("nan"), float("nan"))

    def make_durable(self) -> bool:
        """True: the simulated store is an external database (SQLite on its own disk, Redis with
        AOF, PostgreSQL) whose outcomes are durable when a call answers -- what a WAL checkpoint
        asks before it is written (:func:`flk.impl.storage.checkpoint.write_checkpoint`)."""
        return True

    def _split(self, v) -> tuple[float, StoredOutcome]:
        if type(v) is tuple:
            return v
        return v.first_seen + self._bare_ttl, v

    def get(self, tenant: str, pcs_id: str, now: float) -> StoredOutcome | None:
        check_key(tenant, pcs_id)
        v = self._by_tenant.get(tenant, _EMPTY).get(pcs_id)
        if v is None:
            return None
        exp, o = self._split(v)
        return None if exp <= now else o

    def get_many(self, keys, now):
        """:meth:`get` of each key, in one loop (the same answers)."""
        check_keys(keys)
        by_tenant, bare_ttl = self._by_tenant, self._bare_ttl
        out = []
        add = out.append
        for tenant, pcs_id in keys:
            v = by_tenant.get(tenant, _EMPTY).get(pcs_id)
            if v is None:
                add(None)
            elif type(v) is tuple:  # self._split, inlined
                add(v[1] if v[0] > now else None)
            else:
                add(v if v.first_seen + bare_ttl > now else None)
        return out

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        check_key(tenant, pcs_id)
        return self._put_many([(tenant, pcs_id, outcome)], now, check_ttl(ttl_s, self.ttl_s))[0]

    def put_many_if_absent(self, items, now, ttl_s=None):
        """:meth:`put_if_absent` of each item in order, in one loop under one lock (the same
        answers and the same entries: a later item sees an earlier item's write)."""
        check_keys(items)
        if not items:
            return []
        return self._put_many(items, now, check_ttl(ttl_s, self.ttl_s))

    def _put_many(self, items, now: float, ttl: float) -> list:
        """The puts of validated ``items`` at ``now`` with ``ttl``."""
        by_tenant, bare_ttl = self._by_tenant, self._bare_ttl
        out = []
        add = out.append
        with self._lock:
            last_now, last_ttl, expiry = self._last_expiry
            if now != last_now or ttl != last_ttl:
                expiry = now + ttl
                self._last_expiry = (now, ttl, expiry)
            # a bare entry's expiry is its outcome's first_seen + the store's TTL: only a put at
            # the outcome's own ``now`` (its first_seen, a float) with that TTL is held bare
            bare_ttl_put = ttl == bare_ttl
            wrote = False
            keys = None
            last_tenant = None
            for tenant, pcs_id, outcome in items:
                if tenant is not last_tenant or keys is None:
                    keys = by_tenant.get(tenant)
                    if keys is None:
                        keys = by_tenant[tenant] = {}
                    last_tenant = tenant
                hit = keys.get(pcs_id)
                if hit is not None:
                    if type(hit) is tuple:  # self._split, inlined
                        if hit[0] > now:
                            add((False, hit[1]))
                            continue
                    elif hit.first_seen + bare_ttl > now:
                        add((False, hit))
                        continue
                first_seen = getattr(outcome, "first_seen", None)
                bare = bare_ttl_put and type(first_seen) is float and first_seen == now
                keys[pcs_id] = outcome if bare else (expiry, outcome)
                wrote = True
                add((True, outcome))
            if wrote and expiry < self._min_expiry:
                self._min_expiry = expiry
        return out

    def delete_copies(self, items, now: float) -> int:
        """:meth:`MemoryStore.delete_copies` on this layout (the same answers and entries)."""
        check_keys(items)
        n = 0
        with self._lock:
            for t, p, o in items:
                keys = self._by_tenant.get(t, _EMPTY)
                v = keys.get(p)
                if v is None:
                    continue
                exp, held = self._split(v)
                if exp > now and held == o:
                    del keys[p]
                    n += 1
        return n

    def _unsorted_live(self, now: float) -> list:
        split = self._split
        with self._lock:
            if now < self._min_expiry:
                return [(t, p, split(v)[1]) for t, keys in self._by_tenant.items() for p, v in keys.items()]
            return [(t, p, o) for t, keys in self._by_tenant.items() for p, v in keys.items()
                    for exp, o in (split(v),) if exp > now]

    def sample(self, n: int, seed: int, now: float) -> list:
        """:meth:`MemoryStore.sample`'s answer -- the ``n`` live entries of smallest
        :func:`~flk.impl.dedup.base.sample_rank`, in rank order -- without a Python call per
        entry: each tenant's ranks hashed in a comprehension and ``(rank, tenant, pcs_id)``
        compared as tuples (the order of the reference's key; a key is one tenant and
        pcs_id, so no two compare equal), :data:`_HASH_CHUNK` keys at a time (the sample
        so far plus the next chunk: no list of every entry)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        best: list = []
        split = self._split
        with self._lock:
            live = now < self._min_expiry  # no entry can have expired
            for t, keys in self._by_tenant.items():
                ps = list(keys) if live else [p for p, v in keys.items() if split(v)[0] > now]
                head = f"{seed}|{t}|"
                for at in range(0, len(ps), _HASH_CHUNK):
                    part = ps[at:at + _HASH_CHUNK]
                    ranks = [sha256(f"{head}{p}".encode()).hexdigest() for p in part]
                    best = heapq.nsmallest(n, chain(best, zip(ranks, repeat(t), part)))
            by_tenant = self._by_tenant
            return [(t, p, split(by_tenant[t][p])[1]) for _, t, p in best]

    def count(self, now: float) -> int:
        split = self._split
        with self._lock:
            if now < self._min_expiry:
                return sum(len(keys) for keys in self._by_tenant.values())
            return sum(1 for keys in self._by_tenant.values() for v in keys.values() if split(v)[0] > now)

    def scan_all(self, now: float) -> list:
        """Sorted tenant by tenant and key by key: no sort key tuple per entry."""
        out: list = []
        add = out.append
        bare_ttl = self._bare_ttl
        with self._lock:
            for t in sorted(self._by_tenant):
                keys = self._by_tenant[t]
                for p in sorted(keys):
                    v = keys[p]
                    if type(v) is tuple:  # self._split, inlined
                        if v[0] > now:
                            add((t, p, v[1]))
                    elif v.first_seen + bare_ttl > now:
                        add((t, p, v))
        return out

    def final_rows(self, region: str, now: float, order: KeyOrder, seen: dict) -> Iterator[tuple]:
        """The ``final.entry`` rows of :meth:`scan_all`'s entries, in its order, made as they
        are read (no list of entries): ``(region, tenant, pcs_id, digest, status, body_sha)``,
        ``body_sha`` the first 16 hex digits of SHA-256 of the body (:func:`flk.sim.region.body_sha`).
        ``order`` sorts each tenant's keys (once for every store holding the same keys);
        ``seen``, shared by the calls for the regions' stores: tenant -> (the key order, the
        outcome and body_sha -- 8 bytes -- at each position) of the last store read with that order, so
        an outcome object at the same key in the next region's store (the regions share
        equal outcomes: :meth:`flk.sim.world.World.shared_outcome`) is not hashed again.

        One tenant's rows are made when the reader reaches them; while no entry can have
        expired (``now`` before the earliest expiry written) a tenant's rows are columns
        zipped at C speed -- no Python frame per row."""
        return chain.from_iterable(self._tenant_rows(region, t, now, order, seen) for t in sorted(self._by_tenant))

    def _tenant_rows(self, region: str, t: str, now: float, order: KeyOrder, seen: dict):
        """The rows of tenant ``t`` (see :meth:`final_rows`): an iterator."""
        keys = self._by_tenant[t]
        ps = order.sorted(t, keys)
        prev = seen.get(t)
        if prev is None or prev.ps is not ps:
            # the hashes as 8 bytes each (16 hex digits) in one bytearray: no string per key
            prev = seen[t] = _Seen(ps, [None] * len(ps), bytearray(8 * len(ps)))
        if not now < self._min_expiry:  # an entry may have expired: row by row
            return self._tenant_rows_checked(region, t, now, keys, prev)
        objs = list(map(keys.__getitem__, ps))
        if tuple in set(map(type, objs)):  # some entries hold (expiry, outcome): self._split
            objs = [v[1] if v.__class__ is tuple else v for v in objs]
        n = len(objs)
        if not n:
            return iter(())
        prev.update(objs)
        hexes = prev.shas.hex()
        return zip(repeat(region, n), repeat(t, n), ps, prev.digests, prev.statuses,
                   map(hexes.__getitem__, map(slice, range(0, 16 * n, 16), range(16, 16 * n + 16, 16))), strict=True)

    def _tenant_rows_checked(self, region: str, t: str, now: float, keys: dict, prev: _Seen) -> Iterator[tuple]:
        bare_ttl = self._bare_ttl
        ps, outs, shas = prev.ps, prev.outs, prev.shas
        for i, p in enumerate(ps):
            v = keys[p]
            if type(v) is tuple:  # self._split, inlined
                if v[0] <= now:
                    continue
                o = v[1]
            elif v.first_seen + bare_ttl > now:
                o = v
            else:
                continue
            at = 8 * i
            if outs[i] is o:
                sha = shas[at:at + 8].hex()
            else:
                head = sha256(o.body).digest()[:8]
                shas[at:at + 8] = head
                outs[i] = o
                prev.stale()
                sha = head.hex()
            yield region, t, p, o.payload_digest, o.status, sha

    def peek(self, tenant: str, pcs_id: str):
        """The outcome held for the key, expired or not, without a side effect (for sharing
        equal outcomes between regions: :meth:`flk.sim.world.World.shared_outcome`)."""
        v = self._by_tenant.get(tenant, _EMPTY).get(pcs_id)
        return None if v is None else self._split(v)[1]


_EMPTY: dict = {}
_DIGEST, _STATUS, _ORIGIN = attrgetter("payload_digest"), attrgetter("status"), attrgetter("region")


class _Seen:
    """What :meth:`SimMemoryStore.final_rows` keeps of one tenant's outcomes in the order
    ``ps`` for the next store read with that order (every region's store holds the same keys
    and, through :meth:`flk.sim.world.World.shared_outcome`, mostly the same outcome objects):
    the outcome at each position (``outs``), its body's SHA-256 head (``shas``, 8 bytes each),
    its payload digest and status, and -- asked by :meth:`origins` -- its origin region
    (the authoritative stores' rows read them: :meth:`flk.sim.replication.CompactAuthoritativeStore.final_auth_rows`).
    Only the positions holding another object are read again. ``digests``, ``statuses`` and
    ``origins`` are replaced, never changed in place, so the rows of an earlier store keep
    theirs."""

    __slots__ = ("ps", "outs", "shas", "digests", "statuses", "_origins")

    def __init__(self, ps: list, outs: list, shas: bytearray) -> None:
        self.ps, self.outs, self.shas = ps, outs, shas
        self.digests: list | None = []  # None: stale (a row-by-row read changed outs)
        self.statuses: list | None = []
        self._origins: list | None = None

    def changed(self, objs: list) -> list[int]:
        """The positions where ``objs`` holds another object than ``outs``."""
        return list(compress(range(len(objs)), map(is_not, objs, self.outs)))

    def update(self, objs: list) -> None:
        """``outs`` := ``objs`` (one outcome per position of ``ps``), the columns with them."""
        outs, shas = self.outs, self.shas
        if outs and outs[0] is None:  # the first store read with this order: hash every body
            n = len(objs)
            for at in range(0, n, _HASH_CHUNK):  # in chunks: no list of a hash per key
                part = objs[at:at + _HASH_CHUNK]
                shas[8 * at:8 * (at + len(part))] = b"".join([sha256(o.body).digest()[:8] for o in part])
            outs[:] = objs
            self.digests, self.statuses = list(map(_DIGEST, objs)), list(map(_STATUS, objs))
            self._origins = None
            return
        changed = self.changed(objs)
        for i in changed:  # only another object is hashed
            shas[8 * i:8 * i + 8] = sha256(objs[i].body).digest()[:8]
            outs[i] = objs[i]
        if self.digests is None:  # a row-by-row read changed outs: every column is read again
            self.digests, self.statuses = list(map(_DIGEST, objs)), list(map(_STATUS, objs))
            return
        if not changed:
            return
        digests, statuses, origins = list(self.digests), list(self.statuses), self._origins
        origins = None if origins is None else list(origins)
        for i in changed:  # ... and read
            o = objs[i]
            digests[i], statuses[i] = o.payload_digest, o.status
            if origins is not None:
                origins[i] = o.region
        self.digests, self.statuses, self._origins = digests, statuses, origins

    def stale(self) -> None:
        """``outs`` changed without the columns (a row-by-row read): they are read again."""
        self.digests = self.statuses = self._origins = None

    def origins(self) -> list:
        """The origin region of the outcome at each position (read once)."""
        if self._origins is None:
            self._origins = list(map(_ORIGIN, self.outs))
        return self._origins


_HASH_CHUNK = 4096  # final_rows hashes the bodies of this many keys at a time


class KeyOrder:
    """Each tenant's keys sorted, shared by the stores that hold the same keys: at the end of
    a run every region's store and reconciler hold the same keys (once converged), so one
    sort serves them all. A key set is the last one sorted when it has as many keys and
    holds every key of that sorted list (no copy of a key set is kept)."""

    def __init__(self) -> None:
        self._last: dict[str, list[str]] = {}  # tenant -> its keys as last sorted

    def sorted(self, tenant: str, keys) -> list[str]:
        """``sorted(keys)`` (``keys``: a dict or set of one tenant's pcs_ids)."""
        last = self._last.get(tenant)
        if last is not None and len(last) == len(keys) and all(map(keys.__contains__, last)):
            return last
        out = self._last[tenant] = sorted(keys)
        return out


class StoreTopology:
    """The inner store of a region plus handles for faults."""

    def __init__(self, cfg: dict) -> None:
        kind = cfg.get("dedup", "memory")
        if kind not in STORE_KINDS:
            raise ValueError(f"dedup must be one of {STORE_KINDS}")
        self.kind = kind
        self.shards: dict[str, OutageStore] = {}
        self.cold: MemoryObjectStore | None = None
        self.migration: dict | None = None
        n = int(cfg.get("shards", 3))
        if kind == "memory":
            self.store = SimMemoryStore()
        elif kind == "sharded":
            self.shards = {f"s{i}": OutageStore(MemoryStore()) for i in range(n)}
            self.store = ShardedStore(dict(self.shards), probe_interval_s=1.0)
        elif kind == "tiered":
            self.cold = MemoryObjectStore()
            ttl = TierTTL(hot_s=float(cfg.get("hot_s", 1.0)), warm_s=float(cfg.get("warm_s", 3.0)))
            self.store = TieredStore(MemoryStore(), MemoryStore(), self.cold, ttl=ttl)
        else:
            self.shards = {f"s{i}": OutageStore(MemoryStore()) for i in range(n + 1)}
            names = sorted(self.shards)
            self.old = ShardedStore({k: self.shards[k] for k in names[:n]}, probe_interval_s=1.0)
            self.new = ShardedStore(dict(self.shards), probe_interval_s=1.0)
            self.store = DualWriteStore(self.old, self.new, "planned")
            self.old_spec = RingSpec({k: f"sim://{k}" for k in names[:n]})
            self.new_spec = RingSpec({k: f"sim://{k}" for k in names})

    def new_process(self) -> None:
        """A region's process started: its sharded stores' view of their shards' health is a
        new client's (flk serve opens its store afresh at each start), not the dead process's."""
        for store in (self.store, getattr(self, "old", None), getattr(self, "new", None)):
            if isinstance(store, ShardedStore):
                store.forget_health()

    def observed_count(self, now: float) -> int:
        """Live keys as the simulator's observer sees them (the ground truth, never through an
        outage): the store's own count, or, when a shard is down (an outage, or the sharded
        store's own health view), the shards' inner stores. An observer's figure only: no
        region reads it, and no store or breaker state changes."""
        try:
            return self.store.count(now)
        except StoreUnavailable:
            return len(self._inner_entries(now))

    def _inner_entries(self, now: float) -> list:
        """Every live entry of the shards' inner stores, past any outage; a key held by two
        shards (mid-migration) once, from the first shard in name order."""
        seen: dict = {}
        for name in sorted(self.shards):
            for e in iter_entries(self.shards[name].inner, now):
                seen.setdefault((e[0], e[1]), e)
        return [seen[k] for k in sorted(seen)]

    def scan_all(self, now: float) -> list:
        """Every live entry (the final state the checkers compare against); of a sharded store
        every copy each shard holds (``every_copy``): copies that disagree are a violation."""
        if isinstance(self.store, SimMemoryStore):
            return self.store.scan_all(now)
        copies = getattr(self.store, "every_copy", None)  # a sharded store: every shard's copy, to compare
        try:
            out = copies(now) if copies is not None else list(iter_entries(self.store, now))
        except StoreUnavailable:  # a shard still out at the end: the observer reads past it
            return self._inner_entries(now)
        return sorted(out, key=lambda e: (e[0], e[1]))

    # -- a live migration, one step per call ------------------------------------
    def migrate_steps(self, now_fn, batch: int = 200, max_rounds: int = 3, prune: bool = True):
        """A generator of (phase, detail) the world runs as a simulated process:
        each yield is a point where simulated time passes. The operator's
        procedure of ``flk dedup-migrate``: dual write, copy, verify; keys that
        verify finds missing (writes whose mirror failed behind the copy cursor)
        are handled by copying again from the start and verifying again; only
        if that keeps failing is the migration rolled back. After the cutover the
        catch-up copies what the new ring lacks before cleanup, and after cleanup the
        prune deletes the copies moved keys left in their old shards (SPEC 13.4)."""
        state = new_state(self.old_spec, self.new_spec, now_fn())
        self.migration = state
        transition(state, "dual_write", now_fn())
        self.store.set_phase("dual_write")
        yield "dual_write", {}
        for rnd in range(1, max_rounds + 1):
            if rnd > 1:  # copy --restart
                state["copy"] = new_state(self.old_spec, self.new_spec, now_fn())["copy"]
            yield from self._retrying("copy", state, lambda: copy_step(state, self.old, self.new, now_fn(), batch),
                                      "copy")
            if state["phase"] == "dual_write":
                transition(state, "copied", now_fn())
                self.store.set_phase("copied")
            reset_verify(state)
            yield from self._retrying("verify", state,
                                      lambda: verify_step(state, self.old, self.new, now_fn(), batch), "verify")
            yield "settle", {}
            yield from self._retrying(None, state, lambda: settle_suspects(state, self.old, self.new, now_fn()),
                                      "settle")
            v = state["verify"]
            if not (v["missing"] or v["different"]):
                break
            yield "recopy", {"round": rnd, "missing": v["missing"], "different": v["different"]}
        else:
            transition(state, "rolled_back", now_fn())
            self.store.set_phase("rolled_back")
            yield "rolled_back", {}
            return
        for ph in ("verified", "cut_over"):
            transition(state, ph, now_fn())
            self.store.set_phase(ph)
            yield ph, {}
        yield from self._cleanup_steps(state, now_fn, batch, prune)

    def _cleanup_steps(self, state: dict, now_fn, batch: int, prune: bool):
        """From cut_over: the catch-up, cleanup, then (``prune``) the prune of the moved keys'
        old copies."""
        # cleanup needs a clean catch-up (SPEC 13.4)
        yield from self._retrying("catchup", state, lambda: catchup_step(state, self.old, self.new, now_fn(), batch),
                                  "catchup")
        c = state["catchup"]
        yield "caught_up", {"copied": c["copied"], "different": c["different"]}
        if c["different"]:
            return  # cleanup is refused: the migration stays in cut_over (both rings kept)
        transition(state, "cleaned", now_fn())
        self.store.set_phase("cleaned")
        yield "cleaned", {}
        if prune:  # the moved keys' old copies (SPEC 13.4)
            yield from self._retrying("prune", state, lambda: prune_step(state, self.new, now_fn(), batch), "prune")
        p = state["prune"]
        self.store.pruned = bool(p["done"])  # as a server reads it from the state file
        if prune:
            yield "pruned", {"deleted": p["deleted"], "missing": p["missing"], "different": p["different"]}

    @staticmethod
    def _retrying(progress_key, state, step, label):
        """Run ``step`` until ``state[progress_key]["done"]`` (or once, for None), yielding
        between calls (``settle`` while a pass waits to begin: the catch-up and the prune);
        an unreachable shard leaves the checkpoint where it was: retry."""
        while True:
            try:
                out = step()
            except StoreUnavailable as exc:
                yield "retry", {"step": label, "why": str(exc)[:60]}
                continue
            if progress_key is None:
                return
            yield ("settle", {}) if out.get("settling") else (label, out)
            if state[progress_key]["done"]:
                return
