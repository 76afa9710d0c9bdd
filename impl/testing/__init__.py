"""Test doubles and fixtures; production code never imports this package.

Modules:

* :mod:`.crashfs`   -- the crashable in-memory disk (lost unsynced writes, torn writes, bit flips)
* :mod:`.memwal`    -- a list standing in for the inbox WAL
* :mod:`.outage`    -- a dedup store whose outage can be switched on and off
* :mod:`.bare`      -- the benchmark's baseline handler (reads the body, parses the JSON)
* :mod:`.workload`  -- signed PCS request bodies in bulk
* :mod:`.planted`   -- the named planted bugs (``flk sim run --plant``, ``flk sim shrink``)
* :mod:`.cbuild`    -- a compiled fast path's C source built with a planted bug (the differential tests)
"""
