"""Cross-region replication in the simulator: the real Shipper, Reader,
ReplayApplier and Reconciler (``flk.impl.replication.crr`` / ``flk.impl.replication.reconcile``),
driven by simulated time.

The object store is one :class:`flk.impl.storage.objectstore.MemoryObjectStore`-like
space shared by the regions, seen through :class:`RegionObjectView`: an upload
becomes visible to readers only after the uploading region's link latency, a
region can be cut off from the store (``objstore_down``), and the whole store
can be down. Shipping can be stopped (``ship_stop``: the inter-region
partition of the geo-DR scenarios).
"""

from __future__ import annotations

from flk.impl.core.backoff import Backoff
from flk.impl.replication.crr import Reader, ReplayApplier, Shipper, Topology, stream_name
from flk.impl.replication.reconcile import MemoryAuthoritativeStore, Reconciler
from flk.impl.storage.objectstore import (
    ObjectNotFound,
    ObjectStoreUnavailable,
    check_key,
    check_metadata,
    check_prefix,
)

from .rng import sample


class SharedObjectSpace:
    """All objects with the simulated time they become visible."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str], float]] = {}
        self.available = True


class RegionObjectView:
    """The ObjectStore interface as one region sees the shared space."""

    def __init__(self, space: SharedObjectSpace, region, latency_ms) -> None:
        self.space, self.region, self.latency_ms = space, region, latency_ms
        self.available = True
        self.corrupt_next_segment = False  # fault: the next uploaded segment gets one bit flipped
        self.corrupted: dict[str, bytes] = {}  # key -> the original bytes (for the repair)

    def _check(self) -> None:
        if not (self.available and self.space.available):
            raise ObjectStoreUnavailable(f"object store unreachable from {self.region.id}")

    def _now(self) -> float:
        return self.region.env.now

    def _visible(self, key: str):
        item = self.space.objects.get(key)
        if item is None or item[2] > self._now():
            return None
        return item

    def put(self, key, data, metadata=None) -> bool:
        check_key(key)
        meta = check_metadata(metadata)
        self._check()
        if key in self.space.objects:
            return False
        delay = sample(self.latency_ms, self.region.rng, 20.0) / 1000.0
        data = bytes(data)
        if self.corrupt_next_segment and key.endswith(".log") and len(data) > 32:
            self.corrupt_next_segment = False
            self.corrupted[key] = data
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0x10
            data = bytes(flipped)
            self.region.world.history.record(self._now(), "crr.corrupted", region=self.region.id, key=key)
        self.space.objects[key] = (data, meta, self._now() + delay)
        return True

    def repair(self) -> int:
        """An operator re-uploads the corrupted segments from the source's sealed WAL segment."""
        for key, original in self.corrupted.items():
            data, meta, visible = self.space.objects[key]
            self.space.objects[key] = (original, meta, visible)
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
        return key in self.space.objects  # the writer's existence check sees its own in-flight upload

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        self._check()
        now = self._now()
        return sorted((k for k, v in self.space.objects.items() if k.startswith(prefix) and v[2] <= now),
                      key=lambda k: k.encode())

    def delete(self, key) -> None:
        self._check()
        self.space.objects.pop(key, None)


class RegionReplication:
    """Shipper + Reader + Reconciler of one region, rebuilt from durable state on restart."""

    def __init__(self, world, region, space: SharedObjectSpace) -> None:
        self.world, self.region = world, region
        cfg = world.scenario.data["replication"]
        self.cfg = cfg
        self.view = RegionObjectView(space, region, cfg["upload_ms"])
        self.auth = MemoryAuthoritativeStore()  # kept beside the local store; survives like the store
        self.reconciler = Reconciler(region.id, store=self.auth, mode=cfg["mode"])
        self.ship_stopped = False
        self.build()

    def build(self) -> None:
        r, cfg = self.region, self.cfg
        rng = self.world.streams.get(f"crr/{r.id}")
        backoff = Backoff(base_s=float(cfg["backoff_base_s"]), cap_s=float(cfg["backoff_cap_s"]))
        self.shipper = Shipper(r.wal, self.view, stream_name(r.id), "/crr/ship.json", fs=r.fs,
                               interval_s=float(cfg["ship_interval_s"]), backoff=backoff, rng=rng)
        self.shipper.paused = self.ship_stopped
        topo = Topology.full_mesh(self.world.region_ids, r.id, include_self=True)
        applier = ReplayApplier(r.verifier, r.store, observer=self._observe)
        self.reader = Reader(self.view, topo, applier, "/crr/read.json", fs=r.fs,
                             interval_s=float(cfg["read_interval_s"]), backoff=backoff, rng=rng,
                             on_reject=self._rejected)

    def _observe(self, tenant, pcs_id, outcome, now) -> None:
        rec = self.reconciler.observe(tenant, pcs_id, outcome, now)
        if rec.conflict:
            self.world.conflicts_seen.add((tenant, pcs_id))

    def _rejected(self, exc) -> None:
        self.world.history.record(self.region.env.now, "crr.reject", region=self.region.id,
                                  segment=getattr(exc, "segment", ""), problems=len(getattr(exc, "problems", [])))

    def run(self):
        """Drive shipper and reader; pause while the region is down."""
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
            nxt_ship = self.shipper.step(now)
            before = self.reader.applied_records
            nxt_read = self.reader.step(now)
            if self.reader.applied_records != before:
                self.world.history.record(env.now, "crr.applied", region=r.id,
                                          records=self.reader.applied_records - before)
            wait = max(0.01, min(nxt_ship, nxt_read) - now)
            yield env.timeout(min(wait, 1.0))

    def lag_s(self) -> float:
        return self.shipper.lag_s(self.region.now()) if self.region.up else 0.0
