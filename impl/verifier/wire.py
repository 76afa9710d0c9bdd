"""Wire format of a submitted PCS: strict JSON parsing and field validation (SPEC.md section 2).

Why this module exists: step 3 of the verify pipeline turns request bytes into
a PCS the later steps can trust, or into an error naming EVERY bad field. It
is the only code that looks at untrusted values, so every check here is
*type-first*: a value is tested for its JSON type before it is compared,
hashed, converted or looked up, and any JSON value in any field position
yields an error message, never an exception (the pipeline is a total function;
``tests/verifier/test_total_function.py`` fuzzes it).

The rules are those of ``spec/pcs.schema.json``, hand-written so that a
well-formed PCS is checked in a few microseconds (:func:`_fast_valid`) and a
bad one gets every error (:func:`_validate_full`). A test
(``tests/verifier/test_schema_agreement.py``) checks with Hypothesis that this
validator and the JSON Schema agree, except for the documented differences:

* stricter, because JSON Schema cannot say it: scales strictly increasing and
  at most 2^31 (distinct scales must have distinct binary64 logarithms), N_j
  keys exactly the scales, integers given as integral floats (``1.0``)
  rejected, numbers must be representable as binary64 (an integer of 400
  digits is not), pcs_id = SHA-256(merkle_root|epoch|shard_id) (INV-PCSID);
* coh_star, r, budget: any finite number here -- out-of-range values are
  step-6 reasons (202) with the policy's tolerance, the schema says [0, 1].
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..core import accel
from ..core.canonical import VERSION_PROFILE
from ..core.pcs import HEX64_RE, SHARD_ID_RE, pcs_id_of_checked
from . import accelerated

SCHEMA_NAME = "fractal-lba-kakeya"
REGIMES = ("sticky", "mixed", "non_sticky")
SIGNATURE_ALGORITHMS = ("hmac", "ed25519")
EPOCH_MAX = 2**53 - 1
U64_MAX = 2**64 - 1
MAX_SCALES = 64
MAX_DIM = 8
SCALE_MAX = 2**31
SENT_AT_MAX = 64  # characters of a sent_at string
# the largest integer whose conversion to binary64 is certainly finite
BINARY64_INT_MAX = int(sys.float_info.max)

REQUIRED = (
    "pcs_id", "schema", "version", "shard_id", "epoch", "scales", "N_j", "coh_star",
    "v_star", "D_hat", "r", "regime", "budget", "merkle_root", "sig",
)
OPTIONAL = ("seed", "sig_alg", "attempt", "sent_at", "ft", "vrf_proof", "meta")
KNOWN_FIELDS = frozenset(REQUIRED + OPTIONAL)
REQUIRED_FIELDS = frozenset(REQUIRED)
NUMBER_FIELDS = ("coh_star", "D_hat", "r", "budget")
PCS_ID_MISMATCH = "does not equal SHA-256(merkle_root|epoch|shard_id) (INV-PCSID)"

_HEX_DIGITS = frozenset("0123456789abcdef")
_SIG_HMAC_RE = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
_SIG_ED25519_RE = re.compile(r"^[A-Za-z0-9+/]{85}[AQgw]==$")
_NJ_KEY_RE = re.compile(r"^[1-9][0-9]*$")

FieldErrors = list[tuple[str, str]]


# -- strict JSON --------------------------------------------------------------------------
class _JsonError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _JsonError(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise _JsonError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)


# The compiled accept paths (flk.impl.verifier._fastverify, bound through the registry
# flk.impl.core.accel; None on the pure path): they answer only the common case and hand
# anything else to the pure functions below, which stay the reference and write every
# error (tests/verifier/test_fastpath_differential.py proves both agree).
_compiled_parse = accel.bind(accelerated.PARSE_JSON, globals(), "_compiled_parse")
_compiled_check = accel.bind(accelerated.PCS_CHECK, globals(), "_compiled_check")


def parse_strict(body: bytes) -> Any:
    """RFC 8259 JSON in UTF-8 with no duplicate keys and no NaN/Infinity.

    Raises ``ValueError`` with a short message (never the body)."""
    if _compiled_parse is not None:
        parsed = _compiled_parse(body)  # (value,), or None: the reference decides
        if parsed is not None:
            return parsed[0]
    return pure_parse_strict(body)


def pure_parse_strict(body: bytes) -> Any:
    """:func:`parse_strict` in pure Python (the reference)."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    text = text.strip(" \t\r\n")  # JSON's whitespace only
    try:
        doc, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise _JsonError("trailing data after the JSON value")
    except _JsonError as exc:
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON at line {exc.lineno} column {exc.colno}") from None
    except (RecursionError, ValueError) as exc:  # nesting depth, int digit limit
        raise ValueError(f"unparseable JSON ({type(exc).__name__})") from None
    return doc


# -- type tests (every check starts with one) ---------------------------------------------
def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite JSON number representable as binary64 (no bool, no 400-digit integer)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return is_integer(value) and -BINARY64_INT_MAX <= value <= BINARY64_INT_MAX  # type: ignore[operator]


def json_type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _number_problem(value: object) -> str:
    if is_integer(value):
        return "must be a finite number; this integer is too large for binary64"
    return f"must be a finite number, got {json_type_name(value)}"


def _fast_number(value: object) -> bool:
    kind = type(value)
    if kind is float:
        return value - value == 0.0  # type: ignore[operator]  # NaN - NaN and inf - inf are NaN
    return kind is int and -BINARY64_INT_MAX <= value <= BINARY64_INT_MAX  # type: ignore[operator]


def signature_format_ok(sig: object, algorithm: object) -> bool:
    """``sig`` is strict base64 of an HMAC-SHA256 (44 characters) or an Ed25519
    signature (88 characters), consistent with ``sig_alg`` when one is given."""
    if type(sig) is not str:
        return False
    if len(sig) == 44:
        return algorithm != "ed25519" and _SIG_HMAC_RE.fullmatch(sig) is not None
    if len(sig) == 88:
        return algorithm != "hmac" and _SIG_ED25519_RE.fullmatch(sig) is not None
    return False


def version_of(doc: dict) -> str | None:
    """The PCS's version string if it names a known profile, else None (never raises)."""
    version = doc.get("version")
    return version if type(version) is str and version in VERSION_PROFILE else None


# -- the fast path ------------------------------------------------------------------------
def _fast_scalars_valid(doc: dict) -> bool:
    get = doc.__getitem__
    pcs_id, root, shard, epoch, version, regime = (get("pcs_id"), get("merkle_root"), get("shard_id"),
                                                    get("epoch"), get("version"), get("regime"))
    return (type(pcs_id) is str and len(pcs_id) == 64 and _HEX_DIGITS.issuperset(pcs_id)
            and type(root) is str and len(root) == 64 and _HEX_DIGITS.issuperset(root)
            and type(shard) is str and SHARD_ID_RE.fullmatch(shard) is not None
            and type(epoch) is int and 0 <= epoch <= EPOCH_MAX
            and signature_format_ok(get("sig"), doc.get("sig_alg"))
            and get("schema") == SCHEMA_NAME and type(version) is str and version in VERSION_PROFILE
            and type(regime) is str and regime in REGIMES
            and _fast_number(get("coh_star")) and _fast_number(get("D_hat"))
            and _fast_number(get("r")) and _fast_number(get("budget")))


def _fast_vectors_valid(doc: dict) -> bool:
    scales, counts, direction = doc["scales"], doc["N_j"], doc["v_star"]
    if not (type(scales) is list and 2 <= len(scales) <= MAX_SCALES and type(counts) is dict
            and len(counts) == len(scales) and type(direction) is list and 1 <= len(direction) <= MAX_DIM):
        return False
    previous = 1
    for scale in scales:
        if type(scale) is not int or scale <= previous or scale > SCALE_MAX:
            return False
        count = counts.get(str(scale))
        if type(count) is not int or count < 1:
            return False
        previous = scale
    for component in direction:
        if not (_fast_number(component) and -1 <= component <= 1):
            return False
    return True


def _fast_optionals_valid(doc: dict) -> bool:
    for name in OPTIONAL:
        if name not in doc:
            continue
        value = doc[name]
        if name == "attempt":
            if not (type(value) is int and value >= 0):
                return False
        elif name == "sent_at":
            if not ((type(value) is str and len(value) <= SENT_AT_MAX) or (_fast_number(value) and value >= 0)):
                return False
        elif name == "sig_alg":
            if value not in SIGNATURE_ALGORITHMS or (value == "ed25519" and doc["version"] == "0.1"):
                return False
        elif name == "seed":
            if not (type(value) is int and 0 <= value <= U64_MAX):
                return False
        elif name == "ft":
            if type(value) is not dict:
                return False
        else:
            return False  # the rarer optional fields (vrf_proof, meta): full validator
    return True


def _fast_valid(doc: Any) -> bool:
    """True only if ``doc`` certainly passes every check of :func:`validate_pcs`
    except INV-PCSID (which the caller still checks). Anything unusual returns
    False and goes to the full, error-collecting validator. The common case of
    a well-formed PCS costs a few microseconds."""
    if type(doc) is not dict:
        return False
    keys = doc.keys()
    if not (REQUIRED_FIELDS <= keys and keys <= KNOWN_FIELDS):
        return False
    if not (_fast_scalars_valid(doc) and _fast_vectors_valid(doc)):
        return False
    return len(doc) == len(REQUIRED) or _fast_optionals_valid(doc)


def validate_pcs(doc: Any) -> FieldErrors:
    """Every wire-format error of ``doc`` as ``(field, message)``, in a fixed order
    (required fields, optional fields, unknown fields, then INV-PCSID). Empty if valid."""
    if _compiled_check is not None:
        verdict = _compiled_check(doc)  # 1 valid, 2 valid but for INV-PCSID, 0 the reference decides
        if verdict == 1:
            return []
        if verdict == 2:
            return [("pcs_id", PCS_ID_MISMATCH)]
    return pure_validate_pcs(doc)


def pure_validate_pcs(doc: Any) -> FieldErrors:
    """:func:`validate_pcs` in pure Python (the reference)."""
    if _fast_valid(doc):
        if pcs_id_of_checked(doc["merkle_root"], doc["epoch"], doc["shard_id"]) == doc["pcs_id"]:
            return []
        return [("pcs_id", PCS_ID_MISMATCH)]
    return _validate_full(doc)


# -- the full validator: one check per field ----------------------------------------------
FieldCheck = Callable[[Any, dict], Iterator[tuple[str, str]]]


def _check_hex64(name: str) -> FieldCheck:
    def check(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
        if not (isinstance(value, str) and HEX64_RE.fullmatch(value)):
            yield name, "must be 64 lowercase hexadecimal characters"
    return check


def _check_schema(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if value != SCHEMA_NAME:
        yield "schema", f'must be "{SCHEMA_NAME}"'


def _check_version(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if version_of(doc) is None:
        yield "version", 'must be "1" (profile v1) or "0.1" (legacy-0.1)'


def _check_shard_id(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not (isinstance(value, str) and SHARD_ID_RE.fullmatch(value)):
        yield "shard_id", "must match ^[A-Za-z0-9._:-]{1,128}$"


def _check_epoch(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not is_integer(value):
        yield "epoch", f"must be an integer, got {json_type_name(value)}"
    elif not 0 <= value <= EPOCH_MAX:
        yield "epoch", "must be in [0, 2^53-1]"


def _scale_errors(scales: Any) -> FieldErrors:
    if not isinstance(scales, list):
        return [("scales", f"must be an array of integers, got {json_type_name(scales)}")]
    if not 2 <= len(scales) <= MAX_SCALES:
        return [("scales", f"must hold 2 to {MAX_SCALES} scales")]
    errors = []
    for i, scale in enumerate(scales):
        if not is_integer(scale):
            errors.append((f"scales[{i}]", f"must be an integer, got {json_type_name(scale)}"))
        elif not 2 <= scale <= SCALE_MAX:
            errors.append((f"scales[{i}]", "must be in [2, 2^31]"))
        elif i and is_integer(scales[i - 1]) and scale <= scales[i - 1]:
            errors.append((f"scales[{i}]", "scales must be strictly increasing"))
    return errors


def _check_scales(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    yield from _scale_errors(value)


def _check_counts(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(value, dict):
        yield "N_j", f"must be an object of scale -> count, got {json_type_name(value)}"
        return
    for key, count in value.items():  # insertion order of the body: deterministic
        if not _NJ_KEY_RE.fullmatch(key):
            yield f"N_j.{key[:32]}", "key must be a decimal scale (no sign, no leading zero)"
        if not is_integer(count):
            yield f"N_j.{key[:32]}", f"must be an integer, got {json_type_name(count)}"
        elif count < 1:
            yield f"N_j.{key[:32]}", "must be >= 1"
    scales = doc.get("scales")
    if "scales" in doc and not _scale_errors(scales):
        wanted = [str(scale) for scale in scales]
        for scale in wanted:
            if scale not in value:
                yield f"N_j.{scale}", "missing count for this scale"
        wanted_set = set(wanted)
        for key in value:
            if key not in wanted_set and _NJ_KEY_RE.fullmatch(key):
                yield f"N_j.{key[:32]}", "key is not one of the scales"
    elif not 2 <= len(value) <= MAX_SCALES:
        yield "N_j", f"must hold 2 to {MAX_SCALES} counts"


def _check_number(name: str) -> FieldCheck:
    def check(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
        if not is_number(value):
            yield name, _number_problem(value)
    return check


def _check_direction(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(value, list):
        yield "v_star", f"must be an array of numbers, got {json_type_name(value)}"
    elif not 1 <= len(value) <= MAX_DIM:
        yield "v_star", f"must hold 1 to {MAX_DIM} numbers"
    else:
        for i, component in enumerate(value):
            if not (is_number(component) and -1 <= component <= 1):
                yield f"v_star[{i}]", "must be a number in [-1, 1]"


def _check_regime(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not (isinstance(value, str) and value in REGIMES):
        yield "regime", "must be one of sticky, mixed, non_sticky"


def _check_signature(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    algorithm = doc.get("sig_alg")
    if not signature_format_ok(value, algorithm if algorithm in SIGNATURE_ALGORITHMS else None):
        yield "sig", ("must be strict base64 of 32 bytes (HMAC, 44 characters) or 64 bytes "
                      "(Ed25519, 88 characters), matching sig_alg")


def _check_seed(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not (is_integer(value) and 0 <= value <= U64_MAX):
        yield "seed", "must be an integer in [0, 2^64-1]"


def _check_signature_algorithm(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if value not in SIGNATURE_ALGORITHMS:
        yield "sig_alg", "must be hmac or ed25519"
    elif value == "ed25519" and version_of(doc) == "0.1":
        yield "sig_alg", "profile legacy-0.1 uses HMAC only"


def _check_attempt(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not (is_integer(value) and value >= 0):
        yield "attempt", "must be an integer >= 0"


def _check_sent_at(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not ((isinstance(value, str) and len(value) <= SENT_AT_MAX) or (is_number(value) and value >= 0)):
        yield "sent_at", "must be seconds since the epoch (>= 0) or an RFC 3339 text"


def _check_object(name: str) -> FieldCheck:
    def check(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
        if not isinstance(value, dict):
            yield name, f"must be an object, got {json_type_name(value)}"
    return check


def _check_vrf_proof(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(value, str):
        yield "vrf_proof", f"must be a string, got {json_type_name(value)}"


def _check_meta(value: Any, doc: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(value, dict):
        yield "meta", f"must be an object of strings, got {json_type_name(value)}"
        return
    for key, text in value.items():
        if not isinstance(text, str):
            yield f"meta.{key[:32]}", f"must be a string, got {json_type_name(text)}"


# In this order: the order of the errors a client gets.
FIELD_CHECKS: tuple[tuple[str, FieldCheck], ...] = (
    ("pcs_id", _check_hex64("pcs_id")),
    ("schema", _check_schema),
    ("version", _check_version),
    ("shard_id", _check_shard_id),
    ("epoch", _check_epoch),
    ("scales", _check_scales),
    ("N_j", _check_counts),
    *((name, _check_number(name)) for name in NUMBER_FIELDS),
    ("v_star", _check_direction),
    ("regime", _check_regime),
    ("merkle_root", _check_hex64("merkle_root")),
    ("sig", _check_signature),
    # optional fields
    ("seed", _check_seed),
    ("sig_alg", _check_signature_algorithm),
    ("attempt", _check_attempt),
    ("sent_at", _check_sent_at),
    ("ft", _check_object("ft")),
    ("vrf_proof", _check_vrf_proof),
    ("meta", _check_meta),
)


def _validate_full(doc: Any) -> FieldErrors:
    if not isinstance(doc, dict):
        return [("", f"must be a JSON object, got {json_type_name(doc)}")]
    errors: FieldErrors = [(name, "required field missing") for name in REQUIRED if name not in doc]
    for name, check in FIELD_CHECKS:
        if name in doc:
            errors.extend(check(doc[name], doc))
    if version_of(doc) != "0.1":  # legacy-0.1 tolerates (ignores) other members
        errors.extend((name[:64], "unknown field") for name in doc if name not in KNOWN_FIELDS)
    if not errors:  # INV-PCSID: only meaningful once its inputs are well-formed
        if pcs_id_of_checked(doc["merkle_root"], doc["epoch"], doc["shard_id"]) != doc["pcs_id"]:
            errors.append(("pcs_id", PCS_ID_MISMATCH))
    return errors
