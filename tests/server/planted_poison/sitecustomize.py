"""A planted bug for tests: processing a request body that carries a marker raises.

Why this exists: replay must never stop a process, whatever record is in the
inbox WAL. The validator is meant to answer every body with a 4xx, so a record
that makes the pipeline *raise* can only come from a bug; this stands in for
one. Python imports this module at start-up when its folder is on
``PYTHONPATH`` (so also in spawned server workers); it patches nothing unless
``FLK_TEST_POISON_MARKER`` is set.

The bug: the pipeline's parse step (after the WAL append, like the validator
bugs it imitates) raises ``RuntimeError`` for any body containing the marker --
live (the client gets 500 and the record stays in the WAL) and on every replay.
"""

import os

_MARKER = os.environ.get("FLK_TEST_POISON_MARKER")

if _MARKER:
    from flk.impl.verifier.pipeline import Verifier

    _original_parse = Verifier.parse  # step 3: body -> validated PCS or a 400 problem

    def _poisoned_parse(body):
        if _MARKER.encode() in bytes(body):
            raise RuntimeError("planted poison record: " + bytes(body)[:200].decode(errors="replace"))
        return _original_parse(body)

    Verifier.parse = staticmethod(_poisoned_parse)
