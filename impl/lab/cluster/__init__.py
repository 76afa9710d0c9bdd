"""Real clusters: a catalog scenario on real ``flk serve`` regions with real faults
(``flk cluster run``), judged by the simulator's checkers, written in its run layout.

Modules:

* :mod:`.runner`    -- ``flk cluster run``: preflight, phases, faults, final reads, checks, artifacts
* :mod:`.network`   -- one network namespace per region on a bridge; partitions as nftables drop rules
* :mod:`.regions`   -- a region's ``flk serve`` and store processes; SIGKILL, SIGSTOP, libfaketime
* :mod:`.faketime`  -- clock faults: libfaketime moves the wall clock only; the shim (``ftshim.c``) mends its timed waits
* :mod:`.storenode` -- a region's object store (S3 API) and its push copies to the other regions' stores
* :mod:`.storeproxy` -- a delaying forwarder to a region's Redis or PostgreSQL (``store_latency``)
* :mod:`.planted`   -- planted server bugs (``--plant racy-dedup``) run inside a region's ``flk serve``
* :mod:`.driver`    -- the scenario's agents in wall-clock time through the real client
* :mod:`.tenantsfile` -- the servers' tenants file: the workload's limits, every tenant's keys, rotated live
* :mod:`.router`    -- launches the shipped router (:mod:`flk.impl.router.proxy`) in front of the regions (``[routing] enabled``)
* :mod:`.prometheus` -- ``--prometheus``: a real Prometheus scrapes the regions; ``[alerts]`` checked against it
* :mod:`.calibrate` -- ``flk sim calibrate``: simulator figures (mean, 95 % CI) beside real runs, per figure
"""
