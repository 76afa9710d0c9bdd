"""The verify pipeline: WAL-first, verify-before-dedup, first-write-wins (SPEC.md section 8).

Why this module exists: it holds the verifier's steps -- the methods of
:class:`Verifier` (``refuse_before_wal``, ``parse``, ``authenticate``, ``decide``,
``settle``, ``existing``, ...) -- and the *reference* pipeline that reads as the
protocol: :meth:`Verifier.handle`, a generator that yields effect objects and
receives their results (``gen.send``) or failures (``gen.throw``), with its
drivers :func:`run_sync` and :func:`run_batch`. Production decides every answer in
:mod:`flk.impl.verifier.core` (:class:`~flk.impl.verifier.core.VerifyBatch`), which
calls the same step methods; the generator pipeline is kept as the slower readable
oracle of the differential tests (tests/verifier/test_fastpath_differential.py),
and nothing in production drives it.

It is a *total function*: any body bytes and any header values get an answer
(2xx, 4xx or 503 problem+json), never an exception -- wire parsing and
validation (:mod:`flk.impl.verifier.wire`) test every value's type first, and
nothing later looks at a value step 3 did not check.

Theory of operation (one request)::

    1. body size > limit                          -> 413            (no WAL)
       X-Tenant-Id too long / not UTF-8 encodable -> 431 / 400      (no WAL)
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

:meth:`Verifier.handle` reads as these steps: ``refuse_before_wal`` (1),
the WAL append (2), ``parse`` (3), ``authenticate`` (4), the dedup lookup (5)
and ``_decide_and_record`` (6-8). Every answer is also announced with ``Emit(event)`` (a
dict: kind, tenant_label, status, and for outcomes pcs_id / payload_digest /
reasons -- never payloads, signatures or keys) for metrics, audit and history.

Batching (:func:`run_batch`): requests advance in lock step; all WAL appends of
a step share one ``sync`` (group commit) and all dedup reads / writes of a step
one ``get_many`` / ``put_many_if_absent`` call (one transaction). This is
per-request exact: each response equals the response of the same requests run
one after another through :func:`run_sync`, because a batch's puts run in
request order and a request that loses to an earlier one in the batch takes
the lost-race path of step 7, which answers exactly what a dedup hit in step 5
would have answered.

:func:`flk.impl.verifier.core.run_requests` is the production batch (the core's steps
called directly): it answers exactly what :func:`run_batch` answers.

Replay (:meth:`Verifier.handle` with ``replay=True``; in production
:func:`flk.impl.verifier.core.replay_records`): a record read back from
the inbox WAL runs steps 3-8 with ``now = received_at`` (no 413/429, no new WAL
record). ``first_seen`` is ``received_at``, so replaying a WAL prefix any number
of times yields the same dedup state (INV-IDEMPOTENT-REPLAY).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ..core import accel, textdata
from ..core.canonical import SIGNED_FIELDS, canonical_bytes, round9
from ..core.records import frozen_record
from ..core.signals import (
    DEFAULT_BUDGET,
    DEFAULT_REGIME,
    BudgetParams,
    RegimeThresholds,
    budget,
    regime,
    theil_sen_slope,
)
from ..core.signing import verify_ed25519, verify_hmac
from ..dedup import DEFAULT_TTL_S, StoredOutcome, StoreUnavailable
from ..dedup.base import float_repr
from ..storage.inbox import InboxRecord, encode_inbox_record, encode_inbox_records
from . import accelerated
from .problems import CATALOG, CONTENT_TYPE, problem_body, problem_headers
from .tenants import Limiter, Tenant, TenantRegistry
from .wire import (  # noqa: F401 -- re-exported: the pipeline's public wire names
    EPOCH_MAX,
    MAX_DIM,
    MAX_SCALES,
    OPTIONAL,
    REGIMES,
    REQUIRED,
    SCALE_MAX,
    SCHEMA_NAME,
    U64_MAX,
    VERSION_PROFILE,
    _fast_valid,
    _validate_full,
    parse_strict,
    validate_pcs,
)

REPLAY_HEADER = "Idempotent-Replayed"
JSON_CT = "application/json"
PROBLEM_CT = CONTENT_TYPE

# reason codes of step 6 (machine-readable; SPEC.md section 8)
R_D_HAT = "d_hat_mismatch"
R_COH = "coh_out_of_bounds"
R_R = "r_out_of_bounds"
R_NJ = "n_j_decreasing"
R_BUDGET = "budget_mismatch"
R_REGIME = "regime_mismatch"
REASON_CODES = (R_D_HAT, R_COH, R_R, R_NJ, R_BUDGET, R_REGIME)
# The compiled steps (flk.impl.verifier._fastverify), bound through the registry flk.impl.core.accel.
# step 6 (bit i of its answer is REASON_CODES[i]); None on the pure path
_compiled_signal_check = accel.bind(accelerated.SIGNAL_CHECK, globals(), "_compiled_signal_check")
# step 4 (profile v1, HMAC) in one compiled call: signature check and payload digest; None on the pure path
_compiled_hmac_auth = accel.bind(accelerated.HMAC_AUTH_V1, globals(), "_compiled_hmac_auth")
# a batch's inbox WAL frames in one call (None: the pure path, encode_inbox_records + append_many)
_compiled_frame_records = accel.bind(accelerated.FRAME_RECORDS, globals(), "_compiled_frame_records")

# hook reasons that reject (HTTP status) instead of escalating -- governance's codes
DEFAULT_REJECT_STATUS: Mapping[str, int] = {
    "pii_detected": 400,
    "anomaly_reject": 400,
    "vrf_invalid": 401,
    "vrf_missing": 401,
    "vrf_seed_mismatch": 401,
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
# Request and Response are ``@frozen_record`` dataclasses (:mod:`flk.impl.core.records`): the
# generated frozen __init__'s object.__setattr__ per field is a large share of a request's cost
@frozen_record
class Request:
    body: bytes
    tenant: str | None = None  # the X-Tenant-Id header, verbatim (None if absent)
    headers: Mapping[str, str] = field(default_factory=dict)


@frozen_record
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def json(self) -> Any:
        return textdata.json_loads(self.body)


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


class SignalCheck(NamedTuple):
    """Step 6: the reasons to escalate and the recomputed (published, round9) signals."""

    reasons: list[str]
    d_hat: float
    budget: float
    regime: str


def payload_digest(pcs: Mapping) -> str:
    """Hex SHA-256 of the v1 canonical bytes of the signed subset."""
    return hashlib.sha256(canonical_bytes(pcs, "v1")).hexdigest()


# -- responses ----------------------------------------------------------------------------
PROBLEMS: Mapping[str, tuple[int, str]] = CATALOG  # slug -> (status, title): the one catalog


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def problem(slug: str, detail: str, retry_after: int | None = None, **extra: Any) -> Response:
    """The pipeline's answer for catalog problem ``slug`` (flk.impl.verifier.problems)."""
    return Response(CATALOG[slug].status, tuple(problem_headers(retry_after)), problem_body(slug, detail, **extra))


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


def _event(label: str, resp: Response, kind: str, **event: Any) -> dict[str, Any]:
    return {"kind": kind, "tenant_label": label, "status": resp.status, **event}


def _done(label: str, resp: Response, kind: str, **event: Any) -> Generator[Effect, Any, Response]:
    yield Emit(_event(label, resp, kind, **event))
    return resp


def _emit(answer: tuple[Response, dict[str, Any]]) -> Generator[Effect, Any, Response]:
    """Yield an answer's event, return its response."""
    yield Emit(answer[1])
    return answer[0]


class _Authenticated(NamedTuple):
    """What step 4 hands on: the signed payload's identity."""

    tenant_id: str
    profile: str
    digest: str


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
        self.policy_version_json = json.dumps(policy.version, ensure_ascii=True)
        self.region_json = json.dumps(region, ensure_ascii=True)
        b, t = policy.budget, policy.regime
        params = (policy.tol_d, policy.tol_coh, policy.tol_budget, b.base, b.alpha, b.beta, b.gamma, b.d0,
                  t.sticky_coh, t.sticky_d_max, t.non_sticky_d_min)
        # the compiled step 6 takes float parameters only; others keep the pure code
        self.signal_params = params if all(type(x) is float for x in params) else None

    def with_tenants(self, tenants: TenantRegistry, hooks: Sequence[Hook]) -> Verifier:
        """This configuration with other tenants and hooks (a reload of the tenants file):
        a new verifier sharing the policy, region, limits, reject statuses and the token
        buckets (the buckets are per tenant id: a tenant keeps what it used, and its new
        limits apply from its next request). Drivers swap the object they hold; a batch
        keeps the verifier it began with, so no request sees half of each."""
        return Verifier(tenants, self.policy, self.region, self.limits, hooks, self.limiter, self.reject_status)

    def answer_body(self, pcs_id: str, escalated: bool, reasons: list[str], recomputed_d_hat: float,
              recomputed_budget: float, recomputed_regime: str, now: float) -> bytes:
        """The 200/202 body: byte for byte ``json.dumps(obj, sort_keys=True,
        separators=(",", ":"), ensure_ascii=True)`` of the documented object
        (a test checks the equality), written out for speed."""
        return (
            f'{{"accepted":{"false" if escalated else "true"},"escalated":{"true" if escalated else "false"},'
            f'"first_seen":{float_repr(float(now))},"pcs_id":"{pcs_id}","policy_version":{self.policy_version_json},'
            f'"reasons":{_dumps(reasons).decode() if reasons else "[]"},'
            f'"recomputed":{{"D_hat":{round9(recomputed_d_hat)!r},"budget":{round9(recomputed_budget)!r},'
            f'"regime":"{recomputed_regime}"}},'
            f'"region":{self.region_json}}}'
        ).encode("ascii")

    # step 6
    def check_signals(self, pcs: Mapping, profile: str) -> SignalCheck:
        """Recompute D-hat, budget and regime with :mod:`flk.impl.core.signals` and
        compare them with the claims (``pcs`` passed step 3). The compiled core
        answers the common case (float claims, up to 16 scales) with the same
        arithmetic; :meth:`pure_check_signals` is the reference."""
        if _compiled_signal_check is not None and self.signal_params is not None:
            got = _compiled_signal_check(pcs["scales"], pcs["N_j"], pcs["coh_star"], pcs["r"], pcs["D_hat"],
                                         pcs["budget"], pcs["regime"], profile == "legacy-0.1", self.signal_params)
            if got is not None:
                bits, recomputed_d_hat, recomputed_budget, recomputed_regime = got
                reasons = [code for i, code in enumerate(REASON_CODES) if bits >> i & 1] if bits else []
                return SignalCheck(reasons, recomputed_d_hat, recomputed_budget, recomputed_regime)
        return self.pure_check_signals(pcs, profile)

    def pure_check_signals(self, pcs: Mapping, profile: str) -> SignalCheck:
        """:meth:`check_signals` in pure Python (the reference)."""
        policy = self.policy
        scales = pcs["scales"]
        counts_by_scale = pcs["N_j"]
        counts = [counts_by_scale[str(scale)] for scale in scales]
        # budget and regime come from the *published* D-hat, round9 of the recomputed one (SPEC 2,
        # 8 step 6): an agent and a verifier cannot disagree at a threshold by a sub-1e-9 residue
        recomputed_d_hat = round9(theil_sen_slope(scales, counts, profile))  # inputs checked in step 3
        coh, compressibility = round9(pcs["coh_star"]), round9(pcs["r"])
        # out-of-range claims are flagged below; recompute with the value clamped to [0, 1]
        coh_clamped = min(1.0, max(0.0, coh))
        compressibility_clamped = min(1.0, max(0.0, compressibility))
        recomputed_budget = budget(recomputed_d_hat, coh_clamped, compressibility_clamped, policy.budget)
        recomputed_regime = regime(recomputed_d_hat, coh_clamped, policy.regime)
        reasons = []
        if abs(recomputed_d_hat - round9(pcs["D_hat"])) > policy.tol_d:
            reasons.append(R_D_HAT)
        if not 0.0 <= coh <= 1.0 + policy.tol_coh:
            reasons.append(R_COH)
        if not 0.0 <= compressibility <= 1.0:
            reasons.append(R_R)
        if counts != sorted(counts):  # N_j must not decrease as the scale grows
            reasons.append(R_NJ)
        if abs(recomputed_budget - round9(pcs["budget"])) > policy.tol_budget:
            reasons.append(R_BUDGET)
        if recomputed_regime != pcs["regime"]:
            reasons.append(R_REGIME)
        return SignalCheck(reasons, recomputed_d_hat, recomputed_budget, recomputed_regime)

    @staticmethod
    def _verify_sig(tenant: Tenant, pcs: Mapping, profile: str, now: float) -> bool:
        """The tenant's active keys only (INV-TENANT-ISOLATION), verified by
        :mod:`flk.impl.core.signing` (every key tried; constant-time comparison)."""
        keys = tenant.active_keys(now)
        if not keys:
            return False
        if tenant.alg == "hmac":
            return verify_hmac(pcs, pcs["sig"], keys, profile)
        return verify_ed25519({name: pcs[name] for name in SIGNED_FIELDS}, pcs["sig"], keys, profile)

    def handle(
        self, req: Request, now: float, *, replay: bool = False
    ) -> Generator[Effect, Any, Response]:
        """One request through steps 1-8 (``replay``: steps 3-8 of a WAL record)."""
        tenant = self.tenants.resolve(req.tenant)
        label = tenant.tenant_id if tenant is not None else "_unknown"
        if not replay:
            refused = self.refuse_before_wal(req, tenant, now)  # step 1
            if refused is not None:
                return (yield from _done(label, refused, "rejected"))
            try:  # step 2
                yield WalAppend(req.tenant or "", now, self.region, bytes(req.body))
            except WalUnavailable:
                return (yield from _emit(self.wal_failed(label)))
            yield Emit({"kind": "ingest", "tenant_label": label})
        parsed = self.parse(req.body)  # step 3
        if isinstance(parsed, Response):
            return (yield from _done(label, parsed, "rejected"))
        who = self.authenticate(parsed, tenant, now)  # step 4 -- before any dedup effect
        if isinstance(who, Response):
            return (yield from _done(label, who, "signature_error"))
        try:  # step 5
            stored = yield DedupGet(who.tenant_id, parsed["pcs_id"], now)
        except StoreUnavailable:
            return (yield from _emit(self.unavailable(label)))
        if stored is not None:
            return (yield from _emit(self.existing(stored, who.digest, parsed["pcs_id"], label)))
        return (yield from self._decide_and_record(parsed, who, label, now))  # steps 6-8

    # step 1
    def refuse_before_wal(self, req: Request, tenant: Tenant | None, now: float) -> Response | None:
        """413 (body), 431 / 400 (an X-Tenant-Id too long / not encodable, as the server's
        head check answers) or 429 (rate, quota) before the WAL; None when admitted."""
        if len(req.body) > self.limits.max_body_bytes:
            return problem("payload-too-large", f"body exceeds {self.limits.max_body_bytes} bytes")
        if req.tenant is not None and not _recordable_header(req.tenant):
            if isinstance(req.tenant, str) and len(req.tenant) > MAX_TENANT_HEADER:
                return problem("headers-too-large", f"X-Tenant-Id longer than {MAX_TENANT_HEADER} characters")
            return problem("bad-request", "X-Tenant-Id is not encodable as UTF-8")
        if tenant is not None:
            admission = self.limiter.admit(tenant, now)
            if not admission.ok:
                return self.admission_refused(admission)
        return None

    @staticmethod
    def admission_refused(admission: Any) -> Response:
        """The 429 of a tenant's refused admission (rate or quota)."""
        slug = "quota-exceeded" if admission.reason == "quota_exceeded" else "rate-limited"
        return problem(slug, admission.reason, retry_after=admission.retry_after)

    # step 3
    @staticmethod
    def parse(body: bytes) -> dict | Response:
        """The validated PCS, or the 400 naming every problem."""
        try:
            doc = parse_strict(body)
        except ValueError as exc:
            return problem("invalid-json", str(exc), errors=[{"field": "", "message": str(exc)}])
        errors = validate_pcs(doc)
        if errors:
            return problem("invalid-pcs",
                           f"{len(errors)} invalid field(s): " + ", ".join(sorted({name for name, _ in errors})),
                           errors=[{"field": name, "message": message} for name, message in errors])
        return doc

    # step 4 (INV-VERIFY-BEFORE-DEDUP, INV-TENANT-ISOLATION)
    def authenticate(self, doc: dict, tenant: Tenant | None, now: float) -> _Authenticated | Response:
        """Tenant, profile, algorithm and signature: a 401, or who signed what."""
        if tenant is None:
            return problem("unknown-tenant", "X-Tenant-Id names no configured tenant")
        profile = VERSION_PROFILE[doc["version"]]
        if not tenant.allows(profile) or (profile == "legacy-0.1" and tenant.alg != "hmac"):
            return problem("profile-not-allowed", f"profile {profile} is not enabled for this tenant")
        if "sig_alg" in doc and doc["sig_alg"] != tenant.alg:
            return problem("bad-signature", "sig_alg does not match the tenant's algorithm")
        if _compiled_hmac_auth is not None and profile == "v1" and tenant.alg == "hmac":
            keys = tenant.active_keys(now)
            digest = _compiled_hmac_auth(doc, keys) if keys else False  # None: the pure path decides
            if digest is False:
                return problem("bad-signature", "no active key of this tenant verifies sig")
            if digest is not None:
                return _Authenticated(tenant.tenant_id, profile, digest)
        if not self._verify_sig(tenant, doc, profile, now):
            return problem("bad-signature", "no active key of this tenant verifies sig")
        digest = hashlib.sha256(canonical_bytes(doc, "v1")).hexdigest()  # == payload_digest(doc)
        return _Authenticated(tenant.tenant_id, profile, digest)

    # steps 6, 7 and 8
    def _decide_and_record(self, doc: dict, who: _Authenticated, label: str, now: float):
        pcs_id = doc["pcs_id"]
        decided, detail = self.decide(doc, who, now)
        if type(decided) is Response:  # a hook reason that rejects
            return (yield from _done(label, decided, detail, pcs_id=pcs_id))
        try:  # step 7: atomic put-if-absent
            won, winner = yield DedupPut(who.tenant_id, pcs_id, decided, now, self.limits.ttl_s)
        except StoreUnavailable:
            return (yield from _emit(self.unavailable(label)))
        if not won:
            return (yield from _emit(self.existing(winner, who.digest, pcs_id, label)))
        yield Emit(self.recorded_event(decided, detail, pcs_id, who, label))
        return _outcome_response(decided, False)

    # step 6
    def decide(self, doc: dict, who: _Authenticated, now: float) -> tuple[StoredOutcome, list[str]] | tuple[Response, str]:
        """Signals and hooks: ``(outcome to store, reasons)``, or ``(rejecting problem, event kind)``."""
        return self.settle(doc["pcs_id"], who, now, self.check_signals(doc, who.profile), doc)

    def settle(self, pcs_id: str, who: _Authenticated, now: float, checked: SignalCheck,
                doc: dict | None) -> tuple[StoredOutcome, list[str]] | tuple[Response, str]:
        """:meth:`_decide` once the signals are checked (``doc`` only for the hooks)."""
        reasons = checked.reasons
        for hook in self.hooks:
            for reason in hook(doc, who.tenant_id):
                if reason not in reasons:
                    reasons.append(reason)
        rejecting = [reason for reason in reasons if reason in self.reject_status] if reasons else None
        if rejecting:
            status = self.reject_status[rejecting[0]]
            slug = "rejected-by-policy" if status == 400 else "unauthorized-by-policy"
            return (problem(slug, "rejected: " + ", ".join(rejecting), reasons=rejecting),
                    "rejected" if status == 400 else "signature_error")
        escalated = bool(reasons)
        body = self.answer_body(pcs_id, escalated, reasons, checked.d_hat, checked.budget, checked.regime, now)
        return StoredOutcome(who.digest, 202 if escalated else 200, body, now, self.region, self.policy.version), reasons

    def recorded_event(self, outcome: StoredOutcome, reasons: list[str], pcs_id: str, who: _Authenticated,
                        label: str) -> dict[str, Any]:
        return self.accepted_event(outcome.status, outcome.first_seen, reasons, pcs_id, who, label)

    def accepted_event(self, status: int, first_seen: float, reasons: Sequence[str], pcs_id: str,
                       who: _Authenticated, label: str) -> dict[str, Any]:
        """:meth:`recorded_event` of an outcome's status and first_seen (none built)."""
        return {"kind": "escalated" if status == 202 else "accepted", "tenant_label": label,
                "status": status, "pcs_id": pcs_id, "tenant": who.tenant_id,
                "payload_digest": who.digest, "reasons": list(reasons), "first_seen": first_seen,
                "policy_version": self.policy.version}

    # the answers of step 5/7 (existing outcome), of a store outage and of a WAL failure: (response, event)
    def existing(self, stored: StoredOutcome, digest: str, pcs_id: str, label: str) -> tuple[Response, dict]:
        if stored.payload_digest == digest:
            return (_outcome_response(stored, True),
                    {"kind": "dedup_hit", "tenant_label": label, "status": stored.status, "pcs_id": pcs_id})
        resp = problem("conflict", "this pcs_id was recorded with a different signed payload",
                       pcs_id=pcs_id, first_seen=stored.first_seen)
        return resp, {"kind": "dedup_conflict", "tenant_label": label, "status": 409, "pcs_id": pcs_id,
                      "payload_digest": digest}

    def unavailable(self, label: str) -> tuple[Response, dict]:
        resp = problem("store-unavailable", "dedup store unreachable; the request is in the WAL",
                       retry_after=self.limits.retry_after_s)
        return resp, {"kind": "store_unavailable", "tenant_label": label, "status": 503}

    def wal_failed(self, label: str) -> tuple[Response, dict]:
        resp = problem("wal-unavailable", "the request was not recorded; retry", retry_after=self.limits.retry_after_s)
        return resp, _event(label, resp, "wal_error")


# -- drivers ------------------------------------------------------------------------------
Sink = Callable[[Mapping[str, Any]], None]


class RecordWal(Protocol):
    """A WAL that keeps the ``WalAppend`` effects themselves (no encoding), e.g.
    the memory WAL of tests and the simulator (flk.impl.testing.memwal)."""

    def append_record(self, effect: WalAppend) -> int: ...

    def sync(self) -> None: ...


def _wal_errors() -> tuple[type[BaseException], ...]:
    from ..storage.wal import WalError

    return (OSError, WalError, TimeoutError)


def _write_records(wal: RecordWal, effects: Sequence[WalAppend]) -> list[int]:
    try:
        indexes = [wal.append_record(effect) for effect in effects]
        wal.sync()
    except OSError as exc:
        raise WalUnavailable(type(exc).__name__) from None
    return indexes


def wal_write(wal: Any, effects: Sequence[WalAppend]) -> list[int]:
    """Append ``effects`` in order and return their indexes once ALL are durable.

    ``wal`` is a :class:`flk.impl.storage.wal.SegmentedLog` (``append_many`` then one
    ``sync`` -- a group commit of this batch), a :class:`flk.impl.storage.groupcommitter.GroupCommitter`
    (``append_many`` then ``wait`` for the commit thread's fsync, which also
    batches across threads), or a :class:`RecordWal` (it has ``append_record``).
    Failures raise :class:`WalUnavailable`."""
    if hasattr(wal, "append_record"):
        return _write_records(wal, effects)
    try:
        first = append_inbox(wal, effects)
        last = first + len(effects) - 1
        if hasattr(wal, "wait"):  # GroupCommitter
            wal.wait(last)
        else:
            wal.sync()
    except _wal_errors() as exc:
        raise WalUnavailable(type(exc).__name__) from None
    return list(range(first, last + 1))


def frame_inbox(effects: Sequence[WalAppend]) -> bytes | None:
    """The WAL frames of ``effects``' inbox records, concatenated -- ``encode_frame`` of
    each ``encode_inbox_records`` payload, the same bytes -- in one compiled call
    (``frame_records``); None on the pure path or for anything but plain records
    (exact types, a finite non-zero receive time, encodable names): the caller then
    encodes them the reference way, which answers (or refuses) them."""
    frame = _compiled_frame_records
    if frame is None:
        return None
    heads_of: dict[tuple[str, float, str], bytes] = {}
    heads, bodies = [], []
    for effect in effects:
        tenant, received_at, region, body = effect
        if type(body) is not bytes or type(received_at) is not float or received_at == 0.0 \
                or type(tenant) is not str or type(region) is not str:
            return None
        key = (tenant, received_at, region)
        head = heads_of.get(key)
        if head is None:
            try:
                head = heads_of[key] = encode_inbox_record(InboxRecord(tenant, received_at, region, b""))
            except ValueError:  # InvalidInput: the reference refuses it
                return None
        heads.append(head)
        bodies.append(body)
    return frame(heads, bodies)


def append_inbox(wal: Any, effects: Sequence[WalAppend], roll: bool | None = None) -> int:
    """Append ``effects``' inbox records to ``wal`` (no sync); the index of the first.
    A WAL with ``append_framed`` (:class:`flk.impl.storage.wal.SegmentedLog`) takes the
    compiled frames of :func:`frame_inbox`; otherwise, or on the pure path,
    ``append_many(encode_inbox_records(effects)[, roll])``. ``roll`` None: the WAL's
    default."""
    if hasattr(wal, "append_framed"):
        data = frame_inbox(effects)
        if data is not None:
            return wal.append_framed(data, len(effects)) if roll is None else wal.append_framed(data, len(effects), roll)
    payloads = encode_inbox_records(effects)
    return wal.append_many(payloads) if roll is None else wal.append_many(payloads, roll)


def _carry_out(effect: Effect, wal: Any, store: Any) -> tuple[Any, BaseException | None]:
    """One I/O effect of :func:`run_sync`: ``(reply, None)`` or ``(None, failure to throw in)``."""
    try:
        if isinstance(effect, WalAppend):
            return wal_write(wal, [effect])[0], None
        if isinstance(effect, DedupGet):
            return store.get(effect.tenant, effect.pcs_id, effect.now), None
        if isinstance(effect, DedupPut):
            return store.put_if_absent(effect.tenant, effect.pcs_id, effect.outcome, effect.now, effect.ttl_s), None
    except (WalUnavailable, StoreUnavailable) as exc:
        return None, exc
    raise TypeError(f"unknown effect {type(effect).__name__}")  # a new effect type without a driver case


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
    failure: BaseException | None = None
    label = "_none"
    started = time.perf_counter() if latency is not None else 0.0
    while True:
        try:
            effect = gen.throw(failure) if failure is not None else gen.send(reply)
        except StopIteration as stop:
            if latency is not None:
                latency(label, time.perf_counter() - started)
            return stop.value
        if isinstance(effect, Emit):
            reply, failure = None, None
            label = effect.event.get("tenant_label", label)
            if sink is not None:
                sink(effect.event)
        else:
            reply, failure = _carry_out(effect, wal, store)


def _advance(gen: Generator[Effect, Any, Response], reply: Any, failure: BaseException | None,
             sink: Sink | None, on_label: Callable[[str], None] | None) -> Effect | Response:
    """Run ``gen`` to its next I/O effect (handing ``Emit`` events to ``sink``) or to its response."""
    try:
        while True:
            effect = gen.throw(failure) if failure is not None else gen.send(reply)
            reply, failure = None, None
            if type(effect) is not Emit:
                return effect
            if on_label is not None:
                on_label(effect.event.get("tenant_label", "_none"))
            if sink is not None:
                sink(effect.event)
    except StopIteration as stop:
        return stop.value


Replies = dict[int, tuple[Any, BaseException | None]]


def _batch_wal(pending: Mapping[int, Any], wal: Any, replies: Replies) -> None:
    """Every pending ``WalAppend`` in request order, made durable by ONE sync."""
    waiting = [i for i, effect in pending.items() if type(effect) is WalAppend]
    if not waiting:
        return
    try:
        indexes = wal_write(wal, [pending[i] for i in waiting])
    except WalUnavailable as exc:
        replies.update(dict.fromkeys(waiting, (None, exc)))
        return
    replies.update(zip(waiting, [(index, None) for index in indexes], strict=True))


def _batch_gets(pending: Mapping[int, Any], store: Any, replies: Replies) -> None:
    """Every pending ``DedupGet`` in one ``get_many`` (when they share one ``now``)."""
    waiting = [i for i, effect in pending.items() if type(effect) is DedupGet]
    if not waiting:
        return
    gets = [pending[i] for i in waiting]
    try:
        if len({get.now for get in gets}) == 1:
            results = store.get_many([(get.tenant, get.pcs_id) for get in gets], gets[0].now)
        else:
            results = [store.get(get.tenant, get.pcs_id, get.now) for get in gets]
    except StoreUnavailable as exc:
        replies.update(dict.fromkeys(waiting, (None, exc)))
        return
    replies.update(zip(waiting, [(result, None) for result in results], strict=True))


def _batch_puts(pending: Mapping[int, Any], store: Any, replies: Replies) -> None:
    """Every pending ``DedupPut`` in one ``put_many_if_absent`` (one transaction, request order)."""
    waiting = [i for i, effect in pending.items() if type(effect) is DedupPut]
    if not waiting:
        return
    puts = [pending[i] for i in waiting]
    first = puts[0]
    try:
        if len({(put.now, put.ttl_s) for put in puts}) == 1:
            results = store.put_many_if_absent([(put.tenant, put.pcs_id, put.outcome) for put in puts],
                                               first.now, first.ttl_s)
        else:
            results = [store.put_if_absent(put.tenant, put.pcs_id, put.outcome, put.now, put.ttl_s)
                       for put in puts]
    except StoreUnavailable as exc:
        replies.update(dict.fromkeys(waiting, (None, exc)))
        return
    replies.update(zip(waiting, [(result, None) for result in results], strict=True))


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
    started = time.perf_counter() if latency is not None else 0.0
    labels: dict[int, str] = {}
    responses: list[Response | None] = [None] * len(gens)
    replies: Replies = {i: (None, None) for i in range(len(gens))}
    while replies:
        pending: dict[int, Any] = {}
        for i, (reply, failure) in replies.items():  # in request order
            record_label = (lambda label, i=i: labels.__setitem__(i, label)) if latency is not None else None
            step = _advance(gens[i], reply, failure, sink, record_label)
            if isinstance(step, Response):
                responses[i] = step
                if latency is not None:
                    latency(labels.get(i, "_none"), time.perf_counter() - started)
            elif type(step) in (WalAppend, DedupGet, DedupPut):
                pending[i] = step
            else:  # pragma: no cover - a new effect type without a driver case
                raise TypeError(f"unknown effect {type(step).__name__}")
        replies = {}
        _batch_wal(pending, wal, replies)
        _batch_gets(pending, store, replies)
        _batch_puts(pending, store, replies)
        replies = dict(sorted(replies.items()))
    return responses  # type: ignore[return-value]
