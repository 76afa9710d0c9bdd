"""The one exception type the canonical core raises for bad input.

Every function of the core (canonical bytes, fmt9, signing, pcs_id, Merkle,
signals) raises :class:`InvalidInput` -- a ``ValueError`` -- whose ``field``
names the offending field and whose message says what is wrong with it.
Adapters turn it into an HTTP 400 problem, a CLI exit code 2, or a conformance
``invalid_input`` error.
"""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input that the protocol rejects; ``field`` names where it is."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):  # pickled as __init__'s arguments: a worker process's error reaches its pool intact
        return type(self), (self.field, self.message)
