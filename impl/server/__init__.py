"""``flk serve``: the deployable HTTP driver over the sans-I/O verify pipeline.

Why this package exists: the invariants must hold in a server people deploy,
not only in the model and the simulator. Everything here is a *driver*: it
runs the verify pipeline (:mod:`flk.impl.verifier.pipeline`) over real storage -- the
submit path as batches of ``run_requests`` on one thread (one inbox WAL sync per
batch, dedup reads and writes in bulk behind a circuit breaker) -- and never decides
anything about the protocol itself.

Modules:

* :mod:`.config`       -- the settings table (env + optional TOML file) -> ``ServerConfig``; secrets redacted
* :mod:`.auth`         -- the operator credential, signed tenant reads, the one X-Tenant-Id rule
* :mod:`.httpguard`    -- HTTP limits below the routes: header sizes and counts, slow clients, connections;
                           the direct submit path (a plain-length submission answered without an ASGI task)
* :mod:`.logs`         -- structured JSON logs that never carry payloads, signatures or keys
* :mod:`.app`          -- the Starlette application (endpoints, problem+json, metrics)
* :mod:`.problems`     -- Starlette responses for the one problem catalog (application/problem+json)
* :mod:`.pipeline`     -- builds the verifier from the configuration; start-up WAL replay
* :mod:`.reload`       -- SIGHUP: the tenants file read again, used from the next batch (keys rotate, no restart)
* :mod:`.batchdriver`  -- the submit path: batches of ``run_requests`` on one thread, one sync each
* :mod:`.operatorroutes` -- the operator's routes: observe a shard migration, carry out a controller action
* :mod:`.opsmetrics`   -- the alert rules' extra series: WAL disk use, store call time, estimable KPIs
* :mod:`.workermetrics` -- /metrics of several workers: every worker's series, labelled ``worker``
* :mod:`.supervisor`   -- WORKERS=N processes on one socket, replaced when they die; SIGHUP passed to each;
  each worker pinned to a core of its own when they cover the cores (WORKER_CPU_AFFINITY)
"""
