"""The verifier: from request bytes to an answer, sans-I/O.

Modules:

* :mod:`.pipeline`   -- the verify pipeline (SPEC 8): WAL-first, verify-before-dedup, first-write-wins
* :mod:`.wire`       -- strict JSON parsing and the v1 / legacy-0.1 wire rules (SPEC 2)
* :mod:`.tenants`    -- tenants, their keys and limits; the one ``TENANTS`` grammar
* :mod:`.admission`  -- AIMD concurrency limit, circuit breaker, token buckets and their factory
* :mod:`.policy`     -- the policy language (grammar ``policy.lark``): parse, check, compile
* :mod:`.problems`   -- the problem catalog: every problem+json answer (RFC 9457)
* :mod:`.metrics`    -- Prometheus metrics of the pipeline
* ``policy.lark``    -- the policy grammar (Lark)
"""
