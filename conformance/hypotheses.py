"""Bug-class hypotheses: what an implementation with a known bug answers, op by op.

Why this module exists: the diagnosis (:mod:`flk.conformance.diagnosis`)
names a bug only when an implementation *with that bug* gives the adapter's
answer byte for byte. This module is those implementations: a :class:`Writer`
is the reference serializer and signer with some pieces swapped (the float
writer, the string escaper, the key order, the epoch writer, the layout of the
signed bytes, the MAC construction, the base64 decoder of a verifier), and
:func:`answer` gives its output for any conformance op. A :class:`BugClass` is
the set of spellings of one mistake (``round(x*1e9)`` in JavaScript and in
Python are two spellings of ``x1e9-rounding``); :func:`spellings` applies them
on top of another writer, which is how a second bug is diagnosed behind a
first one.

Key orders are not a fixed list: :func:`learn_orders` reads the order of the
keys out of the adapter's own canonical bytes (or, for a signer with no
``canonical_bytes``, searches the 8! orders for the one whose HMAC equals the
adapter's signature), so any fixed non-sorted order is recognised.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any

from flk.impl.core import canonical, signals, textdata
from flk.impl.core.errors import InvalidInput

Fmt = Callable[[Any], str]
Esc = Callable[[str], str]


# -- float writers -------------------------------------------------------------
def _nine_digits(n: int) -> str:
    sign = "-" if n < 0 else ""
    digits = f"{abs(n):010d}"
    return f"{sign}{digits[:-9]}.{digits[-9:]}"


def js_number(x: float) -> str:
    """ECMAScript Number::toString (what JSON.stringify writes)."""
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    exact = Decimal(repr(abs(float(x)))).as_tuple()
    all_digits = "".join(str(d) for d in exact.digits)
    point = len(all_digits) + int(exact.exponent)
    digits = all_digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + digits
    e = point - 1
    body = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{body}e{'+' if e >= 0 else '-'}{abs(e)}"


def _ref(x: Any) -> str:
    return canonical.fmt9(x)


def _shortest_python(x: Any) -> str:
    """Python repr(x)."""
    return repr(float(x))


def _shortest_js(x: Any) -> str:
    """JavaScript String(x) / JSON.stringify."""
    return js_number(float(x))


def _integer_plain(x: Any) -> str:
    """a JSON integer written as an integer."""
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else _ref(x)


def _to_fixed_exponent(x: Any) -> str:
    """JavaScript x.toFixed(9): exponent form from 1e21."""
    return js_number(float(x)) if abs(float(x)) >= 1e21 else _ref(x)


def _percent_e(x: Any) -> str:
    """printf %.9e."""
    return format(float(x), ".9e")


def _clean_zero(text: str) -> str:
    return "0.000000000" if text == "-0.000000000" else text


def _quantize(value: Decimal, rounding: str) -> str:
    with localcontext(Context(prec=800, Emax=999, Emin=-999)):
        return _clean_zero(format(value.quantize(Decimal("1e-9"), rounding=rounding), "f"))


def _half_up(x: Any) -> str:
    """half-up on the shortest decimal string (Decimal(repr(x)))."""
    return _quantize(Decimal(repr(float(x))), ROUND_HALF_UP)


def _tie_away(x: Any) -> str:
    """JavaScript ``toFixed(9)`` below 1e21: the exact binary value, ties away from zero."""
    return _quantize(Decimal(float(x)), ROUND_HALF_UP)


def _x1e9_math_round(x: Any) -> str:
    """Math.round(x*1e9)/1e9 (JavaScript; ties up, Infinity on overflow)."""
    product = float(x) * 1e9
    if math.isinf(product):
        return "Infinity" if product > 0 else "-Infinity"  # (Math.round(x*1e9)/1e9).toFixed(9)
    return _clean_zero(_nine_digits(math.floor(product + 0.5)))


def _x1e9_python_round(x: Any) -> str:
    """round(x*1e9) (Python; half-even on the rounded product)."""
    product = float(x) * 1e9
    if math.isinf(product):
        raise OverflowError("round(inf)")
    return _clean_zero(_nine_digits(round(product)))


def _truncate_exact(x: Any) -> str:
    """truncation of the exact value."""
    return _quantize(Decimal(float(x)), ROUND_DOWN)


def _truncate_product(x: Any) -> str:
    """trunc(x*1e9)."""
    product = float(x) * 1e9
    if math.isinf(product):
        raise OverflowError("trunc(inf)")
    return _clean_zero(_nine_digits(math.trunc(product)))


def _keep_negative_zero(x: Any) -> str:
    """printf %.9f (keeps the sign of zero)."""
    return format(float(x), ".9f")


def _round_then_repr(x: Any) -> str:
    """Python ``repr(round(x, 9))``: correct rounding, then the shortest text."""
    return repr(round(float(x), 9))


def _round_then_js(x: Any) -> str:
    """JavaScript ``String(Math.round(x*1e9)/1e9)``."""
    product = float(x) * 1e9
    if math.isinf(product):
        raise OverflowError("round(inf)")
    return js_number(math.floor(product + 0.5) / 1e9)


def _round_then_js_exact(x: Any) -> str:
    """JavaScript ``String(Number(x.toFixed(9)))`` / Rust ``format!("{}", round9(x))``."""
    return js_number(float(Decimal(canonical.fmt9(x))))


# -- string writers ------------------------------------------------------------
def _esc_ref(s: str) -> str:
    return canonical.escape_string(s)


def _escape_chars(pred: Callable[[str], bool], upper: bool = False, doc: str = "") -> Esc:
    def esc(s: str) -> str:
        out = []
        for ch in _esc_ref(s):
            if pred(ch):
                units = ch.encode("utf-16-be")
                for i in range(0, len(units), 2):
                    code = units[i:i + 2].hex()
                    out.append("\\u" + (code.upper() if upper else code))
            else:
                out.append(ch)
        return "".join(out)

    esc.__doc__ = doc + (" (upper-case hex)" if upper else "")
    return esc


def _non_ascii(ch: str) -> bool:
    return ord(ch) > 0x7F


# -- epoch writers -------------------------------------------------------------
def _epoch_ref(e: Any) -> str:
    return str(e)


def _epoch_float_text(e: Any) -> str:
    """epoch written as a float (7.0)."""
    return repr(float(e))  # "7.0": the epoch went through a float


def _epoch_fmt9(e: Any) -> str:
    """epoch written with nine decimals."""
    return canonical.fmt9(float(e))  # the epoch formatted like the float fields


# -- base64 decoders of a verifier ----------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def b64_strict(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _b64_loose_bits(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


B64_DECODERS: dict[str, Callable[[str], bytes | None]] = {
    "strict": b64_strict,
    "whitespace": lambda t: b64_strict("".join(t.split())),
    "padding": lambda t: b64_strict(t + "=" * (-len(t) % 4)),
    "url-safe": lambda t: b64_strict(t.replace("-", "+").replace("_", "/")),
    "trailing-bits": _b64_loose_bits,
    "forgiving": lambda t: _b64_loose_bits((lambda c: c + "=" * (-len(c) % 4))(
        "".join(t.split()).replace("-", "+").replace("_", "/").rstrip("="))),
}


# -- writing under a hypothesis ------------------------------------------------
LAYOUTS = {
    "compact": "the canonical bytes",
    "pretty2": "pretty-printed JSON (indent 2)",
    "pretty4": "pretty-printed JSON (indent 4)",
    "spaced": "JSON with ', ' and ': ' separators",
    "newline": "the canonical bytes plus a trailing newline",
    "all-fields": "every member of the record, not only the eight signed fields",
    "with-sig": "the canonical bytes with an empty \"sig\" member included",
    "json-pretty2": "the canonical bytes re-serialized by Python json.dumps(indent=2)",
    "json-pretty2-utf8": "the canonical bytes re-serialized by Python json.dumps(indent=2, ensure_ascii=False)",
    "js-pretty2": "the canonical bytes re-serialized by JSON.stringify(JSON.parse(bytes), null, 2)",
    "json-spaced": "the canonical bytes re-serialized by Python json.dumps (', ' and ': ' separators)",
}


REPARSED = ("json-pretty2", "json-pretty2-utf8", "js-pretty2", "json-spaced")


def _reserialize(compact: str, layout: str) -> str:
    obj = textdata.json_loads(compact)
    if layout == "json-pretty2":
        return json.dumps(obj, indent=2)
    if layout == "json-pretty2-utf8":
        return json.dumps(obj, indent=2, ensure_ascii=False)
    if layout == "json-spaced":
        return json.dumps(obj)
    pairs = [(k, json.dumps(v, ensure_ascii=False) if isinstance(v, str) else
              str(v) if isinstance(v, int) else js_number(v)) for k, v in obj.items()]
    return _layout(pairs, "pretty2")


@dataclass(frozen=True)
class Writer:
    """The reference serializer and signer with some pieces swapped."""

    fmt: Fmt = _ref
    escape: Esc = _esc_ref
    order: tuple[str, ...] | str = "sorted"
    mac: str = ""  # "" | "prehash" | "prehash-hex"
    epoch: Callable[[Any], str] = _epoch_ref
    layout: str = "compact"
    b64: str = "strict"

    @property
    def is_reference(self) -> bool:
        return self == Writer()

    def _keys(self, subset: Mapping[str, Any]) -> Iterable[str]:
        if self.layout == "all-fields":
            return sorted(subset)
        if self.order == "sorted":
            return canonical.SIGNED_FIELDS
        if self.order == "reversed":
            return tuple(reversed(canonical.SIGNED_FIELDS))
        if self.order == "input":
            return [k for k in subset if k in canonical.SIGNED_FIELDS]
        return self.order

    def _text(self, key: str, value: Any) -> str:
        if key in canonical.FLOAT_FIELDS:
            return self.fmt(value)
        if key == "epoch":
            return self.epoch(value)
        if key in canonical.SIGNED_FIELDS:
            return self.escape(value)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    def canonical(self, subset: Mapping[str, Any], profile: str = "v1") -> bytes:
        """The bytes this writer builds (and signs) for ``subset``."""
        if profile != "v1":
            if (self.fmt, self.escape, self.order, self.epoch) != (_ref, _esc_ref, "sorted", _epoch_ref) or \
                    self.layout not in ("compact", "newline") + REPARSED:
                raise ValueError("writer bugs are modelled for profile v1 only")
            raw = canonical.canonical_bytes(subset, profile)
            if self.layout in REPARSED:
                return _reserialize(raw.decode("utf-8"), self.layout).encode("utf-8", "surrogatepass")
            return raw + b"\n" if self.layout == "newline" else raw
        canonical.canonical_bytes(subset, "v1")  # the reference's validation: invalid input is no hypothesis
        pairs = [(k, self._text(k, subset[k])) for k in self._keys(subset)]
        if self.layout == "with-sig":
            pairs = sorted(pairs + [("sig", '""')]) if self.order == "sorted" else pairs + [("sig", '""')]
        if self.layout in REPARSED:
            return _reserialize(_layout(pairs, "compact"), self.layout).encode("utf-8", "surrogatepass")
        return _layout(pairs, self.layout).encode("utf-8")


def _layout(pairs: Sequence[tuple[str, str]], layout: str) -> str:
    if layout in ("pretty2", "pretty4"):
        pad = " " * (2 if layout == "pretty2" else 4)
        return "{\n" + ",\n".join(f'{pad}"{k}": {v}' for k, v in pairs) + "\n}"
    if layout == "spaced":
        return "{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}"
    text = "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}"
    return text + "\n" if layout == "newline" else text


# -- the classes ---------------------------------------------------------------
@dataclass(frozen=True)
class BugClass:
    name: str
    title: str  # what the implementation does
    rule: str  # the spec section and rule that decides it
    flags: tuple[str, ...] = ()  # the vector flags (pitfalls) it is about
    fmts: tuple[Fmt, ...] = ()
    escapes: tuple[Esc, ...] = ()
    orders: tuple[str, ...] = ()  # "input", "struct", "reversed", "learned"
    epochs: tuple[Callable[[Any], str], ...] = ()
    layouts: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    b64s: tuple[str, ...] = ()
    general: bool = False  # reproduces what narrower classes do too: loses ties to them


STRUCT_ORDERS = (
    ("pcs_id", "merkle_root", "epoch", "shard_id", "D_hat", "coh_star", "r", "budget"),
    ("pcs_id", "shard_id", "epoch", "merkle_root", "D_hat", "coh_star", "r", "budget"),
)

_FLOAT_RULE = "SPEC.md section 3.5: fixed point, nine fractional digits, half-to-even from the exact binary64 value"
_STRING_RULE = "SPEC.md section 3: raw UTF-8, only '\"', '\\\\' and U+0000..U+001F escaped (RFC 8785)"

BUG_CLASSES: tuple[BugClass, ...] = (
    BugClass("prehash", "HMAC over SHA-256(canonical bytes) instead of the bytes, or Ed25519 over the bytes "
             "instead of their SHA-256",
             "SPEC.md section 4: HMAC-SHA256(key, canonical bytes); Ed25519 signs SHA-256(canonical bytes)",
             flags=("prehash",), macs=("prehash", "prehash-hex")),
    BugClass("signs-other-bytes", "signs bytes other than the canonical bytes",
             "SPEC.md section 4: the signature covers exactly the canonical bytes of section 3",
             flags=("signed-bytes",), layouts=("pretty2", "pretty4", "spaced", "newline", "all-fields", "with-sig", "json-pretty2",
                                        "json-pretty2-utf8", "js-pretty2", "json-spaced")),
    BugClass("key-order", "object keys in a fixed non-sorted order (input, struct declaration, ...)",
             "SPEC.md section 3: keys sorted by code point", flags=("key-order",),
             orders=("learned", "input", "struct", "reversed")),
    BugClass("round-then-shortest", "floats rounded to nine decimals, then written as their shortest text",
             _FLOAT_RULE, flags=("float-format", "shortest-repr"),
             fmts=(_round_then_repr, _round_then_js, _round_then_js_exact), general=True),
    BugClass("shortest-repr", "floats written as their shortest round-trip text (repr / JSON.stringify)",
             _FLOAT_RULE, flags=("float-format", "shortest-repr"), fmts=(_shortest_python, _shortest_js),
             general=True),
    BugClass("integer-valued", "a float given as a JSON integer written without fraction (2, not 2.000000000)",
             "SPEC.md section 3: every float field is fmt9 text, whatever its JSON spelling",
             flags=("integer-valued",), fmts=(_integer_plain,)),
    BugClass("exponent-form", "exponent form for large values (toFixed >= 1e21, %e)",
             "SPEC.md section 3.5: fixed point, never exponent form", flags=("large-value",),
             fmts=(_to_fixed_exponent, _percent_e)),
    BugClass("half-up", "half-up rounding of the shortest decimal string", _FLOAT_RULE, flags=("half-up",),
             fmts=(_half_up,)),
    BugClass("round-tie", "exact ties rounded away from zero, not to even (JavaScript toFixed)", _FLOAT_RULE,
             flags=("round-tie",), fmts=(_tie_away,)),
    BugClass("x1e9-rounding", "round(x*1e9)/1e9: the product is rounded before the decimal rounding",
             _FLOAT_RULE, flags=("x1e9-rounding",), fmts=(_x1e9_math_round, _x1e9_python_round)),
    BugClass("truncation", "digits after the ninth dropped (truncation toward zero)",
             "SPEC.md section 3.5: round half-to-even, never truncate", flags=("truncation",),
             fmts=(_truncate_exact, _truncate_product)),
    BugClass("negative-zero", "negative zero written -0.000000000",
             "SPEC.md section 3.5: -0 and anything rounding to it is 0.000000000", flags=("negative-zero",),
             fmts=(_keep_negative_zero,)),
    BugClass("epoch", "epoch handled as a float or a fixed-width integer (written 7.0, wrapped, truncated or "
             "accepted out of range)",
             "SPEC.md section 3: epoch is an integer in [0, 2^53-1] written as a plain integer; anything else "
             "is rejected", flags=("epoch-range", "epoch-float"), epochs=(_epoch_float_text, _epoch_fmt9)),
    BugClass("ascii-escape", "non-ASCII characters escaped as \\uXXXX", _STRING_RULE, flags=("unicode-escape",),
             escapes=(_escape_chars(_non_ascii, doc="every character above U+007F as \\uXXXX"),
                      _escape_chars(_non_ascii, upper=True, doc="every character above U+007F as \\uXXXX"),
                      _escape_chars(lambda ch: ord(ch) >= 0x7F, doc="U+007F and above as \\uXXXX")), general=True),
    BugClass("line-separator-escape", "U+2028 / U+2029 escaped as \\u2028 / \\u2029",
             "SPEC.md section 3: raw UTF-8 (RFC 8785)", flags=("line-separator",),
             escapes=(_escape_chars(lambda ch: ch in "\u2028\u2029", doc="U+2028/U+2029 escaped"),)),
    BugClass("del-escape", "U+007F escaped as \\u007f", "SPEC.md section 3: U+007F is written raw",
             flags=("control-char",),
             escapes=(_escape_chars(lambda ch: ch == "\x7f", doc="DEL escaped"),
                      _escape_chars(lambda ch: ch == "\x7f", upper=True, doc="DEL escaped"))),
    BugClass("html-escape", "'<', '>' and '&' escaped as \\u003c \\u003e \\u0026 (Go's default encoder)",
             "SPEC.md section 3: only '\"', '\\\\' and control characters are escaped", flags=("html-escape",),
             escapes=(_escape_chars(lambda ch: ch in "<>&", doc="<, > and & escaped"),)),
    BugClass("lenient-base64", "a base64 spelling a strict decoder refuses was accepted",
             "SPEC.md section 4.3: strict standard base64 (padding, alphabet, no whitespace, canonical bits)",
             flags=("base64-strict",), b64s=("whitespace", "padding", "url-safe", "trailing-bits", "forgiving")),
)
CLASS_BY_NAME = {c.name: c for c in BUG_CLASSES}
CLASS_ORDER = [c.name for c in BUG_CLASSES]


def spellings(bug: BugClass, base: Writer = Writer(), learned: Sequence[tuple[str, ...]] = ()) -> list[Writer]:
    """Every spelling of ``bug`` on top of ``base`` (``learned``: key orders read from the adapter)."""
    rep = dataclasses.replace
    out = [rep(base, fmt=f) for f in bug.fmts]
    out += [rep(base, escape=e) for e in bug.escapes]
    for kind in bug.orders:
        orders: Iterable[Any] = {"struct": STRUCT_ORDERS, "learned": learned}.get(kind, [kind])
        out += [rep(base, order=o) for o in orders]
    out += [rep(base, epoch=e) for e in bug.epochs]
    out += [rep(base, layout=ly) for ly in bug.layouts]
    out += [rep(base, mac=m) for m in bug.macs]
    out += [rep(base, b64=b) for b in bug.b64s]
    return list(dict.fromkeys(w for w in out if w != base))


# -- answering an op under a hypothesis ------------------------------------------
_SIGNAL_CACHE: dict[str, float] = {}


def _signal(op: str, inp: Mapping[str, Any], profile: str) -> float:
    key = json.dumps([op, profile, inp], sort_keys=True, default=repr)
    if key not in _SIGNAL_CACHE:
        if len(_SIGNAL_CACHE) > 4096:
            _SIGNAL_CACHE.clear()
        if op == "d_hat":
            value = signals.d_hat(inp["scales"], inp["n_j"], profile)
        elif op == "coherence":
            value = signals.coherence(inp["points"], inp["seed"], inp.get("n_directions", signals.COH_DIRECTIONS),
                                      inp.get("bins", signals.COH_BINS))
        else:
            params = signals.budget_params(inp.get("params"))
            value = signals.budget(inp["D_hat"], inp["coh_star"], inp["r"], params)
        _SIGNAL_CACHE[key] = value
    return _SIGNAL_CACHE[key]


MODELLED_OPS = ("canonical_bytes", "fmt9", "sign_hmac", "sign_ed25519", "verify_hmac", "verify_ed25519",
                "d_hat", "budget", "coherence")
_SIGNAL_KEYS = {"d_hat": "d_hat", "coherence": "coh_star", "budget": "budget"}


def answer(op: str, inp: Mapping[str, Any], writer: Writer, profile: str = "v1") -> dict | None:
    """The output an implementation with ``writer``'s bugs gives (None: not modelled)."""
    if profile != "v1" and op not in ("d_hat", "canonical_bytes", "sign_hmac", "verify_hmac"):
        return None  # (legacy-0.1 has no fmt9 and no Ed25519)
    try:
        if op == "canonical_bytes":
            return {"bytes_b64": _b64(writer.canonical(inp["subset"], profile))}
        if op == "fmt9":
            canonical.finite_number(inp["x"], "x")  # the reference's validation
            return {"text": writer.fmt(inp["x"])}
        if op == "sign_hmac":
            return {"sig": _b64(_hmac(writer, _key(inp["key_b64"]), inp["subset"], profile))}
        if op == "verify_hmac":
            return {"valid": _verify_hmac(writer, inp, profile)}
        if op == "sign_ed25519":
            return {"sig": _ed25519_sig(writer, inp)}
        if op == "verify_ed25519":
            return {"valid": _verify_ed25519(writer, inp)}
        if op in _SIGNAL_KEYS:
            return {_SIGNAL_KEYS[op]: writer.fmt(_signal(op, inp, profile))}
    except (InvalidInput, KeyError, TypeError, ValueError, ArithmeticError):
        return None
    return None


def _key(text: Any) -> bytes:
    key = b64_strict(text)
    if not key:
        raise ValueError("no key")
    return key


def message(writer: Writer, subset: Mapping[str, Any], profile: str = "v1") -> bytes:
    """What ``writer`` MACs: its bytes, or their digest."""
    msg = writer.canonical(subset, profile)
    if writer.mac == "prehash":
        return hashlib.sha256(msg).digest()
    if writer.mac == "prehash-hex":
        return hashlib.sha256(msg).hexdigest().encode()
    return msg


def _hmac(writer: Writer, key: bytes, subset: Mapping[str, Any], profile: str) -> bytes:
    return hmac.digest(key, message(writer, subset, profile), "sha256")


def _sig_bytes(writer: Writer, sig: Any, length: int) -> bytes | None:
    if not isinstance(sig, str):
        return None
    raw = B64_DECODERS[writer.b64](sig)
    return raw if raw is not None and len(raw) == length else None


def _verify_hmac(writer: Writer, inp: Mapping[str, Any], profile: str) -> bool:
    if not isinstance(inp["keys_b64"], list):
        raise TypeError("keys")
    keys = [_key(k) for k in inp["keys_b64"]]
    msg = message(writer, inp["subset"], profile)
    raw = _sig_bytes(writer, inp["sig"], 32)
    return raw is not None and any(hmac.compare_digest(hmac.digest(k, msg, "sha256"), raw) for k in keys)


def _ed25519_message(writer: Writer, subset: Mapping[str, Any]) -> bytes:
    msg = writer.canonical(subset)
    if writer.mac == "prehash":
        return msg  # the bug: the bytes themselves are signed
    if writer.mac == "prehash-hex":
        return hashlib.sha256(msg).hexdigest().encode()
    return hashlib.sha256(msg).digest()


def _ed25519_sig(writer: Writer, inp: Mapping[str, Any]) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = b64_strict(inp["private_key_b64"])
    if seed is None or len(seed) != 32:
        raise ValueError("no seed")
    return _b64(Ed25519PrivateKey.from_private_bytes(seed).sign(_ed25519_message(writer, inp["subset"])))


def _verify_ed25519(writer: Writer, inp: Mapping[str, Any]) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from flk.impl.core.signing import ed25519_key_canonical

    keys = [b64_strict(k) for k in inp["public_keys_b64"]]
    if any(k is None or len(k) != 32 for k in keys):
        raise ValueError("bad key")
    # RFC 8032 section 5.1.3: a non-canonical key verifies nothing (OpenSSL alone would decode y mod p)
    pubs = [Ed25519PublicKey.from_public_bytes(k) for k in keys if ed25519_key_canonical(k)]
    msg = _ed25519_message(writer, inp["subset"])
    raw = _sig_bytes(writer, inp["sig"], 64)
    if raw is None:
        return False
    ok = False
    for pub in pubs:
        try:
            pub.verify(raw, msg)
            ok = True
        except InvalidSignature:
            pass
    return ok


# -- key orders read from the adapter ---------------------------------------------
def object_keys(raw: bytes) -> list[str] | None:
    """The member names of the top-level JSON object in ``raw``, in order (None: not an object).

    Tolerates whatever a buggy writer puts in the values (NaN, -0, escapes)."""
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return None
    keys, depth, i, expect_key = [], 0, 0, False
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if depth == 1 and expect_key:
                try:
                    keys.append(textdata.json_loads(text[i:j + 1]))
                except ValueError:
                    return None
                expect_key = False
            i = j + 1
            continue
        if ch in "{[":
            depth += 1
            expect_key = depth == 1 and ch == "{"
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 1:
            expect_key = True
        i += 1
    return keys


def order_of(raw: bytes) -> tuple[str, ...] | None:
    """The key order of ``raw`` when it is a permutation of the signed fields."""
    keys = object_keys(raw)
    if keys is None or sorted(keys) != sorted(canonical.SIGNED_FIELDS):
        return None
    return tuple(keys)


def search_order(subset: Mapping[str, Any], key: bytes, sig: bytes, base: Writer = Writer()) -> tuple[str, ...] | None:
    """The order of the signed fields whose HMAC (under ``base``) equals ``sig``: all 8! orders tried."""
    try:
        texts = {k: base._text(k, subset[k]) for k in canonical.SIGNED_FIELDS}
        canonical.canonical_bytes(subset, "v1")
    except (InvalidInput, KeyError, TypeError, ValueError, ArithmeticError):
        return None
    proto = hmac.new(key, digestmod="sha256")
    for order in itertools.permutations(canonical.SIGNED_FIELDS):
        mac = proto.copy()
        mac.update(_layout([(k, texts[k]) for k in order], "compact").encode("utf-8"))
        if hmac.compare_digest(mac.digest(), sig):
            return order
    return None
