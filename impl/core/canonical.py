"""Canonical bytes of the signed subset (PCS protocol v1, SPEC.md section 3).

Why this module exists: every signature, payload digest and dedup decision in
the system is over these bytes, and SDKs in other languages must produce them
byte for byte. The rules are few and exact:

* a JSON object of the eight signed fields, keys sorted by code point, no
  whitespace, UTF-8;
* strings escaped as RFC 8785 does (only ``"``, ``\\`` and U+0000..U+001F, with
  ``\\b \\f \\n \\r \\t`` or lowercase ``\\u00xx``; everything else raw UTF-8);
* ``epoch`` a plain integer in [0, 2^53-1];
* the four floats fixed-point with exactly nine fractional digits, rounded
  half-to-even from the exact binary64 value (:func:`fmt9`).

The readable code here is the normative reference. When the optional compiled
extension ``_fastcore`` is built (and ``FLK_PURE`` is not set; :mod:`.accel`
decides, once), the common case of profile v1 is answered by it instead; anything unusual still goes through
:func:`canonical_bytes_careful`, and differential tests prove both give the
same bytes and the same errors. :data:`CORE_PATH` says which path is active.

Profile ``legacy-0.1`` reproduces what the seed system's Python agent emitted
(``json.dumps(sort_keys=True)`` with ASCII escaping and floats rounded half-up
on their shortest decimal string), so deployed agents can be verified during a
migration.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Context, Decimal

from . import accel
from .errors import InvalidInput

PROFILES = ("v1", "legacy-0.1")
VERSION_PROFILE = {"1": "v1", "0.1": "legacy-0.1"}  # a PCS's ``version`` -> its profile (SPEC 10)


def profile_of(doc: Mapping) -> str:
    """The profile a document's ``version`` names (SPEC 10): ``v1`` for ``"1"`` (and a
    document without ``version``), else ``legacy-0.1`` (a document the verifier refuses for
    its version never reaches a profile)."""
    return VERSION_PROFILE.get(doc.get("version", "1"), "legacy-0.1")
SIGNED_FIELDS = ("D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r", "shard_id")
FLOAT_FIELDS = ("D_hat", "budget", "coh_star", "r")
STRING_FIELDS = ("merkle_root", "pcs_id", "shard_id")
EPOCH_MAX = 2**53 - 1

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NINE = Decimal("1e-9")
# Enough digits for any finite double quantized to 1e-9 (309 integer digits + 9).
_LEGACY_CTX = Context(prec=400, Emax=999, Emin=-999)

# Fast path (profile v1, the common all-valid case): one %-format of a fixed
# template. ``%.9f`` is the same conversion as ``format(x, ".9f")``. Strings
# that would need escaping (or are lone surrogates) and negative zero fall back
# to the careful path, so both paths give identical bytes (tested).
_NEEDS_CARE = re.compile('[\x00-\x1f"\\\\\ud800-\udfff]')
_GET = operator.itemgetter("D_hat", "budget", "coh_star", "r", "epoch", "merkle_root", "pcs_id", "shard_id")
_TEMPLATE = (
    '{"D_hat":%.9f,"budget":%.9f,"coh_star":%.9f,"epoch":%d,'
    '"merkle_root":"%s","pcs_id":"%s","r":%.9f,"shard_id":"%s"}'
)




# The compiled fast path (impl/core/_fastcore.c) through the one seam, flk.impl.core.accel:
# None on the pure path (FLK_PURE set, or not built); CORE_PATH says which is active.
CORE_PATH = accel.path()
_compiled_canonical_v1 = accel.bind("canonical_v1", globals(), "_compiled_canonical_v1")
_compiled_round9 = accel.bind("round9", globals(), "_compiled_round9")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise InvalidInput("profile", f"unknown profile {profile!r}; expected one of {PROFILES}")
    return profile


def finite_number(x: object, field: str) -> float:
    """``x`` as a finite binary64 (bool, non-numbers, NaN, infinities and overflowing integers rejected)."""
    if type(x) is float and x - x == 0.0:  # the common case: a finite float (NaN - NaN and inf - inf are NaN)
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InvalidInput(field, f"must be a number, got {type(x).__name__}")
    try:
        v = float(x)
    except OverflowError:
        raise InvalidInput(field, "integer too large for binary64") from None
    if not math.isfinite(v):
        raise InvalidInput(field, "NaN and Infinity are not allowed")
    return v


def fmt9(x: float, field: str = "value") -> str:
    """Fixed-point text with exactly nine fractional digits, half-to-even.

    Rounds from the exact binary64 value (as C ``printf("%.9f")`` does), writes
    negative zero -- and anything that rounds to it -- as ``0.000000000`` and
    rejects NaN and infinities.
    """
    v = finite_number(x, field)
    s = format(v, ".9f")
    if s == "-0.000000000":
        return "0.000000000"
    return s


def round9(x: float, field: str = "value") -> float:
    """The double nearest to :func:`fmt9` of ``x`` (what a verifier reads back)."""
    if _compiled_round9 is not None:
        v = _compiled_round9(x)  # None: not a finite float below 2^53, the pure path decides
        if v is not None:
            return v
    return pure_round9(x, field)


def pure_round9(x: float, field: str = "value") -> float:
    """:func:`round9` in pure Python (the reference)."""
    return float(fmt9(x, field))


def escape_string(s: str, field: str = "value") -> str:
    """RFC 8785 string serialization, quotes included."""
    if not isinstance(s, str):
        raise InvalidInput(field, f"must be a string, got {type(s).__name__}")
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            raise InvalidInput(field, f"lone surrogate U+{o:04X} cannot be encoded as UTF-8")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _epoch(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidInput("epoch", f"must be an integer, got {type(v).__name__}")
    if not 0 <= v <= EPOCH_MAX:
        raise InvalidInput("epoch", f"must be in [0, 2^53-1], got {v}")
    return v


def _legacy_float(x: object, field: str) -> str:
    v = finite_number(x, field)
    q = Decimal(repr(v)).quantize(_NINE, rounding=ROUND_HALF_UP, context=_LEGACY_CTX)
    return json.dumps(float(q))


def canonical_bytes(subset: Mapping, profile: str = "v1") -> bytes:
    """The canonical bytes of the signed subset of ``subset``.

    ``subset`` must hold the eight signed fields; other keys (a whole PCS, say)
    are ignored, which is what "the signed subset" means.
    """
    if _compiled_canonical_v1 is not None and profile == "v1":
        text = _compiled_canonical_v1(subset)  # None: not the common case, the pure path decides
        if text is not None:
            return text
    return pure_canonical_bytes(subset, profile)


def pure_canonical_bytes(subset: Mapping, profile: str = "v1") -> bytes:
    """:func:`canonical_bytes` in pure Python (the reference the compiled path is tested against)."""
    if profile == "v1" and type(subset) is dict:
        # Fast path: the common all-valid case, identical output (tested against
        # canonical_bytes_careful). Anything unusual falls through.
        try:
            d, b, c, r, e, m, p, s = _GET(subset)
        except KeyError:
            pass
        else:
            if (
                type(d) is float
                and type(b) is float
                and type(c) is float
                and type(r) is float
                and type(e) is int
                and type(m) is str
                and type(p) is str
                and type(s) is str
                and d - d == 0.0  # finite: NaN - NaN and inf - inf are NaN
                and b - b == 0.0
                and c - c == 0.0
                and r - r == 0.0
                and 0 <= e <= EPOCH_MAX
            ):
                x = m + p + s
                if x.isascii():  # printable ASCII without quote or backslash needs no escaping
                    plain = x.isprintable() and '"' not in x and "\\" not in x
                else:
                    plain = _NEEDS_CARE.search(x) is None
                if plain:
                    text = _TEMPLATE % (d, b, c, e, m, p, r, s)
                    if ":-0.000000000" not in text:  # negative zero: careful path
                        return text.encode("utf-8")
    return canonical_bytes_careful(subset, profile)


def canonical_bytes_careful(subset: Mapping, profile: str = "v1") -> bytes:
    """Field-by-field canonical bytes with full validation (any Mapping, both profiles)."""
    check_profile(profile)
    if not isinstance(subset, Mapping):
        raise InvalidInput("subset", f"must be a mapping, got {type(subset).__name__}")
    missing = [k for k in SIGNED_FIELDS if k not in subset]
    if missing:
        raise InvalidInput(missing[0], "missing from the signed subset")
    parts = []
    for key in SIGNED_FIELDS:  # already in code-point order
        value = subset[key]
        if key in FLOAT_FIELDS:
            text = fmt9(value, key) if profile == "v1" else _legacy_float(value, key)
        elif key == "epoch":
            text = str(_epoch(value))
        else:
            if profile == "v1":
                text = escape_string(value, key)
            else:
                if not isinstance(value, str):
                    raise InvalidInput(key, f"must be a string, got {type(value).__name__}")
                text = json.dumps(value, ensure_ascii=True)
        parts.append(f'"{key}":{text}')
    body = "{" + ",".join(parts) + "}"
    try:
        return body.encode("utf-8")
    except UnicodeEncodeError as exc:  # pragma: no cover - escape_string rejects first
        raise InvalidInput("subset", str(exc)) from None


def signed_subset(pcs: Mapping) -> dict:
    """The eight signed fields of a PCS, as a new dict."""
    return {k: pcs[k] for k in SIGNED_FIELDS if k in pcs}
