"""The agent side: what builds, stores and delivers signed PCS.

Modules:

* :mod:`.builder`  -- the PCS builder: points or an event stream (csv, jsonl, npy) -> a signed PCS; ``Signer``
* :mod:`.outbox`   -- the crash-safe outbox on a segmented log: append, ack, pending, compaction
* :mod:`.client`   -- the submit client: the sans-I/O retry machine (``Submission``) and its httpx driver
* :mod:`.loadgen`  -- the load generator: deterministic PCS traffic against servers, its history and summary
* :mod:`.factory`  -- the one synthetic signed-PCS factory (load, benchmarks, simulator, conformance, tests)
"""
