"""Cross-region replication in the simulator: the real Shipper, Reader,
ReplayApplier and Reconciler (``flk.impl.replication.shipping``, ``.reading``, ``.applying``,
``flk.impl.replication.reconcile``),
driven by simulated time, with every cross-region byte on the simulated network.

Each region has its own object store (a topology node ``<region>/objstore``). Its
shipper uploads sealed WAL segments there over the region's local link; the store
then copies every shipped segment (with its manifest, as one message) to every
other region's store over the topology: store -> region -> other region -> its
store. A partition between regions cuts these copies (each attempt a recorded
``net.drop``); an undelivered copy is resent with backoff until it lands. Readers
read only their own region's store. Replication lag, RPO and conflicts therefore
follow link latency, loss, bandwidth and partitions.

The reconcilers' divergence summaries (``flk.impl.replication.divergence``) travel
the same way: each region's DivergenceDetector publishes its summary to its own
store, which copies it to the other regions' stores (message kind
``crr.summary``); a detector compares only the peer summaries that reached its
store, so a partition also cuts what the regions know of each other's state.
"""

from __future__ import annotations

import operator
import sys
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, repeat

from flk.impl.core.backoff import Backoff
from flk.impl.dedup import PartialUnavailable, StoreUnavailable, answered_part
from flk.impl.replication.applying import ReplayApplier, ReplayMemo
from flk.impl.replication.divergence import PREFIX as SUMMARY_PREFIX
from flk.impl.replication.divergence import SEVERITY_LEVEL, Alert, DivergenceDetector, settle_time
from flk.impl.replication.reading import Reader, Topology
from flk.impl.replication.reconcile import PENDING, AuthRecord, Reconciler, merge_outcomes
from flk.impl.replication.shipping import Shipper
from flk.impl.replication.stream import stream_name
from flk.impl.storage.objectstore import (
    ObjectNotFound,
    ObjectStoreUnavailable,
    check_key,
    check_metadata,
    check_prefix,
)
from flk.impl.storage.walformat import LOG_SUFFIX, MANIFEST_SUFFIX

from .topology import objstore_node

COPY = "crr.copy"
_REGION, _RECEIVED_AT = operator.attrgetter("region"), operator.attrgetter("received_at")
_DIGEST = operator.attrgetter("payload_digest")
_FIRST, _SECOND, _THIRD = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_PLAIN = {tuple}  # the type of a plain record in CompactAuthoritativeStore
SUMMARY = "crr.summary"  # a divergence summary on its way to the other regions


def settle_s(rep: dict) -> float:
    """A scenario's ``[replication] divergence_settle_s``, or the server's default of its periods
    (:func:`flk.impl.replication.divergence.settle_time`): the simulated regions' and the
    cluster runner's servers' detectors use the same."""
    return settle_time(rep.get("divergence_settle_s"), rep["ship_interval_s"], rep["read_interval_s"])


@dataclass
class PendingCopy:
    """A shipped segment (and its manifest) on its way to the other regions' stores."""

    objects: list[tuple[str, bytes, dict]]
    oldest: float  # simulated time (env seconds) the oldest record in it was received
    records: int
    waiting: set[str]  # destination regions it has not reached yet
    delivered_anywhere: bool = False
    attempts: int = 0
    next_send: float = 0.0
    kind: str = COPY  # COPY: a shipped segment; SUMMARY: a divergence summary (no records)


class Bucket:
    """One region's object store: objects with the simulated time they become visible.
    ``objects`` changes only through :meth:`add` and :meth:`forget` (and value updates of
    present keys), which keep ``keys`` -- every key, sorted -- so a listing reads only the
    keys under its prefix (a reader lists its sources' streams every poll)."""

    def __init__(self, fabric: ObjectFabric, region_id: str) -> None:
        self.fabric, self.region_id = fabric, region_id
        self.node = objstore_node(region_id)
        self.objects: dict[str, tuple[bytes, dict[str, str], float]] = {}
        self.keys: list[str] = []  # the keys of ``objects``, sorted (ASCII: the byte order of a listing)
        self.pending: dict[str, PendingCopy] = {}  # manifest key -> copy not yet everywhere
        self.mailbox = fabric.world.net.register(self.node, handler=partial(fabric.receive, self))

    def add(self, key: str, value: tuple[bytes, dict[str, str], float]) -> bool:
        """Store ``value`` under ``key`` unless the key is present; True if it was absent."""
        if key in self.objects:
            return False
        self.objects[key] = value
        keys = self.keys
        if not keys or keys[-1] < key:
            keys.append(key)
        else:
            insort(keys, key)
        return True

    def listed(self, prefix: str, now: float) -> list[str]:
        """The keys starting with ``prefix`` whose objects are visible at ``now``, sorted."""
        keys, objects = self.keys, self.objects
        lo = bisect_left(keys, prefix)
        # every key starting with ``prefix`` sorts before ``prefix`` with its last character
        # one code point up, every other key at or past ``lo`` after it
        if not prefix:
            hi = len(keys)
        elif prefix[-1] < "\U0010ffff":
            hi = bisect_left(keys, prefix[:-1] + chr(ord(prefix[-1]) + 1), lo)
        else:  # no code point after the last one
            hi = lo
            while hi < len(keys) and keys[hi].startswith(prefix):
                hi += 1
        return [key for key in keys[lo:hi] if objects[key][2] <= now]

    def oldest_unreplicated(self, anywhere: bool) -> float | None:
        """Oldest record time in a copy that has not reached every (``anywhere``: any) other region."""
        times = [p.oldest for p in self.pending.values()
                 if p.kind == COPY and not (anywhere and p.delivered_anywhere)]
        return min(times) if times else None

    def unreplicated_records(self) -> int:
        return sum(p.records for p in self.pending.values() if not p.delivered_anywhere)

    def forget(self, key: str) -> None:
        """A deleted object (a superseded summary) is no longer copied."""
        if self.objects.pop(key, None) is not None:
            self.keys.pop(bisect_left(self.keys, key))
        self.pending.pop(key, None)


class ObjectFabric:
    """Every region's object store and the copies between them over the simulated network."""

    def __init__(self, world) -> None:
        self.world = world
        cfg = world.scenario.data["replication"]
        self.retry_s = float(cfg["copy_retry_s"])
        self.retry_cap_s = max(self.retry_s, float(cfg["backoff_cap_s"]))
        self.available = True  # False: the object store service is down everywhere
        self.repaired: dict[str, bytes] = {}  # key -> the good bytes an operator re-uploaded
        self.buckets = {rid: Bucket(self, rid) for rid in world.region_ids}
        # every region reads every region's stream (its own too): a record is replayed once per region;
        # a segment is verified by its shipper, by start_copy and by every region's reader
        self.memo = ReplayMemo(uses=len(world.region_ids), segment_uses=len(world.region_ids) + 2)
        self.sharing = OutcomeSharing(world, uses=len(world.region_ids))  # every region writes every record

    def _now(self) -> float:
        return self.world.env.now

    def start_copy(self, bucket: Bucket, manifest_key: str) -> None:
        """A manifest landed: copy it with its segment to every other region."""
        seg_key = manifest_key[: -len(MANIFEST_SUFFIX)] + LOG_SUFFIX
        seg, manifest = bucket.objects.get(seg_key), bucket.objects[manifest_key]
        objects = [(manifest_key, manifest[0], manifest[1])]
        oldest, records = self._now(), 0
        if seg is not None:
            objects.insert(0, (seg_key, seg[0], seg[1]))
            stream, _, name = seg_key.rpartition("/")
            try:
                _, recs = self.memo.verified(stream, name, manifest[0], seg[0], None)
                records = len(recs)
                oldest = self._oldest(recs, oldest)
            except Exception:  # noqa: BLE001 - a corrupted segment is still copied; readers reject it
                records = int(seg[1].get("count", "0"))
        others = {rid for rid in self.buckets if rid != bucket.region_id}
        if others:
            copy = PendingCopy(objects, oldest, records, others, next_send=manifest[2])
            bucket.pending[manifest_key] = copy

    def _oldest(self, recs: list, default: float) -> float:
        """The simulated time the oldest of ``recs`` was received (``default`` if none). A
        segment's records are one region's; while that region's clock never stepped, its
        true time is its stamp less one offset -- monotone: one conversion, of the least stamp."""
        if not recs:
            return default
        world = self.world
        regions = set(map(_REGION, recs))
        if len(regions) == 1:
            (region,) = regions
            if len(world.clock_steps[region]) == 1:
                return world.true_time(region, min(map(_RECEIVED_AT, recs)))
        return min(world.true_time(r.region, r.received_at) for r in recs)

    def start_summary_copy(self, bucket: Bucket, key: str) -> None:
        """A divergence summary landed: copy it to every other region, as segments are."""
        data, meta, visible = bucket.objects[key]
        others = {rid for rid in self.buckets if rid != bucket.region_id}
        if others:
            bucket.pending[key] = PendingCopy([(key, data, meta)], self._now(), 0, others, next_send=visible,
                                              kind=SUMMARY)

    def run(self, bucket: Bucket):
        """Send due copies (first when the upload is visible, then with backoff) and receive copies."""
        while True:
            now = self._now()
            for key, copy in list(bucket.pending.items()):
                if copy.next_send <= now:
                    self._send(bucket, key, copy, now)
            due = [c.next_send for c in bucket.pending.values()]
            yield self.world.env.timeout(max(0.001, min([self.retry_s, *[d - now for d in due]])))

    def _send(self, bucket: Bucket, key: str, copy: PendingCopy, now: float) -> None:
        size = sum(len(data) for _, data, _ in copy.objects)
        for dst in sorted(copy.waiting):
            self.world.net.send(bucket.node, objstore_node(dst), copy.kind,
                                {"key": key, "src": bucket.region_id, "objects": copy.objects,
                                 "oldest": copy.oldest, "records": copy.records}, size=size)
        copy.attempts += 1
        copy.next_send = now + min(self.retry_cap_s, self.retry_s * 2 ** (copy.attempts - 1))

    def receive(self, bucket: Bucket, msg) -> None:
        """A copy (or summary) reached ``bucket``'s store."""
        if not self.available:
            return  # lost: the sender resends until it lands
        body = msg.payload
        for key, data, meta in body["objects"]:
            # a copy sent before the operator's repair lands with the good bytes: the repair is
            # of the object, wherever it is, also in flight
            bucket.add(key, (self.repaired.get(key, data), meta, self._now()))
        source = self.buckets[body["src"]]
        copy = source.pending.get(body["key"])
        if copy is None or bucket.region_id not in copy.waiting:
            return
        copy.waiting.discard(bucket.region_id)
        copy.delivered_anywhere = True
        if copy.kind == SUMMARY:
            if not copy.waiting:
                del source.pending[body["key"]]
            return
        self.world.history.record(self._now(), "crr.copied", src=body["src"], dst=bucket.region_id,
                                  records=body["records"], age_s=round(self._now() - body["oldest"], 6))
        if not copy.waiting:
            del source.pending[body["key"]]

    def repair(self, keys: dict[str, bytes]) -> None:
        """An operator re-uploads good bytes for ``keys`` everywhere they were copied."""
        self.repaired.update(keys)
        for bucket in self.buckets.values():
            for key, original in keys.items():
                if key in bucket.objects:
                    _, meta, visible = bucket.objects[key]
                    bucket.objects[key] = (original, meta, visible)
            for copy in bucket.pending.values():
                copy.objects = [(k, keys.get(k, d), m) for k, d, m in copy.objects]


class RegionObjectView:
    """The ObjectStore interface of one region's own object store."""

    def __init__(self, fabric: ObjectFabric, region) -> None:
        self.fabric, self.region = fabric, region
        self.bucket = fabric.buckets[region.id]
        self.available = True  # False: this region cannot reach its object store
        self.corrupt_next_segment = False  # fault: the next uploaded segment gets one bit flipped
        self.corrupted: dict[str, bytes] = {}  # key -> the original bytes (for the repair)

    def _check(self) -> None:
        if not (self.available and self.fabric.available):
            raise ObjectStoreUnavailable(f"object store unreachable from {self.region.id}")
        if self.region.world.net.is_blocked(self.region.id, self.bucket.node):
            raise ObjectStoreUnavailable(f"the link from {self.region.id} to its object store is cut")

    def _now(self) -> float:
        return self.region.env.now

    def _visible(self, key: str):
        item = self.bucket.objects.get(key)
        if item is None or item[2] > self._now():
            return None
        return item

    def _upload_delay(self, size: int) -> float:
        net = self.region.world.net
        spec = net.link(self.region.id, self.bucket.node)
        return net._delay([(self.region.id, self.bucket.node)], [spec], self.region.rng, size)

    def put(self, key, data, metadata=None) -> bool:
        check_key(key)
        meta = check_metadata(metadata)
        self._check()
        if key in self.bucket.objects:
            return False
        data = bytes(data)
        if self.corrupt_next_segment and key.endswith(LOG_SUFFIX) and len(data) > 32:
            self.corrupt_next_segment = False
            self.corrupted[key] = data
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0x10
            data = bytes(flipped)
            self.region.world.history.record(self._now(), "crr.corrupted", region=self.region.id, key=key)
        self.bucket.add(key, (data, meta, self._now() + self._upload_delay(len(data))))
        if key.endswith(MANIFEST_SUFFIX):
            self.fabric.start_copy(self.bucket, key)
        elif key.startswith(SUMMARY_PREFIX + "/"):
            self.fabric.start_summary_copy(self.bucket, key)
        return True

    def repair(self) -> int:
        """An operator re-uploads the corrupted segments from the source's sealed WAL segment."""
        self.fabric.repair(self.corrupted)
        n, self.corrupted = len(self.corrupted), {}
        return n

    def get(self, key) -> bytes:
        self._check()
        item = self._visible(key)
        if item is None:
            raise ObjectNotFound(key)
        return item[0]

    def get_metadata(self, key) -> dict:
        self._check()
        item = self._visible(key)
        if item is None:
            raise ObjectNotFound(key)
        return dict(item[1])

    def exists(self, key) -> bool:
        self._check()
        return key in self.bucket.objects  # the writer's existence check sees its own in-flight upload

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        self._check()
        return self.bucket.listed(prefix, self._now())

    def delete(self, key) -> None:
        self._check()
        self.bucket.forget(key)


class CompactAuthoritativeStore:
    """The reconciler's in-memory authoritative store (the contract of
    :class:`flk.impl.replication.reconcile.MemoryAuthoritativeStore`), holding the
    common record -- one outcome seen, no conflict state -- as ``(outcome, changed_at)``
    and rebuilding the equal :class:`AuthRecord` on read: a million-key run keeps
    three of these, one per region."""

    def __init__(self) -> None:
        self._d: dict[str, dict[str, AuthRecord | tuple]] = {}  # tenant -> pcs_id -> record
        self._n = 0

    def get(self, tenant: str, pcs_id: str) -> AuthRecord | None:
        v = self._d.get(tenant, _EMPTY).get(pcs_id)
        if v is None or isinstance(v, AuthRecord):
            return v
        o, changed_at = v
        rec = _new_record(AuthRecord)  # the frozen dataclass's fields set directly: AuthRecord(o, ..., changed_at)
        rec.__dict__.update(authoritative=o, seen=((o.payload_digest, int(o.status)),), state=None,
                            changed_at=changed_at, decided_by=None)
        return rec

    def put(self, tenant: str, pcs_id: str, rec: AuthRecord) -> None:
        a = rec.authoritative
        plain = rec.state is None and rec.decided_by is None and rec.seen == ((a.payload_digest, int(a.status)),)
        keys = self._d.setdefault(tenant, {})
        self._n += pcs_id not in keys
        keys[pcs_id] = (a, rec.changed_at) if plain else rec

    def put_first(self, tenant: str, pcs_id: str, outcome, now: float) -> None:
        """The record of a key seen for the first time (only ``outcome``, at ``now``):
        :meth:`Reconciler.observe_batch`'s shortcut for ``put(AuthRecord(outcome, ...))``."""
        keys = self._d.get(tenant)
        if keys is None:
            keys = self._d[tenant] = {}
        self._n += pcs_id not in keys
        keys[pcs_id] = (outcome, now)

    def observe_plain(self, reports: list, start: int, now: float) -> int:
        """:meth:`Reconciler.observe_batch`'s shortcut for the observations that leave a record
        plain, taken in order from ``reports[start]`` (``(tenant, pcs_id, outcome)``): a key
        seen for the first time gets ``(outcome, now)`` (as :meth:`put_first`), a re-delivery
        of the one outcome a plain record holds changes nothing (the merge finds the record as
        it is), and neither does an outcome of the same payload digest and status that the
        merge ranks after the held one (a duplicate's replay: the same seen pair, the held
        outcome stays authoritative -- :meth:`Reconciler._merged` answers the record itself).
        Answers the position of the first report that is none of these (``len(reports)``:
        none): the caller merges that one (another outcome, or a record with more than one
        outcome seen), then asks again from the next."""
        d = self._d
        last_tenant, keys = _EMPTY, _EMPTY  # _EMPTY: no tenant yet (never a report's)
        added = 0
        n = len(reports)
        i = start
        while i < n:
            tenant, pcs_id, outcome = reports[i]
            if tenant is not last_tenant:
                keys = d.get(tenant)
                if keys is None:
                    keys = d[tenant] = {}
                last_tenant = tenant
            v = keys.get(pcs_id)
            if v is None:
                added += 1
                keys[pcs_id] = (outcome, now)
            elif type(v) is not tuple or not (v[0] is outcome or v[0] == outcome or _ranked_after(outcome, v[0])):
                break
            i += 1
        self._n += added
        return i

    def items(self):
        for t in sorted(self._d):
            for p in sorted(self._d[t]):
                yield t, p, self.get(t, p)

    def final_rows(self):
        """``(tenant, pcs_id, authoritative outcome, conflict)`` in :meth:`items` order, without
        rebuilding an :class:`AuthRecord` per plain key (the final state of a run)."""
        for t in sorted(self._d):
            keys = self._d[t]
            for p in sorted(keys):
                v = keys[p]
                if isinstance(v, AuthRecord):
                    yield t, p, v.authoritative, v.conflict
                else:
                    yield t, p, v[0], False

    def final_auth_rows(self, region: str, order, seen: dict | None = None) -> Iterator[tuple]:
        """The ``final.auth`` rows of :meth:`final_rows`, in its order, made as they are read:
        ``(region, tenant, pcs_id, authoritative digest, its origin region, conflict)``;
        ``order`` (:class:`flk.sim.stores.KeyOrder`) sorts each tenant's keys. A tenant whose
        records are all plain is zipped from columns at C speed (no Python frame per row);
        ``seen``: what :meth:`flk.sim.stores.SimMemoryStore.final_rows` kept of the stores'
        outcomes in the same order -- the digest and origin of a position holding the same
        outcome object are taken from there, not read again."""
        return chain.from_iterable(self._tenant_auth_rows(region, t, order, seen) for t in sorted(self._d))

    def _tenant_auth_rows(self, region: str, t: str, order, seen: dict | None = None) -> Iterator[tuple]:
        keys = self._d[t]
        ps = order.sorted(t, keys)
        vs = list(map(keys.__getitem__, ps))
        if set(map(type, vs)) <= _PLAIN:  # every record plain: (outcome, changed_at)
            auths = list(map(_FIRST, vs))
            n = len(auths)
            known = seen.get(t) if seen is not None else None
            if known is not None and known.ps is ps and known.digests is not None and n and known.outs[0] is not None:
                digests, origins = known.digests, known.origins()
                changed = known.changed(auths)
                if changed:  # copies: the store's columns stay as they are
                    digests, origins = list(digests), list(origins)
                    for i in changed:
                        digests[i], origins[i] = auths[i].payload_digest, auths[i].region
                return zip(repeat(region, n), repeat(t, n), ps, digests, origins, repeat(False, n), strict=True)
            return zip(repeat(region, n), repeat(t, n), ps, map(_DIGEST, auths), map(_REGION, auths),
                       repeat(False, n), strict=True)
        return self._tenant_auth_rows_checked(region, t, ps, vs)

    @staticmethod
    def _tenant_auth_rows_checked(region: str, t: str, ps: list, vs: list) -> Iterator[tuple]:
        for p, v in zip(ps, vs, strict=True):
            if type(v) is tuple:
                a = v[0]
                yield region, t, p, a.payload_digest, a.region, False
            else:
                a = v.authoritative
                yield region, t, p, a.payload_digest, a.region, v.conflict

    def count(self) -> int:
        return self._n


_EMPTY: dict = {}
_new_record = object.__new__


def _ranked_after(outcome, held) -> bool:
    """Whether observing ``outcome`` leaves a plain record holding ``held`` as it is: the
    same ``(payload digest, status)`` pair -- the record's one seen pair -- and the merge
    keeps ``held`` authoritative (:func:`merge_outcomes`, the reconciler's own rule)."""
    status = outcome.status
    return (status.__class__ is int and status == int(held.status) and outcome.payload_digest == held.payload_digest
            and merge_outcomes(held, outcome) is held)


class OutcomeSharing:
    """The rows a region's store gets for a replayed write's items ``(tenant, pcs_id,
    outcome)``: each pcs_id interned (one string per key for every region's store and
    reconciler) and each outcome :meth:`World.shared_outcome` -- asked once per list of
    items: the regions' appliers replay the very same lists of write objects (a
    :class:`ReplayMemo` plan), so the first region's rows serve the others. A row holds
    the outcome or an equal one -- a value the same either way -- so a dropped entry is
    only asked again. An entry goes after ``uses`` answers or once ``capacity`` newer
    ones came."""

    def __init__(self, world, uses: int, capacity: int = 512) -> None:
        self.world, self.uses, self.capacity = world, int(uses), int(capacity)
        self._d: dict[int, list] = {}  # id(items) -> [items (kept alive), rows, answers left]

    def rows(self, items: list) -> list:
        d = self._d
        hit = d.get(id(items))
        if hit is not None and hit[0] is items:
            hit[2] -= 1
            if hit[2] <= 0:
                del d[id(items)]
            return hit[1]
        ts, ps = list(map(_FIRST, items)), list(map(sys.intern, map(_SECOND, items)))
        rows = list(zip(ts, ps, map(self.world.shared_outcome, ts, ps, map(_THIRD, items)), strict=True))
        if self.uses > 1:
            d[id(items)] = [items, rows, self.uses - 1]
            if len(d) > self.capacity:
                del d[next(iter(d))]
        return rows


class SharingStore:
    """The region's dedup store as the replay applier sees it: a write of an outcome equal
    to the one its origin region stored stores that same object (:meth:`World.shared_outcome`
    through :class:`OutcomeSharing`). :meth:`shared_rows` answers the same for the outcomes
    of the last write (the applier then reports them to the reconciler) without looking
    again. A put's winner that is the shared object of its write is answered as the write's
    own outcome (equal values: the applier then sees it is the outcome it wrote without
    comparing them field by field)."""

    def __init__(self, store, world, sharing: OutcomeSharing | None = None) -> None:
        self.store, self.world = store, world
        self.sharing = sharing if sharing is not None else OutcomeSharing(world, 1)
        self._items: list = []  # the last write's items ...
        self._rows: list = []  # ... and what was stored for them: (tenant, interned pcs_id, shared outcome)
        self._last: dict[int, tuple] | None = None  # id(outcome written) -> (it, its row), when asked

    def shared_rows(self, reports: list) -> list:
        """``reports`` -- ``(tenant, pcs_id, outcome)``, the applier's reports of the last
        write: each written outcome, maybe followed by the winner the store held for its key
        -- as rows, each pcs_id interned and each outcome the shared one: the stored rows
        themselves for the write's items; a winner is an outcome a store holds already, so
        it is its own shared object (the value is the same either way)."""
        items, rows = self._items, self._rows
        if len(reports) == len(items) and all(map(operator.is_, reports, items)):
            return rows
        out = []
        k, n, prev = 0, len(items), None
        for rep in reports:
            if k < n and rep is items[k]:
                prev = rows[k]
                k += 1
            elif prev is not None and rep[1] == prev[1] and rep[0] == prev[0]:  # the winner for prev's key
                out.append((prev[0], prev[1], rep[2]))
                continue
            else:
                prev = self._row_of(*rep)
            out.append(prev)
        return out

    def _row_of(self, tenant: str, pcs_id: str, outcome) -> tuple:
        """The row of a report that is not one of the write's items (built by the applier's
        :meth:`~flk.impl.replication.applying.ReplayApplier.apply` path)."""
        last = self._last
        if last is None:
            last = self._last = {id(o): (o, row) for (_, _, o), row in zip(self._items, self._rows, strict=True)}
        hit = last.get(id(outcome))
        if hit is not None and hit[0] is outcome and hit[1][1] == pcs_id and hit[1][0] == tenant:
            return hit[1]
        pcs_id = sys.intern(pcs_id)
        return tenant, pcs_id, self.world.shared_outcome(tenant, pcs_id, outcome)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        pcs_id = sys.intern(pcs_id)
        row = (tenant, pcs_id, self.world.shared_outcome(tenant, pcs_id, outcome))
        self._items, self._rows, self._last = [(tenant, pcs_id, outcome)], [row], None
        won, winner = self.store.put_if_absent(*row, now, ttl_s)
        return won, (outcome if winner is row[2] else winner)

    def put_many_if_absent(self, items, now, ttl_s=None):
        rows = self.sharing.rows(items)
        self._items, self._rows, self._last = items, rows, None
        try:
            results = self.store.put_many_if_absent(rows, now, ttl_s)
            failed = ()
        except StoreUnavailable as exc:  # a partial answer to the rows is one to the caller's items
            part = answered_part(exc, rows)
            if part is None:
                raise
            results, failed, reason = part[0], part[1], str(exc)
            results = [(False, None) if i in failed else r for i, r in enumerate(results)]
        if results.__class__ is not list:
            results = list(results)
        # (won, the write's own outcome) where the winner is the row's shared object (most),
        # else (won, the winner): the others are put right one by one
        out = list(zip(map(_FIRST, results), map(_THIRD, items), strict=True))
        for i in compress(range(len(rows)), map(operator.is_not, map(_SECOND, results), map(_THIRD, rows))):
            won, w = results[i]
            out[i] = (won, w)
        if failed:
            raise PartialUnavailable(reason, items, out, failed)
        return out

    def __getattr__(self, name):
        return getattr(self.store, name)


SEVERITIES = tuple(SEVERITY_LEVEL)  # ok < warning < critical


def worst_severity(alerts: list[Alert]) -> str:
    """The most severe of the comparisons with the peers ("none" when no peer summary arrived)."""
    if not alerts:
        return "none"
    return max((a.severity for a in alerts), key=SEVERITIES.index)


class RegionReplication:
    """Shipper + Reader + Reconciler of one region, rebuilt from durable state on restart."""

    def __init__(self, world, region, fabric: ObjectFabric) -> None:
        self.world, self.region = world, region
        cfg = world.scenario.data["replication"]
        self.cfg = cfg
        self.view = RegionObjectView(fabric, region)
        self.auth = CompactAuthoritativeStore()  # kept beside the local store; survives like the store
        self.reconciler = Reconciler(region.id, store=self.auth, mode=cfg["mode"])
        self.conflict_keys: set[tuple[str, str]] = set()  # keys whose record is a conflict (stays one)
        self.ship_stopped = False
        self.apply_lag_max_s = 0.0  # the readers' (every incarnation's) largest lag of a record applied when read
        self.parked = 0  # the reader's parked records at the last ``crr.parked`` event
        self.build()

    def build(self) -> None:
        r, cfg = self.region, self.cfg
        self.next_divergence = 0.0  # a fresh process checks at once (flk serve's CrrService)
        rng = self.world.streams.get(f"crr/{r.id}")
        backoff = Backoff(base_s=float(cfg["backoff_base_s"]), cap_s=float(cfg["backoff_cap_s"]))
        self.shipper = Shipper(r.wal, self.view, stream_name(r.id), "/crr/ship.json", fs=r.fs,
                               interval_s=float(cfg["ship_interval_s"]), backoff=backoff, rng=rng,
                               memo=self.view.fabric.memo, seal_lock=r.seal_lock)
        self.shipper.paused = self.ship_stopped
        # the operator's CRRPolicy (sim/operator.py) sets ``topology``; it survives a restart
        topo = getattr(self, "topology", None) or Topology.full_mesh(self.world.region_ids, r.id, include_self=True)
        self.sharing = SharingStore(r.store, self.world, self.view.fabric.sharing)
        applier = ReplayApplier(r.verifier, self.sharing, observer=self._observe, memo=self.view.fabric.memo,
                                observe_batch=self._observe_batch)
        self.reader = Reader(self.view, topo, applier, "/crr/read.json", fs=r.fs,
                             interval_s=float(cfg["read_interval_s"]), backoff=backoff, rng=rng,
                             on_reject=self._rejected)
        self.detector = DivergenceDetector(r.id, r.store, self.view, self.world.region_ids,
                                           n=int(cfg["divergence_sample"]),
                                           interval_s=float(cfg["divergence_interval_s"]),
                                           open_conflicts=self.open_conflicts, topology=lambda: self.reader.topology,
                                           settle_s=settle_s(cfg))

    def open_conflicts(self) -> int:
        """``reconciler.metrics()["open_conflicts"]`` without a sorted pass over every key:
        a record turns into a conflict only through :meth:`_observe` and stays one (its
        seen digests only grow), so the conflicts are ``conflict_keys``."""
        return sum(1 for t, p in self.conflict_keys if self.auth.get(t, p).state == PENDING)

    def _check_divergence(self, now: float) -> float:
        """The detector's own schedule (:meth:`DivergenceDetector.step`, as ``flk serve`` runs
        it): publish at the start of a period, compare half a period later; each comparison
        that read the peers' summaries is a ``crr.divergence`` event."""
        nxt = self.detector.step(now)
        alerts = self.detector.compared
        if alerts is not None:
            self.world.history.record(self.region.env.now, "crr.divergence", region=self.region.id,
                                      peers=len(alerts), worst=worst_severity(alerts))
        return nxt

    def _observe(self, tenant, pcs_id, outcome, now) -> None:
        self._observe_batch([(tenant, pcs_id, outcome)], now)

    def _observe_batch(self, reports, now) -> None:
        """The applier's reports to the reconciler (``ReplayApplier(observe_batch=...)``), each
        outcome the shared one and each pcs_id one string per key for every region's store
        and reconciler (:meth:`SharingStore.shared_rows`)."""
        conflicts = self.reconciler.observe_batch(self.sharing.shared_rows(reports), now)
        if conflicts:
            self.world.conflicts_seen.update(conflicts)
            self.conflict_keys.update(conflicts)

    def _rejected(self, exc) -> None:
        self.world.history.record(self.region.env.now, "crr.reject", region=self.region.id,
                                  segment=getattr(exc, "segment", ""), problems=len(getattr(exc, "problems", [])))

    def run(self):
        """Drive shipper and reader; pause while the region is down. One loop steps both: the
        reader's replay takes no simulated time, so shipping never waits behind it -- as in
        ``flk serve``, whose shipper has a thread of its own (:meth:`flk.impl.replication.service.CrrService.start`)."""
        env, r = self.region.env, self.region
        inc = None
        while True:
            if not r.up:
                yield env.timeout(0.05)
                continue
            if inc != r.incarnation:  # fresh process after a restart: rebuild from the disk
                if inc is not None:
                    self.build()
                inc = r.incarnation
            now = r.now()
            nxt_ship = self.shipper.step(now, env.now)  # env.now: the region's monotonic clock
            before = self.reader.applied_records
            nxt_read = self.reader.step(now)
            if self.reader.applied_records != before:
                self.world.history.record(env.now, "crr.applied", region=r.id,
                                          records=self.reader.applied_records - before)
            self._note_reader(env.now)
            if self.next_divergence - now > self.detector.interval_s + 1.0:
                self.next_divergence = now  # the wall clock stepped back: a step it left far ahead is due
            if now >= self.next_divergence:
                self.next_divergence = self._check_divergence(now)
            wait = max(0.01, min(nxt_ship, nxt_read, self.next_divergence) - now)
            yield env.timeout(min(wait, 1.0))

    def _note_reader(self, t: float) -> None:
        """Keep the reader's apply lag; a change of its parked records is a ``crr.parked`` event."""
        self.apply_lag_max_s = max(self.apply_lag_max_s, self.reader.apply_lag.max_s)
        parked = self.reader.parked_count
        if parked != self.parked:
            self.parked = parked
            self.world.history.record(t, "crr.parked", region=self.region.id, parked=parked)

    def ship_lag_s(self) -> float:
        """Simulated age of the oldest record in this region's WAL not yet uploaded (while the
        region is down too: what it acked and has not shipped keeps ageing). Measured in
        simulated time (:meth:`World.true_time`), not on the region's possibly skewed clock: the
        study's ground truth (SPEC 11.9 rule 6). What the region itself exports as
        ``flk_crr_replication_lag_seconds`` is :meth:`exported_lag_s`."""
        oldest = self.shipper.oldest_unshipped
        if oldest is None:
            return 0.0
        return max(0.0, self.region.env.now - self.world.true_time(self.region.id, oldest))

    def exported_lag_s(self) -> float:
        """The region's ``flk_crr_replication_lag_seconds`` as ``flk serve`` computes it: its own
        shipper's gauge (:meth:`flk.impl.replication.shipping.Shipper.lag_s`) on its wall clock and
        its monotonic clock -- simulated time, which no clock fault moves -- never the true time
        of a stamp, which a deployed region cannot know."""
        region = self.region
        return self.shipper.lag_s(region.now(), region.env.now)

    def lag_s(self) -> float:
        """Age of the oldest record this region acked that is not yet in every other region's store."""
        shipped = self.view.bucket.oldest_unreplicated(anywhere=False)
        copy_lag = 0.0 if shipped is None else max(0.0, self.region.env.now - shipped)
        return max(self.ship_lag_s(), copy_lag)

    def rpo(self) -> dict:
        """At a loss of this region: what it acked that no other region has yet (age and count)."""
        region, shipper = self.region, self.shipper
        oldest = self.view.bucket.oldest_unreplicated(anywhere=True)
        copy_age = 0.0 if oldest is None else max(0.0, region.env.now - oldest)
        return {"rpo_s": round(max(self.ship_lag_s(), copy_age), 6),
                "unshipped": max(0, region.wal.next_index - shipper.watermark),
                "uncopied": self.view.bucket.unreplicated_records()}
