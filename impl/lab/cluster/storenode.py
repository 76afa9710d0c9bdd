"""One region's object store on a real cluster, with its bucket replication.

Why this module exists: the simulator gives every region its own object store and
copies each shipped segment (and its manifest) from the origin region's store to
every other region's store over the network (``flk.sim.replication``), the way S3
cross-region replication does. ``flk serve`` only knows one store URL. On a real
cluster (``flk cluster run``) each region therefore gets one process of this module
in its own network namespace:

* an S3 API (moto's server) on ``0.0.0.0:PORT``, the region's store: its
  ``flk serve`` ships to it and reads every stream from it over loopback;
* a copier thread per peer that *pushes* the region's own objects (its WAL stream
  ``<region>/...`` and its divergence summaries ``_divergence/<region>/...``) to that
  peer's store over the namespace's network, segment before manifest, retrying
  until it lands. The copies leave this namespace, so a kernel rule that drops the
  packets between two namespaces cuts exactly that link (both ways for a symmetric
  partition; a one-way cut drops what this side sends to the peer's store port).

Every copy that landed is logged as one JSON line to ``--log`` (key, peer, time) so
the runner can report copy lag. Run as ``python -m flk.impl.lab.cluster.storenode``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from ...core import textdata
from ...replication.stream import verify_segment
from ...storage.objectstore import S3ObjectStore
from ...storage.walformat import LOG_SUFFIX, MANIFEST_SUFFIX

BUCKET = "flk-crr"
CREDENTIALS = {"aws_access_key_id": "cluster", "aws_secret_access_key": "cluster"}  # moto accepts any


def store_url(host: str, port: int) -> str:
    """The ``CRR_STORE_URL`` of a region's store (``flk.impl.storage.objectstore.open_object_store``)."""
    return f"s3://{BUCKET}/crr?endpoint=http://{host}:{port}"


def open_store(host: str, port: int, create: bool = False, timeout: float = 1.0) -> S3ObjectStore:
    return S3ObjectStore(BUCKET, prefix="crr", endpoint_url=f"http://{host}:{port}", create_bucket=create,
                         connect_timeout=timeout, read_timeout=max(2.0, 3 * timeout), max_attempts=1,
                         **CREDENTIALS)


def own_prefixes(region: str) -> tuple[str, ...]:
    return (f"{region}/", f"_divergence/{region}/")


def copy_order(keys: list[str]) -> list[str]:
    """Segments before their manifests (a reader that sees a manifest finds its segment)."""
    return sorted(keys, key=lambda k: (k.endswith(MANIFEST_SUFFIX), k))


class Copier(threading.Thread):
    """Pushes this region's new objects to one peer's store until each has landed."""

    def __init__(self, region: str, local, peer: str, remote, interval_s: float, log, stop: threading.Event,
                 seen: Seen) -> None:
        super().__init__(name=f"copy-{peer}", daemon=True)
        self.region, self.local, self.peer, self.remote, self.seen = region, local, peer, remote, seen
        self.interval_s, self.log, self.stop = interval_s, log, stop
        self.copied: set[str] = set()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            try:
                self.round()
            except Exception as exc:  # noqa: BLE001 - a cut link or a dead peer: retry next round
                self.log({"event": "copy_failed", "peer": self.peer, "reason": type(exc).__name__})

    def round(self) -> None:
        self.seen.scan()
        listed = [k for p in own_prefixes(self.region) for k in self.local.list(p)]
        present = set(listed)
        # a segment only with its manifest (so a bit flip of the next segment happens before any copy)
        keys = [k for k in listed if k not in self.copied and not (
            k.endswith(LOG_SUFFIX) and k[: -len(LOG_SUFFIX)] + MANIFEST_SUFFIX not in present)]
        for key in copy_order(keys):
            data = self.local.get(key)
            meta = self.local.get_metadata(key)
            self.remote.put(key, data, meta)
            self.copied.add(key)
            oldest = self.oldest.get(key)
            now = time.time()
            self.log({"event": "copied", "peer": self.peer, "key": key, "t": now,
                      "age_s": None if oldest is None else round(now - oldest, 6)})

    @property
    def oldest(self) -> dict:
        return self.seen.oldest


def first_sent_at(records) -> str | None:
    """The ``sent_at`` its client wrote into the body of the segment's earliest record (the
    first, in WAL order, whose body is a JSON object with a string ``sent_at``; None when none
    has one). The cluster's clients stamp it on the runner's clock (:mod:`.driver`); the
    region's own ``received_at`` is its wall clock, which a clock fault moves."""
    for rec in records:
        try:
            doc = textdata.json_loads(rec.body)
        except ValueError:  # not JSON (UnicodeDecodeError is one)
            continue
        sent = doc.get("sent_at") if isinstance(doc, dict) else None
        if isinstance(sent, str):
            return sent
    return None


class Seen:
    """The ``received_at`` of the oldest record of each of this region's shipped segments
    (read once from the segment in the local store), logged when first seen with the
    ``sent_at`` of its earliest record (:func:`first_sent_at`).

    The bit-flip fault: while the file ``corrupt_flag`` exists, the next new segment has one
    byte changed in the local store before any copy (the original is kept); the file
    ``repair_flag`` makes every changed segment be uploaded again, locally and to every peer."""

    def __init__(self, region: str, local, log, control: str = "", peers: dict | None = None) -> None:
        self.region, self.local, self.log = region, local, log
        self.oldest: dict[str, float] = {}
        self.lock = threading.Lock()
        self.corrupt_flag = os.path.join(control, "corrupt-next") if control else ""
        self.repair_flag = os.path.join(control, "repair") if control else ""
        self.originals: dict[str, tuple[bytes, dict]] = {}
        self.peers = peers or {}

    def scan(self) -> None:
        with self.lock:
            self._scan()
            if self.repair_flag and os.path.exists(self.repair_flag):
                self._repair()

    def _overwrite(self, store, key: str, data: bytes, meta: dict) -> None:
        store.client.put_object(Bucket=store.bucket, Key=store._k(key), Body=data, Metadata=meta)

    def _corrupt(self, seg_key: str) -> None:
        data, meta = self.local.get(seg_key), self.local.get_metadata(seg_key)
        self.originals[seg_key] = (data, meta)
        at = len(data) // 2
        self._overwrite(self.local, seg_key, data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:], meta)
        os.remove(self.corrupt_flag)
        self.log({"event": "corrupted", "key": seg_key, "offset": at, "t": time.time()})

    def _repair(self) -> None:
        for key, (data, meta) in sorted(self.originals.items()):
            for name, store in [("", self.local), *sorted(self.peers.items())]:
                try:
                    self._overwrite(store, key, data, meta)
                except Exception as exc:  # noqa: BLE001 - a peer cut off: the next round tries again
                    self.log({"event": "repair_failed", "key": key, "peer": name, "reason": type(exc).__name__})
                    return
            self.log({"event": "repaired", "key": key, "t": time.time()})
        self.originals.clear()
        os.remove(self.repair_flag)

    def _scan(self) -> None:
        for key in self.local.list(f"{self.region}/"):
            if not key.endswith(MANIFEST_SUFFIX):
                continue
            seg_key = key[: -len(MANIFEST_SUFFIX)] + LOG_SUFFIX
            if seg_key in self.oldest:
                continue
            stream, _, name = seg_key.rpartition("/")
            try:
                _, records = verify_segment(stream, name, self.local.get(key), self.local.get(seg_key))
            except Exception:  # noqa: BLE001 - a corrupted segment: copied as it is, no age
                continue
            oldest = min((r.received_at for r in records), default=time.time())
            if self.corrupt_flag and os.path.exists(self.corrupt_flag):
                self._corrupt(seg_key)
            self.oldest[seg_key] = oldest
            self.oldest[key] = oldest
            self.log({"event": "seen", "key": seg_key, "t": time.time(), "oldest": oldest,
                      "records": len(records), "first_sent_at": first_sent_at(records)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="storenode")
    ap.add_argument("--region", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--peer", action="append", default=[], help="NAME=HOST:PORT of a peer's store")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--log", required=True)
    ap.add_argument("--control", default="", help="folder of the fault flag files (corrupt-next, repair)")
    args = ap.parse_args(argv)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="0.0.0.0", port=args.port, verbose=False)
    server.start()
    lock = threading.Lock()
    out = open(args.log, "a", buffering=1, encoding="utf-8")

    def log(doc: dict) -> None:
        with lock:
            out.write(json.dumps(doc, sort_keys=True) + "\n")

    local = open_store("127.0.0.1", args.port, create=True)
    stop = threading.Event()
    peers = {}
    for spec in args.peer:
        name, _, addr = spec.partition("=")
        host, _, port = addr.rpartition(":")
        peers[name] = open_store(host, int(port))
    seen = Seen(args.region, local, log, args.control, peers)
    for name, remote in peers.items():
        Copier(args.region, local, name, remote, args.interval, log, stop, seen).start()
    log({"event": "listening", "port": args.port, "pid": os.getpid()})
    try:
        while not stop.wait(args.interval):
            try:
                seen.scan()
            except Exception as exc:  # noqa: BLE001 - the local store is busy: next round
                log({"event": "scan_failed", "reason": type(exc).__name__})
    except KeyboardInterrupt:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
