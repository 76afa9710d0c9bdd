"""The verify pipeline: WAL-first, verify-before-dedup, first-write-wins (SPEC.md section 8).

Why this module exists: it is the one place that decides what happens to a
submitted PCS. It is *sans-I/O*: :meth:`Verifier.handle` is a generator that
yields effect objects and receives their results (``gen.send``) or their
failures (``gen.throw``); it never touches a disk, a socket, a thread or the
wall clock. Drivers carry the effects out -- :func:`run_sync` and
:func:`run_batch` here (tests, benchmarks, WAL replay), the HTTP server, the
simulator -- so every driver runs exactly this code.

Theory of operation (one request)::

    1. body size > limit                          -> 413            (no WAL)
       tenant over rate limit / daily quota       -> 429 Retry-After (no WAL)
    2. yield WalAppend(...)  -- durable before anything else (INV-WAL-FIRST)
       WAL failure                                -> 503 Retry-After
    3. strict JSON + PCS wire-format validation   -> 400 naming every bad field
       pcs_id != SHA-256(merkle_root|epoch|shard_id) -> 400 (INV-PCSID)
    4. tenant + key resolution, profile allowance,
       signature over the canonical bytes         -> 401
       (no dedup effect is ever yielded before this passes: INV-VERIFY-BEFORE-DEDUP)
    5. yield DedupGet(tenant, pcs_id)              (INV-TENANT-ISOLATION)
       hit, same payload digest                   -> stored response, verbatim,
                                                     header Idempotent-Replayed: true
       hit, other digest                          -> 409, store untouched
    6. signal checks + hooks -> reasons[]; none   -> 200, else 202
       (a hook reason listed in reject_status     -> that status, nothing stored)
    7. yield DedupPut(tenant, pcs_id, outcome)    atomic put-if-absent
       lost the race: winner has my digest        -> winner's response (replay)
                      winner has another digest   -> 409      (INV-FWW)
       store unreachable (5 or 7)                 -> 503 Retry-After
    8. respond.

Every answer is also announced with ``Emit(event)`` (a dict: kind, tenant_label,
status, and for outcomes pcs_id / payload_digest / reasons -- never payloads,
signatures or keys) for metrics, audit and history.

Batching (:func:`run_batch`): requests advance in lock step; all WAL appends of
a step share one ``sync`` (group commit) and all dedup reads / writes of a step
one ``get_many`` / ``put_many_if_absent`` call (one transaction). This is
per-request exact: each response equals the response of the same requests run
one after another through :func:`run_sync`, because a batch's puts run in
request order and a request that loses to an earlier one in the batch takes
the lost-race path of step 7, which answers exactly what a dedup hit in step 5
would have answered.

Replay (:meth:`Verifier.handle` with ``replay=True``): a record read back from
the inbox WAL runs steps 3-8 with ``now = received_at`` (no 413/429, no new WAL
record). ``first_seen`` is ``received_at``, so replaying a WAL prefix any number
of times yields the same dedup state (INV-IDEMPOTENT-REPLAY).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..core.canonical import SIGNED_FIELDS, canonical_bytes, round9
from ..core.pcs import HEX64_RE, SHARD_ID_RE
from ..core.pcs import pcs_id as compute_pcs_id
from ..core.signals import (
    DEFAULT_BUDGET,
    DEFAULT_REGIME,
    BudgetParams,
    RegimeThresholds,
)
from ..core.signing import verify_ed25519
from ..dedup import DEFAULT_TTL_S, StoredOutcome, StoreUnavailable
from .tenants import Limiter, Tenant, TenantRegistry

REPLAY_HEADER = "Idempotent-Replayed"
PROBLEM_BASE = "urn:flk:problem:"
JSON_CT = "application/json"
PROBLEM_CT = "application/problem+json"
SCHEMA_NAME = "fractal-lba-kakeya"
VERSION_PROFILE = {"1": "v1", "0.1": "legacy-0.1"}
REGIMES = ("sticky", "mixed", "non_sticky")
EPOCH_MAX = 2**53 - 1
U64_MAX = 2**64 - 1
MAX_SCALES = 64
MAX_DIM = 8

# reason codes of step 6 (machine-readable; SPEC.md section 8)
R_D_HAT = "d_hat_mismatch"
R_COH = "coh_out_of_bounds"
R_R = "r_out_of_bounds"
R_NJ = "n_j_decreasing"
R_BUDGET = "budget_mismatch"
R_REGIME = "regime_mismatch"
REASON_CODES = (R_D_HAT, R_COH, R_R, R_NJ, R_BUDGET, R_REGIME)

# hook reasons that reject (HTTP status) instead of escalating -- governance's codes
DEFAULT_REJECT_STATUS: Mapping[str, int] = {
    "pii_detected": 400,
    "anomaly_reject": 400,
    "vrf_invalid": 401,
    "vrf_missing": 401,
    "vrf_seed_mismatch": 401,
}

# problem types: slug -> (status, title)
PROBLEMS: Mapping[str, tuple[int, str]] = {
    "invalid-json": (400, "Request body is not strict JSON"),
    "invalid-pcs": (400, "PCS does not match the wire format"),
    "rejected-by-policy": (400, "PCS rejected by a policy check"),
    "unknown-tenant": (401, "Unknown tenant"),
    "profile-not-allowed": (401, "Profile not allowed for this tenant"),
    "bad-signature": (401, "Signature does not verify"),
    "unauthorized-by-policy": (401, "PCS rejected by an authenticity check"),
    "conflict": (409, "pcs_id already recorded with a different payload"),
    "payload-too-large": (413, "Request body too large"),
    "rate-limited": (429, "Tenant rate limit exceeded"),
    "quota-exceeded": (429, "Tenant daily quota exceeded"),
    "wal-unavailable": (503, "Inbox WAL unavailable"),
    "store-unavailable": (503, "Dedup store unavailable"),
}


# -- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """What the policy DSL (flk.impl.verifier.policy) compiles into."""

    version: str = "1.0.0"
    tol_d: float = 0.15
    tol_coh: float = 0.05
    tol_budget: float = 0.01
    budget: BudgetParams = DEFAULT_BUDGET
    regime: RegimeThresholds = DEFAULT_REGIME


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024
    retry_after_s: int = 1  # Retry-After of a 503
    ttl_s: float = DEFAULT_TTL_S


Hook = Callable[[dict, str], Sequence[str]]


# -- requests, responses, effects ---------------------------------------------------------
@dataclass(frozen=True)
class Request:
    body: bytes
    tenant: str | None = None  # the X-Tenant-Id header, verbatim (None if absent)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class WalAppend(NamedTuple):
    """Append an inbox record; the reply is its WAL index once *durable*."""

    tenant: str
    received_at: float
    region: str
    body: bytes


class DedupGet(NamedTuple):
    tenant: str
    pcs_id: str
    now: float


class DedupPut(NamedTuple):
    """Atomic put-if-absent; the reply is ``(stored, winner)``."""

    tenant: str
    pcs_id: str
    outcome: StoredOutcome
    now: float
    ttl_s: float


class Emit(NamedTuple):
    """An event for metrics / audit / history; no reply."""

    event: Mapping[str, Any]


Effect = WalAppend | DedupGet | DedupPut | Emit


class WalUnavailable(Exception):
    """Thrown into the pipeline by a driver whose WAL append or sync failed."""


# -- strict JSON --------------------------------------------------------------------------
class _JsonError(ValueError):
    pass


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        for k, _ in pairs:
            if k in seen:
                raise _JsonError(f"duplicate key {k[:64]!r}")
            seen.add(k)
    return out


def _no_constant(name: str) -> Any:
    raise _JsonError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_dupes, parse_constant=_no_constant)


def parse_strict(body: bytes) -> Any:
    """RFC 8259 JSON in UTF-8 with no duplicate keys and no NaN/Infinity.

    Raises ``ValueError`` with a short message (never the body)."""
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


# -- the wire-format validator ------------------------------------------------------------
# The rules of spec/pcs.schema.json (SPEC.md section 2), hand-written so that a
# well-formed PCS is checked in a few microseconds and a bad one gets an error
# for EVERY bad field. A test (tests/verifier/test_schema_agreement.py) checks
# with Hypothesis that this validator and the JSON Schema agree, except for the
# documented differences:
#   * stricter, because JSON Schema cannot say it: scales strictly increasing and
#     at most 2^31 (distinct scales must have distinct binary64 logarithms), N_j
#     keys exactly the scales, integers given as integral floats (``1.0``)
#     rejected, pcs_id = SHA-256(merkle_root|epoch|shard_id) (INV-PCSID);
#   * coh_star, r, budget: any finite number here -- out-of-range values are
#     step-6 reasons (202) with the policy's tolerance (issue #4), the schema
#     says [0, 1].
REQUIRED = (
    "pcs_id", "schema", "version", "shard_id", "epoch", "scales", "N_j", "coh_star",
    "v_star", "D_hat", "r", "regime", "budget", "merkle_root", "sig",
)
OPTIONAL = ("seed", "sig_alg", "attempt", "sent_at", "ft", "vrf_proof", "meta")
_KNOWN = frozenset(REQUIRED + OPTIONAL)
_REQ_SET = frozenset(REQUIRED)
_HEX = frozenset("0123456789abcdef")
_SIG_HMAC_RE = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
_SIG_ED_RE = re.compile(r"^[A-Za-z0-9+/]{85}[AQgw]==$")
_NJ_KEY_RE = re.compile(r"^[1-9][0-9]*$")
SCALE_MAX = 2**31


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return (isinstance(v, float) and math.isfinite(v)) or _is_int(v)


def _tname(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(v), type(v).__name__)


def _r9(x: float) -> float:
    """The signed value a verifier reads back (round9) for an already-validated finite number."""
    return float(format(x, ".9f"))


def _fnum(v: object) -> bool:
    t = type(v)
    return (t is float and v - v == 0.0) or t is int


def _sig_ok(sig: object, alg: object) -> bool:
    if type(sig) is not str:
        return False
    if len(sig) == 44:
        return alg != "ed25519" and _SIG_HMAC_RE.fullmatch(sig) is not None
    if len(sig) == 88:
        return alg != "hmac" and _SIG_ED_RE.fullmatch(sig) is not None
    return False


def _fast_valid(doc: Any) -> bool:
    """True only if ``doc`` certainly passes every check of :func:`validate_pcs`
    except INV-PCSID (which the caller still checks). Anything unusual returns
    False and goes to the full, error-collecting validator. The common case of
    a well-formed PCS costs a few microseconds."""
    if type(doc) is not dict:
        return False
    keys = doc.keys()
    if not (_REQ_SET <= keys and keys <= _KNOWN):
        return False
    g = doc.__getitem__
    pid, root, shard, epoch = g("pcs_id"), g("merkle_root"), g("shard_id"), g("epoch")
    if not (type(pid) is str and len(pid) == 64 and _HEX.issuperset(pid)
            and type(root) is str and len(root) == 64 and _HEX.issuperset(root)
            and type(shard) is str and SHARD_ID_RE.fullmatch(shard) is not None
            and type(epoch) is int and 0 <= epoch <= EPOCH_MAX
            and _sig_ok(g("sig"), doc.get("sig_alg"))
            and g("schema") == SCHEMA_NAME and g("version") in VERSION_PROFILE
            and g("regime") in REGIMES
            and _fnum(g("coh_star")) and _fnum(g("D_hat")) and _fnum(g("r")) and _fnum(g("budget"))):
        return False
    scales, nj, vs = g("scales"), g("N_j"), g("v_star")
    if not (type(scales) is list and 2 <= len(scales) <= MAX_SCALES and type(nj) is dict
            and len(nj) == len(scales) and type(vs) is list and 1 <= len(vs) <= MAX_DIM):
        return False
    prev = 1
    for s in scales:
        if type(s) is not int or s <= prev or s > SCALE_MAX:
            return False
        c = nj.get(str(s))
        if type(c) is not int or c < 1:
            return False
        prev = s
    for x in vs:
        if not (_fnum(x) and -1 <= x <= 1):
            return False
    if len(doc) > len(REQUIRED):
        for k in OPTIONAL:
            if k in doc:
                v = doc[k]
                if k == "attempt":
                    if not (type(v) is int and v >= 0):
                        return False
                elif k == "sent_at":
                    if not ((type(v) is str and len(v) <= 64) or (_fnum(v) and v >= 0)):
                        return False
                elif k == "sig_alg":
                    if v not in ("hmac", "ed25519") or (v == "ed25519" and g("version") == "0.1"):
                        return False
                else:
                    return False  # the rarer optional fields: full validator
    return True


def validate_pcs(doc: Any) -> list[tuple[str, str]]:
    """Every wire-format error of ``doc`` as ``(field, message)``, in a fixed order
    (required fields, optional fields, unknown fields, then INV-PCSID). Empty if valid."""
    if _fast_valid(doc):  # inputs checked: SPEC section 5 directly (== flk.impl.core.pcs.pcs_id)
        want = hashlib.sha256(f'{doc["merkle_root"]}|{doc["epoch"]}|{doc["shard_id"]}'.encode()).hexdigest()
        return [] if want == doc["pcs_id"] else [
            ("pcs_id", "does not equal SHA-256(merkle_root|epoch|shard_id) (INV-PCSID)")]
    return _validate_full(doc)


def _validate_full(doc: Any) -> list[tuple[str, str]]:
    if not isinstance(doc, dict):
        return [("", f"must be a JSON object, got {_tname(doc)}")]
    errs: list[tuple[str, str]] = []
    add = errs.append
    for k in REQUIRED:
        if k not in doc:
            add((k, "required field missing"))
    g = doc.get

    def hex64(k: str) -> None:
        v = g(k)
        if k in doc and not (isinstance(v, str) and HEX64_RE.fullmatch(v)):
            add((k, "must be 64 lowercase hexadecimal characters"))

    hex64("pcs_id")
    if "schema" in doc and g("schema") != SCHEMA_NAME:
        add(("schema", f'must be "{SCHEMA_NAME}"'))
    version_ok = "version" in doc and g("version") in VERSION_PROFILE
    if "version" in doc and not version_ok:
        add(("version", 'must be "1" (profile v1) or "0.1" (legacy-0.1)'))
    if "shard_id" in doc:
        v = g("shard_id")
        if not (isinstance(v, str) and SHARD_ID_RE.fullmatch(v)):
            add(("shard_id", "must match ^[A-Za-z0-9._:-]{1,128}$"))
    if "epoch" in doc:
        v = g("epoch")
        if not _is_int(v):
            add(("epoch", f"must be an integer, got {_tname(v)}"))
        elif not 0 <= v <= EPOCH_MAX:
            add(("epoch", "must be in [0, 2^53-1]"))
    scales_ok = False
    if "scales" in doc:
        v = g("scales")
        if not isinstance(v, list):
            add(("scales", f"must be an array of integers, got {_tname(v)}"))
        elif not 2 <= len(v) <= MAX_SCALES:
            add(("scales", f"must hold 2 to {MAX_SCALES} scales"))
        else:
            scales_ok = True
            for i, s in enumerate(v):
                if not _is_int(s):
                    add((f"scales[{i}]", f"must be an integer, got {_tname(s)}"))
                    scales_ok = False
                elif not 2 <= s <= SCALE_MAX:
                    add((f"scales[{i}]", "must be in [2, 2^31]"))
                    scales_ok = False
                elif i and _is_int(v[i - 1]) and s <= v[i - 1]:
                    add((f"scales[{i}]", "scales must be strictly increasing"))
                    scales_ok = False
    if "N_j" in doc:
        v = g("N_j")
        if not isinstance(v, dict):
            add(("N_j", f"must be an object of scale -> count, got {_tname(v)}"))
        else:
            for k in v:  # insertion order of the body: deterministic
                c = v[k]
                if not _NJ_KEY_RE.fullmatch(k):
                    add((f"N_j.{k[:32]}", "key must be a decimal scale (no sign, no leading zero)"))
                if not _is_int(c):
                    add((f"N_j.{k[:32]}", f"must be an integer, got {_tname(c)}"))
                elif c < 1:
                    add((f"N_j.{k[:32]}", "must be >= 1"))
            if scales_ok:
                want = [str(s) for s in g("scales")]
                wanted = set(want)
                for s in want:
                    if s not in v:
                        add((f"N_j.{s}", "missing count for this scale"))
                for k in v:
                    if k not in wanted and _NJ_KEY_RE.fullmatch(k):
                        add((f"N_j.{k[:32]}", "key is not one of the scales"))
            elif not 2 <= len(v) <= MAX_SCALES:
                add(("N_j", f"must hold 2 to {MAX_SCALES} counts"))
    for k in ("coh_star", "D_hat", "r", "budget"):
        if k in doc and not _is_num(g(k)):
            add((k, f"must be a finite number, got {_tname(g(k))}"))
    if "v_star" in doc:
        v = g("v_star")
        if not isinstance(v, list):
            add(("v_star", f"must be an array of numbers, got {_tname(v)}"))
        elif not 1 <= len(v) <= MAX_DIM:
            add(("v_star", f"must hold 1 to {MAX_DIM} numbers"))
        else:
            for i, x in enumerate(v):
                if not (_is_num(x) and -1 <= x <= 1):
                    add((f"v_star[{i}]", "must be a number in [-1, 1]"))
    if "regime" in doc and g("regime") not in REGIMES:
        add(("regime", "must be one of sticky, mixed, non_sticky"))
    hex64("merkle_root")
    alg = g("sig_alg")
    if "sig" in doc and not _sig_ok(g("sig"), alg if alg in ("hmac", "ed25519") else None):
        add(("sig", "must be strict base64 of 32 bytes (HMAC, 44 characters) or 64 bytes "
                    "(Ed25519, 88 characters), matching sig_alg"))
    # optional
    if "seed" in doc and not (_is_int(g("seed")) and 0 <= g("seed") <= U64_MAX):
        add(("seed", "must be an integer in [0, 2^64-1]"))
    if "sig_alg" in doc:
        if alg not in ("hmac", "ed25519"):
            add(("sig_alg", "must be hmac or ed25519"))
        elif alg == "ed25519" and g("version") == "0.1":
            add(("sig_alg", "profile legacy-0.1 uses HMAC only"))
    if "attempt" in doc and not (_is_int(g("attempt")) and g("attempt") >= 0):
        add(("attempt", "must be an integer >= 0"))
    if "sent_at" in doc:
        v = g("sent_at")
        if not ((isinstance(v, str) and len(v) <= 64) or (_is_num(v) and v >= 0)):
            add(("sent_at", "must be seconds since the epoch (>= 0) or an RFC 3339 text"))
    if "ft" in doc and not isinstance(g("ft"), dict):
        add(("ft", f"must be an object, got {_tname(g('ft'))}"))
    if "vrf_proof" in doc and not isinstance(g("vrf_proof"), str):
        add(("vrf_proof", f"must be a string, got {_tname(g('vrf_proof'))}"))
    if "meta" in doc:
        v = g("meta")
        if not isinstance(v, dict):
            add(("meta", f"must be an object of strings, got {_tname(v)}"))
        else:
            for k, x in v.items():
                if not isinstance(x, str):
                    add((f"meta.{k[:32]}", f"must be a string, got {_tname(x)}"))
    if not (version_ok and g("version") == "0.1"):  # legacy-0.1 tolerates (ignores) other members
        for k in doc:
            if k not in _KNOWN:
                add((k[:64], "unknown field"))
    if not errs:  # INV-PCSID: only meaningful once its inputs are well-formed
        want = compute_pcs_id(doc["merkle_root"], doc["epoch"], doc["shard_id"])
        if want != doc["pcs_id"]:
            add(("pcs_id", "does not equal SHA-256(merkle_root|epoch|shard_id) (INV-PCSID)"))
    return errs


def payload_digest(pcs: Mapping) -> str:
    """Hex SHA-256 of the v1 canonical bytes of the signed subset."""
    return hashlib.sha256(canonical_bytes(pcs, "v1")).hexdigest()


# -- responses ----------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def problem(slug: str, detail: str, retry_after: int | None = None, **extra: Any) -> Response:
    status, title = PROBLEMS[slug]
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, **extra}
    headers = [("Content-Type", PROBLEM_CT)]
    if retry_after is not None:
        headers.append(("Retry-After", str(int(retry_after))))
    return Response(status, tuple(headers), _dumps(body))


_FRESH_HEADERS = (("Content-Type", JSON_CT),)
_REPLAY_HEADERS = (("Content-Type", JSON_CT), (REPLAY_HEADER, "true"))


def _outcome_response(stored: StoredOutcome, replayed: bool) -> Response:
    return Response(stored.status, _REPLAY_HEADERS if replayed else _FRESH_HEADERS, stored.body)


# -- the pipeline -------------------------------------------------------------------------
MAX_TENANT_HEADER = 256


def _recordable_header(value: object) -> bool:
    """Whether an X-Tenant-Id value can be written to the inbox WAL verbatim."""
    if not isinstance(value, str) or len(value) > MAX_TENANT_HEADER:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _done(label: str, resp: Response, kind: str, **ev: Any) -> Generator[Effect, Any, Response]:
    yield Emit({"kind": kind, "tenant_label": label, "status": resp.status, **ev})
    return resp


class Verifier:
    def __init__(
        self,
        tenants: TenantRegistry,
        policy: Policy = Policy(),
        region: str = "local",
        limits: Limits = Limits(),
        hooks: Sequence[Hook] = (),
        limiter: Limiter | None = None,
        reject_status: Mapping[str, int] | None = None,
    ) -> None:
        self.tenants = tenants
        self.policy = policy
        self.region = region
        self.limits = limits
        self.hooks = tuple(hooks)
        self.limiter = limiter if limiter is not None else Limiter()
        self.reject_status = dict(DEFAULT_REJECT_STATUS if reject_status is None else reject_status)
        for reason, status in self.reject_status.items():
            if status not in (400, 401):
                raise ValueError(f"reject_status[{reason!r}] must be 400 or 401, got {status!r}")
        self._pv_json = json.dumps(policy.version, ensure_ascii=True)
        self._region_json = json.dumps(region, ensure_ascii=True)

    def _body(self, pid: str, escalated: bool, reasons: list[str], dh: float, b: float, reg: str,
              now: float) -> bytes:
        """The 200/202 body: byte for byte ``json.dumps(obj, sort_keys=True,
        separators=(",", ":"), ensure_ascii=True)`` of the documented object
        (a test checks the equality), written out for speed."""
        return (
            f'{{"accepted":{"false" if escalated else "true"},"escalated":{"true" if escalated else "false"},'
            f'"first_seen":{float(now)!r},"pcs_id":"{pid}","policy_version":{self._pv_json},'
            f'"reasons":{_dumps(reasons).decode() if reasons else "[]"},'
            f'"recomputed":{{"D_hat":{round9(dh)!r},"budget":{round9(b)!r},"regime":"{reg}"}},'
            f'"region":{self._region_json}}}'
        ).encode("ascii")

    # step 6
    def check_signals(self, pcs: Mapping, profile: str) -> tuple[list[str], float, float, str]:
        """(reasons, recomputed D-hat, recomputed budget, recomputed regime)."""
        p = self.policy
        scales = pcs["scales"]
        nj = pcs["N_j"]
        counts = [nj[str(s)] for s in scales]
        # Theil-Sen exactly as flk.impl.core.signals.d_hat (same float operations; a
        # test checks equality), without re-validating what step 3 validated
        log2 = math.log2
        xs = [log2(v) for v in scales]
        ys = [log2(v) for v in counts]
        k = len(xs)
        slopes = sorted([(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(k) for j in range(i + 1, k)])
        m = len(slopes)
        if profile == "legacy-0.1" or m % 2:
            dh = slopes[m // 2]
        else:
            dh = (slopes[m // 2 - 1] + slopes[m // 2]) / 2.0
        # budget and regime come from the *published* D-hat, round9 of the recomputed one (SPEC 2,
        # 8 step 6): an agent and a verifier cannot disagree at a threshold by a sub-1e-9 residue
        dh = _r9(dh)
        coh, r = _r9(pcs["coh_star"]), _r9(pcs["r"])
        # out-of-range claims are flagged below; recompute with the value clamped to [0, 1]
        coh_c, r_c = min(1.0, max(0.0, coh)), min(1.0, max(0.0, r))
        # budget and regime exactly as flk.impl.core.signals.budget / .regime (a test checks equality)
        bp, rt = p.budget, p.regime
        b = bp.base + bp.alpha * (1.0 - r_c) + bp.beta * max(0.0, dh - bp.d0) + bp.gamma * coh_c
        b = min(1.0, max(0.0, b))
        if coh_c >= rt.sticky_coh and dh <= rt.sticky_d_max:
            reg = "sticky"
        elif dh >= rt.non_sticky_d_min:
            reg = "non_sticky"
        else:
            reg = "mixed"
        reasons = []
        if abs(dh - _r9(pcs["D_hat"])) > p.tol_d:
            reasons.append(R_D_HAT)
        if not 0.0 <= coh <= 1.0 + p.tol_coh:
            reasons.append(R_COH)
        if not 0.0 <= r <= 1.0:
            reasons.append(R_R)
        prev = 0
        for c in counts:
            if c < prev:
                reasons.append(R_NJ)
                break
            prev = c
        if abs(b - _r9(pcs["budget"])) > p.tol_budget:
            reasons.append(R_BUDGET)
        if reg != pcs["regime"]:
            reasons.append(R_REGIME)
        return reasons, dh, b, reg

    @staticmethod
    def _verify_sig(tenant: Tenant, pcs: Mapping, profile: str, now: float, v1_bytes: bytes) -> bool:
        """The tenant's active keys only (INV-TENANT-ISOLATION). HMAC compares the
        canonical base64 of each candidate MAC with ``sig`` in constant time --
        the same as strict-decoding ``sig`` and comparing MACs, since strict
        base64 of 32 bytes is unique."""
        keys = tenant.active_keys(now)
        if not keys:
            return False
        msg = v1_bytes if profile == "v1" else canonical_bytes(pcs, profile)
        sig = pcs["sig"]
        if tenant.alg == "hmac":
            if not sig.isascii():
                return False
            want = sig.encode("ascii")
            ok = False
            for key in keys:  # every key is tried: timing does not reveal which matched
                ok |= hmac.compare_digest(base64.b64encode(hmac.digest(key, msg, "sha256")), want)
            return ok
        subset = {k: pcs[k] for k in SIGNED_FIELDS}
        return verify_ed25519(subset, sig, keys, profile)

    def handle(
        self, req: Request, now: float, *, replay: bool = False
    ) -> Generator[Effect, Any, Response]:
        tenant = self.tenants.resolve(req.tenant)
        label = tenant.tenant_id if tenant is not None else "_unknown"

        # 1. cheap checks, before the WAL
        if not replay:
            if len(req.body) > self.limits.max_body_bytes:
                return (yield from _done(label, problem(
                    "payload-too-large", f"body exceeds {self.limits.max_body_bytes} bytes"), "rejected"))
            if req.tenant is not None and not _recordable_header(req.tenant):
                return (yield from _done(label, problem(
                    "payload-too-large", f"X-Tenant-Id longer than {MAX_TENANT_HEADER} characters "
                    "or not encodable"), "rejected"))
            if tenant is not None:
                adm = self.limiter.admit(tenant, now)
                if not adm.ok:
                    slug = "quota-exceeded" if adm.reason == "quota_exceeded" else "rate-limited"
                    return (yield from _done(label, problem(slug, adm.reason, retry_after=adm.retry_after), "rejected"))
            # 2. WAL first
            try:
                yield WalAppend(req.tenant or "", now, self.region, bytes(req.body))
            except WalUnavailable:
                return (yield from _done(label, problem(
                    "wal-unavailable", "the request was not recorded; retry",
                    retry_after=self.limits.retry_after_s), "wal_error"))
            yield Emit({"kind": "ingest", "tenant_label": label})
        # 3. parse and validate
        try:
            doc = parse_strict(req.body)
        except ValueError as exc:
            return (yield from _done(label, problem(
                "invalid-json", str(exc), errors=[{"field": "", "message": str(exc)}]), "rejected"))
        errs = validate_pcs(doc)
        if errs:
            return (yield from _done(label, problem(
                "invalid-pcs", f"{len(errs)} invalid field(s): " + ", ".join(sorted({f for f, _ in errs})),
                errors=[{"field": f, "message": m} for f, m in errs]), "rejected"))
        pid = doc["pcs_id"]
        # 4. tenant, keys, signature -- before any dedup effect
        if tenant is None:
            return (yield from _done(label, problem("unknown-tenant", "X-Tenant-Id names no configured tenant"),
                                    "signature_error"))
        profile = VERSION_PROFILE[doc["version"]]
        if not tenant.allows(profile) or (profile == "legacy-0.1" and tenant.alg != "hmac"):
            return (yield from _done(label, problem(
                "profile-not-allowed", f"profile {profile} is not enabled for this tenant"), "signature_error"))
        if "sig_alg" in doc and doc["sig_alg"] != tenant.alg:
            return (yield from _done(label, problem("bad-signature", "sig_alg does not match the tenant's algorithm"),
                                    "signature_error"))
        v1_bytes = canonical_bytes(doc, "v1")
        if not self._verify_sig(tenant, doc, profile, now, v1_bytes):
            return (yield from _done(label, problem("bad-signature", "no active key of this tenant verifies sig"),
                                    "signature_error"))
        tid = tenant.tenant_id
        digest = hashlib.sha256(v1_bytes).hexdigest()  # == payload_digest(doc)
        # 5. dedup lookup
        try:
            stored = yield DedupGet(tid, pid, now)
        except StoreUnavailable:
            return (yield from self._unavailable(label))
        if stored is not None:
            return (yield from self._existing(stored, digest, pid, label))
        # 6. signal checks and hooks
        reasons, dh, b, reg = self.check_signals(doc, profile)
        for hook in self.hooks:
            for r in hook(doc, tid):
                if r not in reasons:
                    reasons.append(r)
        rejecting = [r for r in reasons if r in self.reject_status]
        if rejecting:
            status = self.reject_status[rejecting[0]]
            slug = "rejected-by-policy" if status == 400 else "unauthorized-by-policy"
            return (yield from _done(label, problem(slug, "rejected: " + ", ".join(rejecting), reasons=rejecting),
                                    "rejected" if status == 400 else "signature_error", pcs_id=pid))
        escalated = bool(reasons)
        status = 202 if escalated else 200
        body = self._body(pid, escalated, reasons, dh, b, reg, now)
        outcome = StoredOutcome(digest, status, body, now, self.region, self.policy.version)
        # 7. atomic put-if-absent
        try:
            won, winner = yield DedupPut(tid, pid, outcome, now, self.limits.ttl_s)
        except StoreUnavailable:
            return (yield from self._unavailable(label))
        if not won:
            return (yield from self._existing(winner, digest, pid, label))
        # 8. respond
        return (yield from _done(label, _outcome_response(outcome, False), "escalated" if escalated else "accepted",
                                pcs_id=pid, tenant=tid, payload_digest=digest, reasons=list(reasons),
                                first_seen=now, policy_version=self.policy.version))

    def _existing(self, stored: StoredOutcome, digest: str, pid: str, label: str):
        if stored.payload_digest == digest:
            yield Emit({"kind": "dedup_hit", "tenant_label": label, "status": stored.status, "pcs_id": pid})
            return _outcome_response(stored, True)
        resp = problem("conflict", "this pcs_id was recorded with a different signed payload",
                       pcs_id=pid, first_seen=stored.first_seen)
        yield Emit({"kind": "dedup_conflict", "tenant_label": label, "status": 409, "pcs_id": pid,
                    "payload_digest": digest})
        return resp

    def _unavailable(self, label: str):
        resp = problem("store-unavailable", "dedup store unreachable; the request is in the WAL",
                       retry_after=self.limits.retry_after_s)
        yield Emit({"kind": "store_unavailable", "tenant_label": label, "status": 503})
        return resp


# -- drivers ------------------------------------------------------------------------------
Sink = Callable[[Mapping[str, Any]], None]


class MemoryWal:
    """A list standing in for the inbox WAL where durability is not the point
    (the simulator has its own disk; tests of the WAL-first *order* use this)."""

    def __init__(self) -> None:
        self.records: list[WalAppend] = []
        self.synced = 0
        self.fail = False

    def append_record(self, eff: WalAppend) -> int:
        if self.fail:
            raise OSError("wal append failed")
        self.records.append(eff)
        return len(self.records) - 1

    def sync(self) -> None:
        if self.fail:
            raise OSError("wal sync failed")
        self.synced = len(self.records)


def _wal_errors() -> tuple[type[BaseException], ...]:
    from ..storage.wal import WalError

    return (OSError, WalError, TimeoutError)


def wal_write(wal: Any, effs: Sequence[WalAppend]) -> list[int]:
    """Append ``effs`` in order and return their indexes once ALL are durable.

    ``wal`` is a :class:`flk.impl.storage.wal.SegmentedLog` (``append_many`` then one
    ``sync`` -- a group commit of this batch), a :class:`flk.impl.storage.wal.GroupCommitter`
    (``append_many`` then ``wait`` for the commit thread's fsync, which also
    batches across threads), or a :class:`MemoryWal`. Failures raise
    :class:`WalUnavailable`."""
    if isinstance(wal, MemoryWal):
        try:
            idxs = [wal.append_record(e) for e in effs]
            wal.sync()
        except OSError as exc:
            raise WalUnavailable(type(exc).__name__) from None
        return idxs
    from ..storage.wal import InboxRecord, encode_inbox_record

    try:
        payloads = [encode_inbox_record(InboxRecord(e.tenant, e.received_at, e.region, e.body)) for e in effs]
        first = wal.append_many(payloads)
        last = first + len(payloads) - 1
        if hasattr(wal, "wait"):  # GroupCommitter
            wal.wait(last)
        else:
            wal.sync()
    except _wal_errors() as exc:
        raise WalUnavailable(type(exc).__name__) from None
    return list(range(first, last + 1))


def run_sync(
    gen: Generator[Effect, Any, Response],
    wal: Any,
    store: Any,
    sink: Sink | None = None,
    latency: Callable[[str, float], None] | None = None,
) -> Response:
    """Drive one pipeline generator to its response, in this thread.

    ``wal``: see :func:`wal_write` (a ``SegmentedLog`` costs one fsync per
    request here; a ``GroupCommitter`` or :func:`run_batch` share fsyncs). ``store`` is a
    :class:`flk.impl.dedup.DedupStore`. ``sink`` receives every ``Emit`` event;
    ``latency(tenant_label, seconds)`` (e.g. ``Metrics.observe_latency``) gets the
    driver-measured wall time of the request -- the clock lives here, not in the pipeline.
    """
    reply: Any = None
    exc: BaseException | None = None
    label = "_none"
    t0 = time.perf_counter() if latency is not None else 0.0
    while True:
        try:
            eff = gen.throw(exc) if exc is not None else gen.send(reply)
        except StopIteration as stop:
            if latency is not None:
                latency(label, time.perf_counter() - t0)
            return stop.value
        reply, exc = None, None
        if isinstance(eff, Emit):
            label = eff.event.get("tenant_label", label)
            if sink is not None:
                sink(eff.event)
        elif isinstance(eff, WalAppend):
            try:
                reply = wal_write(wal, [eff])[0]
            except WalUnavailable as e:
                exc = e
        elif isinstance(eff, DedupGet):
            try:
                reply = store.get(eff.tenant, eff.pcs_id, eff.now)
            except StoreUnavailable as e:
                exc = e
        elif isinstance(eff, DedupPut):
            try:
                reply = store.put_if_absent(eff.tenant, eff.pcs_id, eff.outcome, eff.now, eff.ttl_s)
            except StoreUnavailable as e:
                exc = e
        else:  # pragma: no cover - a new effect type without a driver case
            raise TypeError(f"unknown effect {type(eff).__name__}")


def run_batch(
    gens: Sequence[Generator[Effect, Any, Response]],
    wal: Any,
    store: Any,
    sink: Sink | None = None,
    latency: Callable[[str, float], None] | None = None,
) -> list[Response]:
    """Drive several pipeline generators in lock step with shared I/O.

    Per step: every pending ``WalAppend`` is appended in request order and then
    made durable by ONE ``sync()`` (group commit) before any of them is
    answered; every pending ``DedupGet`` goes into one ``get_many`` and every
    ``DedupPut`` into one ``put_many_if_absent`` (one transaction; puts in
    request order). Responses are per-request exact (see the module docstring).
    ``latency(tenant_label, seconds)`` gets, per request, the time from the
    start of the batch to that request's response.
    """
    t0 = time.perf_counter() if latency is not None else 0.0
    labels: dict[int, str] = {}
    n = len(gens)
    out: list[Response | None] = [None] * n
    pending: dict[int, Any] = {}
    replies: dict[int, tuple[Any, BaseException | None]] = {i: (None, None) for i in range(n)}
    active = list(range(n))
    while active:
        pending.clear()
        for i in active:
            reply, exc = replies[i]
            g = gens[i]
            try:
                while True:
                    eff = g.throw(exc) if exc is not None else g.send(reply)
                    reply, exc = None, None
                    if type(eff) is Emit:  # no reply: keep going
                        if latency is not None:
                            labels[i] = eff.event.get("tenant_label", "_none")
                        if sink is not None:
                            sink(eff.event)
                        continue
                    pending[i] = eff
                    break
            except StopIteration as stop:
                out[i] = stop.value
                if latency is not None:
                    latency(labels.get(i, "_none"), time.perf_counter() - t0)
        active = [i for i in active if i in pending]
        replies = {}
        by_type: dict[type, list[int]] = {WalAppend: [], DedupGet: [], DedupPut: []}
        for i in active:
            kind = by_type.get(type(pending[i]))
            if kind is None:  # pragma: no cover - a new effect type without a driver case
                raise TypeError(f"unknown effect {type(pending[i]).__name__}")
            kind.append(i)
        wal_ix = by_type[WalAppend]
        if wal_ix:
            try:
                idxs = wal_write(wal, [pending[i] for i in wal_ix])
                for i, idx in zip(wal_ix, idxs, strict=True):
                    replies[i] = (idx, None)
            except WalUnavailable as e:
                for i in wal_ix:
                    replies[i] = (None, e)
        get_ix = by_type[DedupGet]
        if get_ix:
            now = pending[get_ix[0]].now
            try:
                if all(pending[i].now == now for i in get_ix):
                    res = store.get_many([(pending[i].tenant, pending[i].pcs_id) for i in get_ix], now)
                else:
                    res = [store.get(pending[i].tenant, pending[i].pcs_id, pending[i].now) for i in get_ix]
                for i, r in zip(get_ix, res, strict=True):
                    replies[i] = (r, None)
            except StoreUnavailable as e:
                for i in get_ix:
                    replies[i] = (None, e)
        put_ix = by_type[DedupPut]
        if put_ix:
            p0 = pending[put_ix[0]]
            try:
                if all(pending[i].now == p0.now and pending[i].ttl_s == p0.ttl_s for i in put_ix):
                    res = store.put_many_if_absent(
                        [(pending[i].tenant, pending[i].pcs_id, pending[i].outcome) for i in put_ix], p0.now, p0.ttl_s)
                else:
                    res = [store.put_if_absent(pending[i].tenant, pending[i].pcs_id, pending[i].outcome,
                                               pending[i].now, pending[i].ttl_s) for i in put_ix]
                for i, r in zip(put_ix, res, strict=True):
                    replies[i] = (r, None)
            except StoreUnavailable as e:
                for i in put_ix:
                    replies[i] = (None, e)
    return out  # type: ignore[return-value]


def replay_records(verifier: Verifier, records: Any, store: Any, sink: Sink | None = None) -> list[Response]:
    """Run inbox records (objects with ``tenant``, ``received_at``, ``body``, e.g.
    :class:`flk.impl.storage.wal.InboxRecord` or :class:`WalAppend`) through steps 3-8
    again, with ``now = received_at`` (INV-IDEMPOTENT-REPLAY). A ``tenant`` of
    ``""`` means the request had no ``X-Tenant-Id``."""
    out = []
    for rec in records:
        gen = verifier.handle(Request(rec.body, rec.tenant or None), rec.received_at, replay=True)
        out.append(run_sync(gen, None, store, sink))
    return out


def replay_log(verifier: Verifier, log: Any, store: Any, sink: Sink | None = None,
               from_index: int = 0) -> list[Response]:
    """Replay an inbox :class:`flk.impl.storage.wal.SegmentedLog` from ``from_index``."""
    from ..storage.wal import decode_inbox_record

    return replay_records(verifier, (decode_inbox_record(p) for _, p in log.records(from_index)), store, sink)
