"""Cross-region replication: shipping the inbox WAL, replaying it elsewhere, converging.

Modules:

* :mod:`.stream`      -- the shipped stream: object names, segment verification, watermark files, lag, errors
* :mod:`.shipping`    -- ships one inbox WAL's sealed segments to the object store (``Shipper``)
* :mod:`.reading`     -- reads a topology's streams and applies their records (``Reader``, ``Topology``)
* :mod:`.applying`    -- replays records as their origin region did, through the core (``ReplayApplier``, ``ReplayMemo``)
* :mod:`.reconcile`   -- the authoritative outcome per key beside the local one; conflicts, review queue
* :mod:`.divergence`  -- count and sample summaries of a region's store, compared across regions
* :mod:`.service`     -- the thread driver that runs all of it inside ``flk serve`` (``CRR_*`` settings)
"""
