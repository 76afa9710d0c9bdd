"""The sans-I/O protocol core: nothing of flk imported, no I/O, no clock.

Modules:

* :mod:`.canonical`  -- canonical bytes v1 and fmt9 (SPEC 3)
* :mod:`.accel`      -- the registry of compiled fast paths: read ``FLK_PURE`` once, bind, switch, count
* :mod:`.signing`    -- HMAC-SHA256 and Ed25519 signatures over canonical bytes, strict base64 (SPEC 4)
* :mod:`.pcs`        -- pcs_id and the shard_id rule (SPEC 5)
* :mod:`.merkle`     -- Merkle roots of a raw stream, v1 (RFC 6962) and legacy-0.1 (SPEC 6)
* :mod:`.signals`    -- box counts, D-hat, coh-star, r, regime and budget (SPEC 7)
* :mod:`.tenantid`   -- the one tenant-id rule (SPEC 9.2), asked by configuration, registry and dedup stores
* :mod:`.optional`   -- optional backends (Redis, Postgres, S3, Dask): import them or exit 2 with the pip extra
* :mod:`.backoff`    -- exponential backoff with jitter for every retry loop but the client's
* :mod:`.errors`     -- ``InvalidInput(field, message)``, the one bad-input exception
* :mod:`.records`    -- ``@frozen_record``: a frozen dataclass whose ``__init__`` fills ``__dict__`` (the hot records)
* :mod:`.schema`     -- the one checker of data documents (scenario files, operator policies): ``Field`` rows, kinds, key paths
* :mod:`.textdata`   -- JSON and TOML text parsed so that every failure is the format's decode error (deep nesting, long integers)
* :mod:`.junit`      -- the one JUnit XML writer (``--junit`` of the conformance kit, ``flk sim``, ``flk cluster run``)
* ``_fastcore.c``    -- the optional C extension ``flk.impl.core._fastcore`` (ARCHITECTURE.md, "Compiled fast paths")
"""
