"""Shared plumbing of the planted-bug adapters: the reference adapter with one piece swapped.

Each ``bug_*.py`` next to this file is a complete conformance adapter
(``python tests/quality/conformance_adapters/bug_x.py``) that behaves like
``python -m flk.conformance.adapters.python`` except for ONE classic
implementation mistake, and names in ``FLAG`` the vector flag whose cases must
catch it. :func:`run` swaps the pieces in this process only (the canonical
byte builder, the float formatter, string escaping, HMAC, base64 decoding)
and serves the protocol.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

from flk.conformance.adapters.python import serve
from flk.impl.core import canonical, signing

REFERENCE_CANONICAL = getattr(canonical, "canonical_bytes_careful", canonical.canonical_bytes)
REFERENCE_FMT9 = canonical.fmt9
REFERENCE_ESCAPE = canonical.escape_string


def make_canonical(
    fmt: Callable[[object, str], str] = REFERENCE_FMT9,
    escape: Callable[[str, str], str] = REFERENCE_ESCAPE,
    order: Sequence[str] = canonical.SIGNED_FIELDS,
    accept_non_finite: bool = False,
) -> Callable[..., bytes]:
    """Canonical bytes (profile v1) built from the given pieces.

    Input validation is the reference's (its bytes are computed first and
    discarded), so a planted adapter differs only in what it writes;
    ``accept_non_finite`` lets NaN and infinities through to ``fmt``.
    """

    def canonical_bytes(subset, profile: str = "v1") -> bytes:
        if profile != "v1" or not accept_non_finite:
            reference = REFERENCE_CANONICAL(subset, profile)  # raises InvalidInput like the reference
            if profile != "v1":
                return reference
        else:
            REFERENCE_CANONICAL({k: (0.0 if _non_finite(v) else v) for k, v in subset.items()}, profile)
        parts = []
        for key in order:
            value = subset[key]
            if key in canonical.FLOAT_FIELDS:
                text = fmt(value, key)
            elif key == "epoch":
                text = str(value)
            else:
                text = escape(value, key)
            parts.append(f'"{key}":{text}')
        return ("{" + ",".join(parts) + "}").encode("utf-8")

    return canonical_bytes


def _non_finite(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def run(
    *,
    accept_non_finite: bool = False,
    fmt9: Callable[[object, str], str] | None = None,
    escape: Callable[[str, str], str] | None = None,
    order: Sequence[str] | None = None,
    sign_hmac: Callable | None = None,
    verify_hmac: Callable | None = None,
    b64decode: Callable | None = None,
    canonical_bytes: Callable | None = None,
    ops: dict | None = None,
) -> int:
    """Install the planted pieces and serve the adapter protocol on stdin/stdout.

    ``canonical_bytes`` replaces the whole byte builder (validation included);
    ``ops`` replaces whole conformance ops (:data:`flk.conformance.ops.OPS` entries)."""
    cb = canonical_bytes or make_canonical(
        fmt=fmt9 or REFERENCE_FMT9,
        escape=escape or REFERENCE_ESCAPE,
        order=order or canonical.SIGNED_FIELDS,
        accept_non_finite=accept_non_finite,
    )
    canonical.canonical_bytes = cb
    signing.canonical_bytes = cb
    if fmt9 is not None:
        canonical.fmt9 = fmt9  # also what the fmt9, d_hat, budget and coherence ops print with
    if sign_hmac is not None:
        signing.sign_hmac = sign_hmac
    if verify_hmac is not None:
        signing.verify_hmac = verify_hmac
    if b64decode is not None:
        signing.b64decode_strict = b64decode
    sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    sys.stdout.reconfigure(encoding="utf-8")
    if ops:
        from flk.conformance import ops as ops_module

        ops_module.OPS.update(ops)
    return serve(name="planted-bug:" + sys.argv[0].rsplit("/", 1)[-1])
