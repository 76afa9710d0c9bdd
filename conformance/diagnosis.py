"""Naming the bug, not just the failure: bug-class hypotheses tested byte for byte.

Why this module exists: one float-format bug fails nearly every canonical,
sign and verify case, so a per-flag tally names many pitfalls for one mistake.
For each failing case this module recomputes the answer an implementation
with one known bug would give (:data:`BUG_CLASSES`: pre-hashed MAC, unsorted
keys, shortest-repr floats, half-up rounding, ``\\uXXXX`` escaping ...) and
names the class whose output equals the adapter's **byte for byte**. Cases no
hypothesis reproduces but that a diagnosed root cause explains (a verify case
whose bytes that bug changes) are folded under it as knock-on failures.

Every hypothesis is a small function over the case input; the reference
(class ``None``) must reproduce the expected output, else the case is not
diagnosed at all (it probes something these hypotheses do not model).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any

from flk.impl.core import canonical, signals
from flk.impl.core.errors import InvalidInput

from .vectors import Case, decode_input

# -- float writers -------------------------------------------------------------
Fmt = Callable[[Any], str]


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
    return repr(float(x))


def _shortest_js(x: Any) -> str:
    return js_number(float(x))


def _integer_plain(x: Any) -> str:
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else _ref(x)


def _to_fixed_exponent(x: Any) -> str:
    return js_number(float(x)) if abs(float(x)) >= 1e21 else _ref(x)


def _percent_e(x: Any) -> str:
    return format(float(x), ".9e")


def _clean_zero(text: str) -> str:
    return "0.000000000" if text == "-0.000000000" else text


def _quantize(value: Decimal, rounding: str) -> str:
    with localcontext(Context(prec=800, Emax=999, Emin=-999)):
        return _clean_zero(format(value.quantize(Decimal("1e-9"), rounding=rounding), "f"))


def _half_up(x: Any) -> str:
    return _quantize(Decimal(repr(float(x))), ROUND_HALF_UP)


def _x1e9_math_round(x: Any) -> str:
    product = float(x) * 1e9
    if math.isinf(product):
        return "Infinity" if product > 0 else "-Infinity"  # (Math.round(x*1e9)/1e9).toFixed(9)
    return _clean_zero(_nine_digits(math.floor(product + 0.5)))


def _x1e9_python_round(x: Any) -> str:
    return _clean_zero(_nine_digits(round(float(x) * 1e9)))


def _truncate_exact(x: Any) -> str:
    return _quantize(Decimal(float(x)), ROUND_DOWN)


def _truncate_product(x: Any) -> str:
    return _clean_zero(_nine_digits(math.trunc(float(x) * 1e9)))


def _keep_negative_zero(x: Any) -> str:
    return format(float(x), ".9f")


# -- string writers ------------------------------------------------------------
Esc = Callable[[str], str]


def _esc_ref(s: str) -> str:
    return canonical.escape_string(s)


def _escape_chars(pred: Callable[[str], bool], upper: bool = False) -> Esc:
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

    return esc


def _non_ascii(ch: str) -> bool:
    return ord(ch) > 0x7F


# -- the classes ---------------------------------------------------------------
@dataclass(frozen=True)
class BugClass:
    name: str
    title: str  # what the implementation does, e.g. "HMAC(key, SHA-256(v1 bytes))"
    rule: str  # the spec section and rule that decides it
    fmts: tuple[Fmt, ...] = ()
    escapes: tuple[Esc, ...] = ()
    orders: tuple[str, ...] = ()  # "input" or "struct"
    mac: str = ""  # "prehash" | "prehash-hex"
    general: bool = False  # reproduces what narrower classes do too: loses ties to them


STRUCT_ORDERS = (
    ("pcs_id", "merkle_root", "epoch", "shard_id", "D_hat", "coh_star", "r", "budget"),
    ("pcs_id", "shard_id", "epoch", "merkle_root", "D_hat", "coh_star", "r", "budget"),
)

BUG_CLASSES: tuple[BugClass, ...] = (
    BugClass("prehash", "HMAC over SHA-256(canonical bytes) instead of the bytes, or Ed25519 over the bytes instead of their SHA-256",
             "SPEC.md section 4: HMAC-SHA256(key, canonical bytes); Ed25519 signs SHA-256(canonical bytes)",
             mac="prehash"),
    BugClass("key-order", "object keys in input or struct declaration order, not sorted",
             "SPEC.md section 3: keys sorted by code point", orders=("input", "struct")),
    BugClass("shortest-repr", "floats written as their shortest round-trip text (repr / JSON.stringify)",
             "SPEC.md section 3: floats as fmt9 text, exactly nine fractional digits",
             fmts=(_shortest_python, _shortest_js), general=True),
    BugClass("integer-valued", "a float given as a JSON integer written without fraction (2, not 2.000000000)",
             "SPEC.md section 3: every float field is fmt9 text, whatever its JSON spelling", fmts=(_integer_plain,)),
    BugClass("exponent-form", "exponent form for large values (toFixed >= 1e21, %e)",
             "SPEC.md section 3: fixed point, never exponent form", fmts=(_to_fixed_exponent, _percent_e)),
    BugClass("half-up", "half-up rounding of the shortest decimal string",
             "SPEC.md section 3: half-to-even from the exact binary64 value", fmts=(_half_up,)),
    BugClass("x1e9-rounding", "round(x*1e9)/1e9: the product is rounded before the decimal rounding",
             "SPEC.md section 3: round the exact binary64 value", fmts=(_x1e9_math_round, _x1e9_python_round)),
    BugClass("truncation", "digits after the ninth dropped (truncation toward zero)",
             "SPEC.md section 3: round half-to-even, never truncate", fmts=(_truncate_exact, _truncate_product)),
    BugClass("negative-zero", "negative zero written -0.000000000",
             "SPEC.md section 3: -0 and anything rounding to it is 0.000000000", fmts=(_keep_negative_zero,)),
    BugClass("ascii-escape", "non-ASCII characters escaped as \\uXXXX",
             "SPEC.md section 3: raw UTF-8, only '\"', '\\\\' and U+0000..U+001F escaped",
             escapes=(_escape_chars(_non_ascii), _escape_chars(_non_ascii, upper=True),
                      _escape_chars(lambda ch: ord(ch) >= 0x7F)), general=True),
    BugClass("line-separator-escape", "U+2028 / U+2029 escaped as \\u2028 / \\u2029",
             "SPEC.md section 3: raw UTF-8 (RFC 8785)", escapes=(_escape_chars(lambda ch: ch in "\u2028\u2029"),)),
    BugClass("del-escape", "U+007F escaped as \\u007f", "SPEC.md section 3: U+007F is written raw",
             escapes=(_escape_chars(lambda ch: ch == "\x7f"), _escape_chars(lambda ch: ch == "\x7f", upper=True))),
    BugClass("html-escape", "'<', '>' and '&' escaped as \\u003c \\u003e \\u0026 (Go's default encoder)",
             "SPEC.md section 3: only '\"', '\\\\' and control characters are escaped",
             escapes=(_escape_chars(lambda ch: ch in "<>&"),)),
)
CLASS_BY_NAME = {c.name: c for c in BUG_CLASSES}
CLASS_ORDER = [c.name for c in BUG_CLASSES]
# classes recognised from rejected-input and verify cases rather than recomputed output
EXTRA_CLASSES = {
    "nan-accepted": ("NaN or an infinity accepted and written (null / NaN / Infinity)",
                     "SPEC.md section 3: NaN and infinities are rejected"),
    "lenient-base64": ("a base64 spelling a strict decoder refuses was accepted",
                       "SPEC.md section 4: strict standard base64 (padding, alphabet, no whitespace, canonical bits)"),
}


# -- writing under a hypothesis ------------------------------------------------
@dataclass(frozen=True)
class Writer:
    fmt: Fmt = _ref
    escape: Esc = _esc_ref
    order: tuple[str, ...] | str = "sorted"
    mac: str = ""

    def canonical(self, subset: Mapping[str, Any], profile: str = "v1") -> bytes:
        if profile != "v1":
            if (self.fmt, self.escape, self.order) != (_ref, _esc_ref, "sorted"):
                raise ValueError("writer bugs are modelled for profile v1 only")
            return canonical.canonical_bytes(subset, profile)
        canonical.canonical_bytes(subset, "v1")  # the reference's validation: invalid input is no hypothesis
        if self.order == "sorted":
            keys: Iterable[str] = canonical.SIGNED_FIELDS
        elif self.order == "input":
            keys = [k for k in subset if k in canonical.SIGNED_FIELDS]
        else:
            keys = self.order
        parts = []
        for key in keys:
            value = subset[key]
            if key in canonical.FLOAT_FIELDS:
                text = self.fmt(value)
            elif key == "epoch":
                text = str(value)
            else:
                text = self.escape(value)
            parts.append(f'"{key}":{text}')
        return ("{" + ",".join(parts) + "}").encode("utf-8")


def writers_of(bug: BugClass, base: Writer = Writer()) -> list[Writer]:
    """Every spelling of ``bug`` on top of ``base``."""
    out = [Writer(f, base.escape, base.order, base.mac) for f in bug.fmts]
    out += [Writer(base.fmt, e, base.order, base.mac) for e in bug.escapes]
    for order in bug.orders:
        orders = [order] if order == "input" else list(STRUCT_ORDERS)
        out += [Writer(base.fmt, base.escape, o, base.mac) for o in orders]
    if bug.mac:
        out += [Writer(base.fmt, base.escape, base.order, m) for m in ("prehash", "prehash-hex")]
    return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64_strict(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def answer(op: str, inp: Mapping[str, Any], writer: Writer, profile: str = "v1") -> dict | None:
    """The output an implementation with ``writer``'s bugs gives (None: not modelled)."""
    if profile != "v1" and op not in ("d_hat", "canonical_bytes", "sign_hmac"):
        return None  # (legacy-0.1 has no fmt9 and no Ed25519)
    try:
        if op == "canonical_bytes":
            return {"bytes_b64": _b64(writer.canonical(inp["subset"], profile))}
        if op == "fmt9":
            canonical.finite_number(inp["x"], "x")  # the reference's validation
            return {"text": writer.fmt(inp["x"])}
        if op == "sign_hmac":
            return {"sig": _hmac_sig(writer, inp, profile)}
        if op == "sign_ed25519":
            return {"sig": _ed25519_sig(writer, inp)}
        if op == "d_hat":
            return {"d_hat": writer.fmt(signals.d_hat(inp["scales"], inp["n_j"], profile))}
        if op == "coherence":
            value = signals.coherence(inp["points"], inp["seed"], inp.get("n_directions", signals.COH_DIRECTIONS),
                                      inp.get("bins", signals.COH_BINS))
            return {"coh_star": writer.fmt(value)}
        if op == "budget":
            params = signals.budget_params(inp.get("params"))
            return {"budget": writer.fmt(signals.budget(inp["D_hat"], inp["coh_star"], inp["r"], params))}
    except (InvalidInput, KeyError, TypeError, ValueError, ArithmeticError):
        return None
    return None


def _hmac_sig(writer: Writer, inp: Mapping[str, Any], profile: str) -> str:
    key = _b64_strict(inp["key_b64"])
    if not key:
        raise ValueError("no key")
    msg = writer.canonical(inp["subset"], profile)
    if writer.mac == "prehash":
        msg = hashlib.sha256(msg).digest()
    elif writer.mac == "prehash-hex":
        msg = hashlib.sha256(msg).hexdigest().encode()
    return _b64(hmac.digest(key, msg, "sha256"))


def _ed25519_sig(writer: Writer, inp: Mapping[str, Any]) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = _b64_strict(inp["private_key_b64"])
    if seed is None or len(seed) != 32:
        raise ValueError("no seed")
    msg = writer.canonical(inp["subset"])
    if writer.mac == "prehash":
        pass  # the bug: the bytes themselves are signed
    elif writer.mac == "prehash-hex":
        msg = hashlib.sha256(msg).hexdigest().encode()
    else:
        msg = hashlib.sha256(msg).digest()
    return _b64(Ed25519PrivateKey.from_private_bytes(seed).sign(msg))


# -- diagnosing a run ----------------------------------------------------------
RECOMPUTED_OPS = ("canonical_bytes", "fmt9", "sign_hmac", "sign_ed25519", "d_hat", "budget", "coherence")


@dataclass
class Diagnosis:
    """Root causes (class -> cases reproduced byte for byte), knock-on failures
    folded under them, and what no hypothesis explains."""

    root_causes: dict[str, list[str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    knock_on: dict[str, list[str]] = field(default_factory=dict)
    undiagnosed: list[str] = field(default_factory=list)

    def add_root(self, name: str, case_id: str, example: str = "") -> None:
        self.root_causes.setdefault(name, []).append(case_id)
        if example and name not in self.examples:
            self.examples[name] = example


def _matches(output: Any, expected_like: Mapping[str, Any] | None) -> bool:
    return isinstance(output, Mapping) and expected_like is not None and all(
        output.get(k) == v for k, v in expected_like.items()
    )


def _excerpts(want: str, got: str, context: int = 16) -> tuple[str, str]:
    """The two texts around their first difference."""
    start = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    tail = 0
    while tail < min(len(want), len(got)) - start and want[-1 - tail] == got[-1 - tail]:
        tail += 1
    low = max(0, start - context)
    cut = "..." if low else ""
    return (cut + want[low:len(want) - tail + context] + ("..." if tail > context else ""),
            cut + got[low:len(got) - tail + context] + ("..." if tail > context else ""))


def _example(case: Case, output: Mapping[str, Any]) -> str:
    key = next(iter(case.expected or {}), "")
    got, want = output.get(key), (case.expected or {}).get(key)
    if key == "bytes_b64":
        got = base64.b64decode(got).decode("utf-8", "backslashreplace")
        want = base64.b64decode(want).decode("utf-8", "backslashreplace")
        want, got = _excerpts(want, got)
        return f"{case.case_id}: canonical bytes `{got}` where the spec gives `{want}`"
    return f"{case.case_id}: {key} {json.dumps(got, ensure_ascii=False)} where the spec gives {json.dumps(want, ensure_ascii=False)}"


def candidate_classes(case: Case, output: Any, base: Writer = Writer()) -> list[str] | None:
    """Classes whose spelling reproduces ``output``; None when the case is not modelled
    (the reference hypothesis does not give the expected output)."""
    inp = decode_input(case.input)
    if not _matches(answer(case.operation, inp, base, case.profile), case.expected):
        return None
    if _matches(output, case.expected):
        return []  # the right answer is no bug
    return [bug.name for bug in BUG_CLASSES if any(
        _matches(output, answer(case.operation, inp, w, case.profile)) for w in writers_of(bug, base))]


def _combined_writers(names: Iterable[str]) -> list[Writer]:
    writers = [Writer()]
    for name in names:
        bug = CLASS_BY_NAME.get(name)
        if bug is not None:
            writers = [w for base in writers for w in writers_of(bug, base)] or writers
    return writers[:200]


def _changes_bytes(name: str, subset: Any) -> bool:
    bug = CLASS_BY_NAME.get(name)
    if bug is None or not isinstance(subset, Mapping):
        return name in EXTRA_CLASSES
    if bug.mac:
        return True
    try:
        reference = Writer().canonical(subset)
        return any(w.canonical(subset) != reference for w in writers_of(bug))
    except (InvalidInput, KeyError, TypeError, ValueError):
        return False


def diagnose(failures: Iterable[Any], verdicts: Iterable[Any] = ()) -> Diagnosis:
    """``failures``: the runner's failed CaseResults (``case``, ``output``);
    ``verdicts``: every judged result, used to test classes against verify
    verdicts when no output reproduces a bug (a verify-only SDK).

    Several classes can reproduce one output (a tie rounds up under half-up
    and under round(x*1e9)); the fewest classes explaining every reproduced
    case are chosen (greedy set cover: the class reproducing most cases first).
    """
    diagnosis = Diagnosis()
    candidates, rest = [], []
    for result in failures:
        case, output = result.case, result.output
        if case.operation in RECOMPUTED_OPS and not case.expects_error and isinstance(output, Mapping):
            names = candidate_classes(case, output)
            if names:
                candidates.append((result, names))
                continue
        rest.append(result)
    while candidates:
        tally = Counter(name for _, names in candidates for name in names)
        best = min(tally, key=lambda name: (-tally[name], CLASS_BY_NAME[name].general, CLASS_ORDER.index(name)))
        for result, names in candidates:
            if best in names:
                diagnosis.add_root(best, result.case.case_id, _example(result.case, result.output))
        candidates = [(result, names) for result, names in candidates if best not in names]
    for result in rest:
        _fold(diagnosis, result)
    _infer_from_verdicts(diagnosis, list(verdicts))
    return diagnosis


def _is_v1_positive(result: Any) -> bool:
    case = result.case
    return (case.operation in ("verify_hmac", "verify_ed25519") and case.profile == "v1"
            and case.expected == {"valid": True} and result.status in ("pass", "fail"))


def _infer_from_verdicts(diagnosis: Diagnosis, verdicts: list) -> None:
    """Undiagnosed failing verify positives (a verify-only SDK): a class is
    consistent when it predicts no failure where the adapter passed (every v1
    positive whose bytes it changes failed); the fewest consistent classes
    covering the failures are named."""
    positives = [r for r in verdicts if _is_v1_positive(r)]
    open_ids = {r.case.case_id for r in positives if r.status == "fail" and r.case.case_id in diagnosis.undiagnosed}
    if not open_ids:
        return
    changes = {}
    for bug in BUG_CLASSES:
        changed = {r.case.case_id for r in positives
                   if _changes_bytes(bug.name, decode_input(r.case.input).get("subset"))}
        if not any(r.status == "pass" for r in positives if r.case.case_id in changed):
            changes[bug.name] = changed & open_ids
    while open_ids:
        best = max(changes, key=lambda name: (len(changes[name] & open_ids), -CLASS_ORDER.index(name)), default=None)
        if best is None or not changes[best] & open_ids:
            return
        for case_id in sorted(changes[best] & open_ids):
            diagnosis.add_root(best, case_id, f"{case_id}: inferred from verify verdicts (the class changes exactly "
                                              "the bytes of the records that failed to verify)")
            diagnosis.undiagnosed.remove(case_id)
        open_ids -= changes[best]


def _fold(diagnosis: Diagnosis, result: Any) -> None:
    """Knock-on failures, rejected-input and verify classes, or undiagnosed."""
    case, output = result.case, result.output
    special = _special_class(case, output)
    if special:
        diagnosis.add_root(special, case.case_id, f"{case.case_id}: {case.comment}")
        return
    if case.operation in RECOMPUTED_OPS and isinstance(output, Mapping) and not case.expects_error:
        inp = decode_input(case.input)
        writers = _combined_writers(diagnosis.root_causes)
        if any(_matches(output, answer(case.operation, inp, w, case.profile)) for w in writers):
            for name in diagnosis.root_causes:
                diagnosis.knock_on.setdefault(name, []).append(case.case_id)
            return
    subset = decode_input(case.input).get("subset") if isinstance(case.input, Mapping) else None
    causes = [n for n in diagnosis.root_causes if _changes_bytes(n, subset)]
    if causes and case.operation.startswith(("verify_", "sign_")):
        diagnosis.knock_on.setdefault(causes[0], []).append(case.case_id)
        return
    diagnosis.undiagnosed.append(case.case_id)


def _special_class(case: Case, output: Any) -> str:
    """nan-accepted, lenient-base64 or prehash, recognised from what was accepted."""
    flags = set(case.flags)
    if case.expects_error and output is not None:
        if "nan-inf" in flags:
            return "nan-accepted"
        if "base64-strict" in flags:
            return "lenient-base64"
        return ""
    accepted_bad = case.operation.startswith("verify_") and isinstance(output, Mapping) and output.get("valid") is True
    if accepted_bad and (case.expected or {}).get("valid") is False:
        if "base64-strict" in flags and _lenient_equivalent(case):
            return "lenient-base64"
        if "prehash" in flags:
            return "prehash"
    return ""


def _lenient_equivalent(case: Case) -> bool:
    """The mangled signature decodes, leniently, to bytes the reference accepts."""
    from flk.impl.core import signing

    sig = case.input.get("sig") if isinstance(case.input, Mapping) else None
    if not isinstance(sig, str) or not sig.strip():
        return False
    cleaned = "".join(sig.split()).replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return False
    inp = decode_input(case.input)
    try:
        if case.operation == "verify_hmac":
            keys = [base64.b64decode(k) for k in inp["keys_b64"]]
            return signing.verify_hmac(inp["subset"], _b64(raw), keys, case.profile)
        keys = [base64.b64decode(k) for k in inp["public_keys_b64"]]
        return signing.verify_ed25519(inp["subset"], _b64(raw), keys, case.profile)
    except (InvalidInput, KeyError, TypeError, ValueError):
        return False


def describe(name: str) -> tuple[str, str]:
    """(what the implementation does, the deciding rule) of a class name."""
    bug = CLASS_BY_NAME.get(name)
    if bug is not None:
        return bug.title, bug.rule
    return EXTRA_CLASSES.get(name, (name, ""))


def format_diagnosis(diagnosis: Diagnosis, limit: int = 8) -> list[str]:
    """Root causes first, each with its knock-on failures folded under it."""
    lines = []
    if diagnosis.root_causes:
        lines.append("root causes (reproduced byte for byte):")
    for name, ids in diagnosis.root_causes.items():
        title, rule = describe(name)
        lines.append(f"  {name}: {title} -- {len(ids)} case(s) {' '.join(ids[:limit])}" + (" ..." if len(ids) > limit else ""))
        if rule:
            lines.append(f"      rule: {rule}")
        if name in diagnosis.examples:
            lines.append(f"      e.g. {diagnosis.examples[name]}")
        knock = diagnosis.knock_on.get(name, [])
        if knock:
            shown = " ".join(knock[:limit]) + (" ..." if len(knock) > limit else "")
            lines.append(f"      knock-on: {len(knock)} more failing case(s) follow from it: {shown}")
    if diagnosis.undiagnosed:
        ids = diagnosis.undiagnosed
        lines.append(f"undiagnosed failures (no known bug class reproduces them): {len(ids)} case(s) "
                     + " ".join(ids[:limit]) + (" ..." if len(ids) > limit else ""))
    return lines
