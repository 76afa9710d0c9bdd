"""Governance: what proves, gates and scores submissions beside the verify pipeline.

Modules:

* :mod:`.auditchain`    -- the audit hash chain: entry/seal/anchor hashes, Merkle roots, the pure ``verify_log``
* :mod:`.audit`         -- the WORM audit log writer, attestation store, ``verify_directory``, the pipeline sink
* :mod:`.tsa`           -- the RFC 3161 timestamp client (the optional external anchor)
* :mod:`.auditworkers`  -- audit entries off the request path: a durable queue, retries, DLQ, anchoring
* :mod:`.siem`          -- audit streaming to a SIEM: RFC 5424 over TLS (RFC 5425), durable spool, at least once
* :mod:`.pii`           -- PII gates: detect, block or redact personal data in a PCS's strings
* :mod:`.anomaly`       -- sanity checks and an anomaly score in [0, 1]
* :mod:`.vrf`           -- ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381) and the VRF hook
"""
