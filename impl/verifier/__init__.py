"""The verifier: from request bytes to an answer, sans-I/O.

Modules:

* :mod:`.core`       -- the verification core (VerifyBatch): the one code that decides answers; its drivers
* :mod:`.batching`   -- when a batch starts: the batch-formation rule (server and simulator)
* :mod:`.accelerated` -- the verifier's entries in the compiled fast-path registry
* :mod:`.pipeline`   -- the verifier's steps (SPEC 8) and the generator reference pipeline (test oracle)
* :mod:`.wire`       -- strict JSON parsing and the v1 / legacy-0.1 wire rules (SPEC 2)
* :mod:`.tenants`    -- tenants, their keys and limits; the one ``TENANTS`` grammar
* :mod:`.admission`  -- AIMD limit, circuit breaker (and the store behind it), token buckets, factory
* :mod:`.policy`     -- the policy language (grammar ``policy.lark``): parse, check, compile
* :mod:`.problems`   -- the problem catalog: every problem+json answer (RFC 9457)
* :mod:`.metrics`    -- Prometheus metrics of the pipeline
* :mod:`.poison`     -- the poison-record replay policy (start-up and cross-region replay)
* ``policy.lark``    -- the policy grammar (Lark)
"""
