"""``flk serve``: the deployable HTTP driver over the sans-I/O verify pipeline.

Why this package exists: the invariants must hold in a server people deploy,
not only in the model and the simulator. Everything here is a *driver*: it
carries out the effects the verify pipeline (:mod:`flk.impl.verifier.pipeline`) yields
-- durable inbox WAL appends group-committed by the event loop, dedup reads and
writes batched on threads behind a circuit breaker -- and never decides anything about
the protocol itself.

Modules:

* :mod:`.config`       -- the settings table (env + optional TOML file) -> ``ServerConfig``; secrets redacted
* :mod:`.auth`         -- the operator credential, signed tenant reads, the one X-Tenant-Id rule
* :mod:`.httpguard`    -- HTTP limits below the routes: header sizes and counts, slow clients, connections
* :mod:`.logs`         -- structured JSON logs that never carry payloads, signatures or keys
* :mod:`.app`          -- the Starlette application (endpoints, problem+json, metrics)
* :mod:`.pipeline`     -- the asyncio driver of the verify pipeline's effects
* :mod:`.batching`     -- batched dedup store calls behind the circuit breaker
* :mod:`.walwait`      -- the inbox WAL's group commit driven from the event loop (one fsync thread)
* :mod:`.supervisor`   -- WORKERS=N processes on one socket, replaced when they die
"""
