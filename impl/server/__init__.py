"""``flk serve``: the deployable HTTP driver over the sans-I/O verify pipeline.

Why this package exists: the invariants must hold in a server people deploy,
not only in the model and the simulator. Everything here is a *driver*: it
carries out the effects the verify pipeline (:mod:`flk.impl.verifier.pipeline`) yields
-- durable inbox WAL appends through a group committer, dedup reads and writes
on a thread pool behind a circuit breaker -- and never decides anything about
the protocol itself.

Modules:

* :mod:`.config`       -- environment variables + optional TOML file -> ``ServerConfig``
* :mod:`.backpressure` -- pure AIMD concurrency limit and circuit breaker (time passed in)
* :mod:`.logs`         -- structured JSON logs that never carry payloads, signatures or keys
* :mod:`.app`          -- the Starlette application (endpoints, problem+json, metrics)
* :mod:`.supervisor`   -- WORKERS=N processes on one socket, replaced when they die
"""
