"""Several regions, an object store between them, partitions: replication as a state machine.

``ship(src)`` uploads the sealed durable records ``src`` originated;
``replay(dst, src)`` makes ``dst`` take ``src``'s records after its watermark
and process them through the same verify-before-dedup pipeline. A partitioned
region can neither upload nor download. :meth:`Cluster.quiesce` is the
"heal and wait" phase after which INV-CONVERGENCE must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .region import Record, Region, Submission


@dataclass
class Cluster:
    regions: dict[str, Region]
    store: dict[str, tuple[Record, ...]] = field(default_factory=dict)  # object store (durable)
    partitioned: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, names: list[str], keys: dict[str, frozenset[str]], dedup_durable: bool = True) -> Cluster:
        return cls({n: Region(n, dict(keys), dedup_durable) for n in sorted(names)})

    def submit(self, region: str, sub: Submission, now: float) -> None:
        self.regions[region].submit(sub, now)

    def ship(self, src: str) -> None:
        """Upload src's sealed segments. Preserves INV-FWW (no dedup change anywhere)."""
        r = self.regions[src]
        if src in self.partitioned or not r.up:
            return
        self.store[src] = r.shippable()

    def replay(self, dst: str, src: str) -> None:
        """dst downloads src's segments after its watermark and processes them.

        Preserves INV-VERIFY-BEFORE-DEDUP (replay goes through the pipeline),
        INV-FWW, INV-IDEMPOTENT-REPLAY.
        """
        if dst == src or dst in self.partitioned or src not in self.store:
            return
        r = self.regions[dst]
        r.take_from_peer(src, self.store[src])
        r.drain()

    def partition(self, region: str) -> None:
        self.partitioned.add(region)

    def heal(self, region: str) -> None:
        self.partitioned.discard(region)

    def rotate_key(self, tenant: str, new_key: str) -> None:
        for name in sorted(self.regions):
            self.regions[name].rotate_key(tenant, new_key)

    def quiesce(self) -> None:
        """Heal everything, restart, flush, and exchange until nothing moves."""
        self.partitioned.clear()
        names = sorted(self.regions)
        for n in names:
            r = self.regions[n]
            r.restart()
            r.sync()
            r.drain()
        for _ in range(2):  # one round delivers everything; the second must be a no-op
            for n in names:
                self.ship(n)
            for dst in names:
                for src in names:
                    self.replay(dst, src)
