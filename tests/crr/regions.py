"""In-process regions for the replication tests: the real verifier, inbox WAL
(SegmentedLog on the crashable memory disk), dedup store, shipper, reader and
reconciler, sharing one object store."""

from __future__ import annotations

from verifier.pcsgen import HMAC_A, HMAC_B, body, make_pcs, registry, sign

from flk.impl.core.backoff import Backoff
from flk.impl.dedup import open_store
from flk.impl.replication.applying import ReplayApplier
from flk.impl.replication.reading import Reader, Topology
from flk.impl.replication.reconcile import Reconciler
from flk.impl.replication.shipping import Shipper
from flk.impl.replication.stream import stream_name
from flk.impl.storage.wal import SegmentedLog
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.impl.verifier.core import serve_batch
from flk.impl.verifier.pipeline import Request, Verifier

NOW = 1_700_000_000.0


class Region:
    def __init__(self, name: str, objects, peers, fs=None, mode: str = "auto-safe", topology=None, audit=None,
                 store=None) -> None:
        self.name = name
        self.fs = fs or CrashableMemoryFileSystem()
        self.verifier = Verifier(registry(), region=name)
        self.log = SegmentedLog(f"/{name}/wal", fs=self.fs)
        self.store = store if store is not None else open_store("memory")
        self.reconciler = Reconciler(name, mode=mode, audit=audit)
        self.events: list[dict] = []
        self.applier = ReplayApplier(self.verifier, self.store, self.reconciler.observe, self.events.append)
        self.objects = objects
        self.topology = topology or Topology.full_mesh(peers, name)
        self.rejects: list = []
        self._drivers()

    def _drivers(self) -> None:
        self.shipper = Shipper(self.log, self.objects, stream_name(self.name), f"/{self.name}/ship.json", fs=self.fs,
                               interval_s=1.0, backoff=Backoff(0.5, 8.0))
        self.reader = Reader(self.objects, self.topology, self.applier, f"/{self.name}/read.json", fs=self.fs,
                             interval_s=1.0, backoff=Backoff(0.5, 8.0), on_reject=self.rejects.append)

    def crash(self) -> None:
        """Power cut: the disk keeps only what was fsynced; the WAL, the shipper and
        the reader restart from their durable state (the dedup store and the
        reconciler are separate services and keep theirs)."""
        self.fs.crash()
        self.log = SegmentedLog(f"/{self.name}/wal", fs=self.fs)
        self._drivers()

    def submit(self, raw: bytes, tenant: str | None, now: float):
        """One request as ``flk serve`` runs a batch: the answer, and its home answer in the WAL."""
        [resp] = serve_batch(self.verifier, [Request(raw, tenant)], now, self.log, self.store)
        return resp

    def local(self, now: float = NOW + 10**6) -> dict:
        out, cursor = {}, None
        while True:
            page, cursor = self.store.scan(cursor, 500, now)
            for t, p, o in page:
                out[(t, p)] = o
            if cursor is None:
                return out


def variants(n_keys: int = 3, n_variants: int = 3):
    """(raw body, tenant, pcs_id, variant) -- variants of one key conflict; variant 1 is escalated."""
    out = []
    for k in range(n_keys):
        for v in range(n_variants):
            coh = [0.73, 0.74, 0.75][v % 3]
            r = 1.4 if v == 1 else 0.87  # r out of bounds -> 202 escalated
            tenant, key = ("ta", HMAC_A) if k % 2 == 0 else ("tb", HMAC_B)
            doc = sign(make_pcs(seed=100 + k, coh=coh, r=r), key)
            out.append((body(doc), tenant, doc["pcs_id"], v))
    return out
