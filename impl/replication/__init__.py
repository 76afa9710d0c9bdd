"""Cross-region replication: shipping the inbox WAL, replaying it elsewhere, converging.

Modules:

* :mod:`.crr`         -- segment shipping (``Shipper``), reading (``Reader``), replay (``ReplayApplier``), topology
* :mod:`.reconcile`   -- the authoritative outcome per key beside the local one; conflicts, review queue
* :mod:`.divergence`  -- count and sample summaries of a region's store, compared across regions
* :mod:`.service`     -- the thread driver that runs all of it inside ``flk serve`` (``CRR_*`` settings)
"""
