"""``flk conformance server``: a black-box HTTP conformance suite for PCS verifier servers.

Why this module exists: the vector runner proves that an SDK produces the
right *bytes*; this suite proves that a *server* (``flk serve`` or anyone's
implementation of SPEC.md sections 8-9) makes the right *decisions* over HTTP:
verify before dedup, first write wins, byte-identical replays with the
``Idempotent-Replayed`` header, strict JSON, problem+json errors that name the
bad field, body limits, rate limits with ``Retry-After``, per-tenant keys and
per-tenant dedup.

Every case has a stable ID (``srv-...``, listed in PROTOCOL.md) and builds its
own fresh PCS with the reference core (:func:`flk.impl.agent.builder.build_pcs`, signed
with :func:`flk.impl.core.signing.sign_hmac`). The points, the raw stream and hence
the merkle root and ``pcs_id`` derive from a per-run seed (random unless
``--seed`` is given), so a rerun against the same long-lived server never
collides with an earlier run's dedup entries.

A well-behaved client retries 429 after ``Retry-After`` (SPEC.md section 9), and
so does this suite -- except in ``srv-rate-limit``, which provokes the 429 on
purpose. Every non-2xx answer anywhere in the run must be
``application/problem+json`` with ``type``, ``title`` and ``status``; a case
fails on the first answer that is not.

The suite logs statuses, problem types and field names -- never PCS bodies,
signatures or keys.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from flk.impl.core import junit, textdata

from .base64_spellings import lenient_spellings

SUBMIT_PATH = "/v1/pcs/submit"
REPLAY_HEADER = "Idempotent-Replayed"
TENANT_HEADER = "X-Tenant-Id"
PROBLEM_CT = "application/problem+json"
JSON_CT = "application/json"
PROBLEM_BASE = "urn:flk:problem:"
SUCCESS_KEYS = ("accepted", "escalated", "first_seen", "pcs_id", "policy_version", "reasons", "recomputed", "region")
DEFAULT_OVERSIZE = 1024 * 1024 + 1  # above SPEC's 64 KiB default and flk serve's 256 KiB
MAX_429_RETRIES = 30
MAX_RETRY_WAIT_S = 10.0


class CaseFailed(Exception):
    """The server's answer violates the spec; the message is the one-line reason."""


class CaseSkipped(Exception):
    """The case cannot run against this configuration (e.g. no second tenant)."""


class Unreachable(Exception):
    """The server cannot be reached at all (connection refused, DNS, timeout)."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise CaseFailed(message)


# ------------------------------------------------------------------------------ HTTP
@dataclasses.dataclass
class Exchange:
    """One HTTP answer, as the suite judges it."""

    status: int
    headers: httpx.Headers
    body: bytes
    what: str  # a short label for messages ("valid PCS", "tampered sig", ...)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def replayed(self) -> bool:
        return self.headers.get(REPLAY_HEADER, "").strip().lower() == "true"

    def json(self) -> Any:
        try:
            return textdata.json_loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def brief(self) -> str:
        kind = ""
        doc = self.json() if self.media_type == PROBLEM_CT else None
        if isinstance(doc, dict) and isinstance(doc.get("type"), str):
            kind = " " + doc["type"].removeprefix(PROBLEM_BASE)
        return f"{self.status}{kind}"


def problem_violations(ex: Exchange) -> list[str]:
    """Why ``ex`` is not a proper RFC 9457 problem answer (empty if it is)."""
    out = []
    if ex.media_type != PROBLEM_CT:
        out.append(f"Content-Type {ex.media_type or '(none)'!r}, expected {PROBLEM_CT}")
    doc = ex.json()
    if not isinstance(doc, dict):
        out.append("body is not a JSON object")
        return out
    if not isinstance(doc.get("type"), str) or not doc["type"]:
        out.append("no string 'type'")
    if not isinstance(doc.get("title"), str):
        out.append("no string 'title'")
    status = doc.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or status != ex.status:
        out.append(f"'status' member {status!r} differs from the HTTP status {ex.status}")
    return out


def _field_root(name: str) -> str:
    parts = [p for p in re.split(r"[./\[\]]", name) if p]
    return parts[0] if parts else ""


class Http:
    """A thin httpx client: POSTs PCS bodies, checks every error answer, honours 429."""

    def __init__(self, url: str, timeout: float, tenant: str | None) -> None:
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.client = httpx.Client(timeout=timeout, trust_env=False)
        self.retries_429 = 0
        self.lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        self.client.close()

    def preflight(self) -> None:
        """Any HTTP answer at all means reachable; a transport error means not."""
        try:
            self.client.get(self.url + SUBMIT_PATH)
        except httpx.HTTPError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None

    def post(
        self,
        body: bytes | Iterator[bytes],
        what: str,
        *,
        tenant: str | None | bool = True,
        content_type: str = JSON_CT,
        retry_429: bool = True,
    ) -> Exchange:
        """POST ``body`` to the submit path. ``tenant=True``: the run's tenant;
        a string: that tenant; ``None``/``False``: no ``X-Tenant-Id``."""
        headers = {"Content-Type": content_type}
        t = self.tenant if tenant is True else (tenant or None)
        if t is not None:
            headers[TENANT_HEADER] = t
        for _ in range(MAX_429_RETRIES + 1):
            try:
                r = self.client.post(self.url + SUBMIT_PATH, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise CaseFailed(f"{what}: HTTP transport error {type(exc).__name__}: {str(exc)[:120]}") from None
            ex = Exchange(r.status_code, r.headers, r.content, what)
            if ex.status >= 400:
                bad = problem_violations(ex)
                if bad:
                    raise CaseFailed(f"{what}: {ex.status} answer is not problem+json: {'; '.join(bad)}")
            if ex.status != 429 or not retry_429:
                return ex
            wait = retry_after_seconds(ex)
            if wait is None:
                raise CaseFailed(f"{what}: 429 without a valid Retry-After header")
            if isinstance(body, Iterator):
                return ex  # a streamed body cannot be sent twice
            with self.lock:
                self.retries_429 += 1
            self.sleep(min(max(wait, 0.05), MAX_RETRY_WAIT_S))
        raise CaseFailed(f"{what}: still 429 after {MAX_429_RETRIES} retries honouring Retry-After")


def retry_after_seconds(ex: Exchange) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110); None if absent/invalid."""
    raw = ex.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# ------------------------------------------------------------------------------ PCS factory
class PcsFactory:
    """Fresh, validly signed v1 PCS with run-unique merkle roots (from the run seed)."""

    def __init__(self, seed: int, key: bytes) -> None:
        self.seed = seed
        self.key = key
        self.n = 0
        self.shard = f"flk-conf-{seed:016x}"

    def fresh(self, key: bytes | None = None) -> dict:
        from flk.impl.agent.builder import Signer, build_pcs

        self.n += 1
        rng = random.Random(f"{self.seed}:{self.n}")
        pts = [[round(rng.uniform(0, 100), 3), round(rng.uniform(0, 100), 3)] for _ in range(48)]
        raw = (f"# flk conformance run {self.seed:016x} pcs {self.n}\n"
               + "".join(f"{x},{y}\n" for x, y in pts)).encode("ascii")
        return build_pcs(pts, raw, self.shard, self.n, Signer("hmac", key or self.key), seed=self.n)

    @staticmethod
    def sign(pcs: dict, key: bytes) -> dict:
        from flk.impl.agent.factory import sign

        return sign(pcs, key)

    def other_payload(self, pcs: dict, key: bytes | None = None) -> dict:
        """Same pcs_id, another signed subset (D_hat moved well inside the tolerance), validly signed."""
        from flk.impl.agent.factory import other_payload

        return other_payload(pcs, key or self.key, field="D_hat", delta=0.01)


def dumps(pcs: dict) -> bytes:
    return json.dumps(pcs, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def with_literal(pcs: dict, field: str, literal: str) -> bytes:
    """``pcs`` serialized with ``field``'s value replaced by raw JSON text ``literal``."""
    marker = "\u0000flk-literal\u0000"
    doc = dict(pcs)
    doc[field] = marker
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
    return text.replace(json.dumps(marker), literal, 1).encode("ascii")


def tamper_sig(sig: str) -> str:
    """The same-length strict base64 of the signature with one bit flipped."""
    from flk.impl.agent.factory import bad_signature

    return bad_signature({"sig": sig})["sig"]


# ------------------------------------------------------------------------------ judgements
def expect_success(ex: Exchange, pcs: dict, *, replay: bool | None = False) -> dict:
    """A 200/202 answer with the SPEC section 8 body; ``replay``: the header must (not) say so."""
    check(ex.status in (200, 202), f"{ex.what}: expected 200/202, got {ex.brief()}")
    check(ex.media_type == JSON_CT, f"{ex.what}: Content-Type {ex.media_type!r}, expected {JSON_CT}")
    pairs: list = []
    try:
        doc = textdata.json_loads(ex.body, object_pairs_hook=lambda p: (pairs.append([k for k, _ in p]), dict(p))[1])
    except (ValueError, UnicodeDecodeError):
        raise CaseFailed(f"{ex.what}: {ex.status} body is not JSON") from None
    check(isinstance(doc, dict), f"{ex.what}: body is not a JSON object")
    keys = sorted(doc)
    check(keys == list(SUCCESS_KEYS), f"{ex.what}: body keys {keys}, expected exactly {list(SUCCESS_KEYS)}")
    check(pairs[-1] == sorted(pairs[-1]), f"{ex.what}: body keys not sorted (SPEC section 8)")
    check(doc["pcs_id"] == pcs["pcs_id"], f"{ex.what}: body pcs_id differs from the submitted one")
    for k in ("accepted", "escalated"):
        check(isinstance(doc[k], bool), f"{ex.what}: {k} is not a boolean")
    check(doc["accepted"] is (not doc["escalated"]), f"{ex.what}: accepted must equal not escalated")
    check(isinstance(doc["reasons"], list) and all(isinstance(r, str) for r in doc["reasons"]),
          f"{ex.what}: reasons is not a list of strings")
    check(doc["accepted"] == (doc["reasons"] == []), f"{ex.what}: accepted iff no reasons")
    check((ex.status == 200) == doc["accepted"], f"{ex.what}: status {ex.status} but accepted={doc['accepted']}")
    fs = doc["first_seen"]
    check(isinstance(fs, (int, float)) and not isinstance(fs, bool), f"{ex.what}: first_seen is not a number")
    for k in ("policy_version", "region"):
        check(isinstance(doc[k], str), f"{ex.what}: {k} is not a string")
    rec = doc["recomputed"]
    check(isinstance(rec, dict) and sorted(rec) == ["D_hat", "budget", "regime"],
          f"{ex.what}: recomputed must hold exactly D_hat, budget, regime")
    check(all(isinstance(rec[k], (int, float)) and not isinstance(rec[k], bool) for k in ("D_hat", "budget"))
          and isinstance(rec["regime"], str), f"{ex.what}: recomputed has wrong types")
    if replay is True:
        check(ex.replayed, f"{ex.what}: replayed answer lacks '{REPLAY_HEADER}: true'")
    elif replay is False:
        check(not ex.replayed, f"{ex.what}: a first answer carries '{REPLAY_HEADER}: true'")
    return doc


def expect_replay_of(ex: Exchange, first: Exchange) -> None:
    check(ex.status == first.status, f"{ex.what}: replay status {ex.brief()} differs from the first {first.status}")
    check(ex.body == first.body, f"{ex.what}: replay body differs from the first answer's bytes "
          f"({len(ex.body)} vs {len(first.body)} bytes)")
    check(ex.replayed, f"{ex.what}: replayed answer lacks '{REPLAY_HEADER}: true'")


def expect_problem(ex: Exchange, statuses: tuple[int, ...], *, field: str | None = None,
                   slugs: tuple[str, ...] | None = None) -> dict:
    """An error answer with one of ``statuses`` (problem+json is checked by :meth:`Http.post`)."""
    want = "/".join(str(s) for s in statuses)
    check(ex.status in statuses, f"{ex.what}: expected {want}, got {ex.brief()}")
    doc = ex.json()
    if slugs is not None:
        check(doc.get("type") in {PROBLEM_BASE + s for s in slugs},
              f"{ex.what}: problem type {doc.get('type')!r}, expected {' or '.join(PROBLEM_BASE + s for s in slugs)}")
    if field is not None and ex.status == 400:
        errs = doc.get("errors")
        check(isinstance(errs, list) and all(isinstance(e, dict) for e in errs),
              f"{ex.what}: 400 without an errors[] list of {{field, message}}")
        named = [e.get("field") for e in errs]
        check(any(isinstance(f, str) and _field_root(f) == field for f in named),
              f"{ex.what}: errors[] names {named}, not {field!r}")
    return doc


# ------------------------------------------------------------------------------ the cases
# problem types (SPEC.md section 9: urn:flk:problem:<slug>) each rejection must carry
BAD_SIG = ("bad-signature",)
BAD_BODY = ("invalid-json", "invalid-pcs")  # not JSON at all / JSON but not a PCS object
TOO_LARGE = ("payload-too-large",)

@dataclasses.dataclass
class Target:
    url: str
    hmac_key: bytes
    tenant: str | None = None
    second_tenant: str | None = None
    second_key: bytes | None = None
    rate_limited: bool = False
    timeout: float = 10.0
    seed: int = 0
    oversize_bytes: int = DEFAULT_OVERSIZE
    rate_max_requests: int = 300


class Ctx:
    def __init__(self, target: Target, http: Http) -> None:
        self.t = target
        self.http = http
        self.pcs = PcsFactory(target.seed, target.hmac_key)

    def post(self, pcs_or_body: dict | bytes, what: str, **kw: Any) -> Exchange:
        body = dumps(pcs_or_body) if isinstance(pcs_or_body, dict) else pcs_or_body
        return self.http.post(body, what, **kw)

    def accept(self, pcs: dict, what: str, **kw: Any) -> Exchange:
        ex = self.post(pcs, what, **kw)
        expect_success(ex, pcs, replay=False)
        return ex


def case_valid(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    ex = c.accept(pcs, "valid PCS")
    return f"{ex.status} with the documented body, no replay header"


def case_replay(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    first = c.accept(pcs, "valid PCS")
    for i in (2, 3):
        expect_replay_of(c.post(pcs, f"submission #{i}"), first)
    return f"{first.status} then identical replays (same status, same {len(first.body)} body bytes, replay header)"


def case_replay_reformatted(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    first = c.accept(pcs, "valid PCS")
    # same signed subset, other key order and whitespace: the dedup digest is over the canonical subset
    other = json.dumps(dict(reversed(list(pcs.items()))), indent=2).encode("ascii")
    expect_replay_of(c.post(other, "same PCS, other key order and whitespace"), first)
    return "re-serialized body (key order, whitespace) replays the first answer"


def case_tampered_then_valid(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    bad = dict(pcs, sig=tamper_sig(pcs["sig"]))
    for i in (1, 2):
        ex = c.post(bad, f"tampered signature #{i}")
        expect_problem(ex, (401,), slugs=BAD_SIG)
    forged = dict(pcs, D_hat=round(pcs["D_hat"] + 0.01, 9))  # a signed field changed, old sig kept
    expect_problem(c.post(forged, "signed field changed, old signature"), (401,), slugs=BAD_SIG)
    first = c.accept(pcs, "valid PCS after the tampered ones (verify-before-dedup: nothing was cached)")
    expect_replay_of(c.post(pcs, "valid PCS again"), first)
    return f"tampered -> 401 twice, not cached; the valid PCS then {first.status} fresh, then replayed"


def case_tampered_after_accept(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    first = c.accept(pcs, "valid PCS")
    bad = dict(pcs, sig=tamper_sig(pcs["sig"]))
    expect_problem(c.post(bad, "tampered signature of an accepted pcs_id"), (401,), slugs=BAD_SIG)
    forged = c.pcs.other_payload(pcs, key=b"flk-conformance-not-the-tenant-key")
    expect_problem(c.post(forged, "other payload signed with a wrong key, accepted pcs_id"), (401,), slugs=BAD_SIG)
    expect_replay_of(c.post(pcs, "valid PCS again"), first)
    return "an accepted pcs_id with a bad signature -> 401, not a replay or 409 (signature checked first)"


def case_conflict(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    first = c.accept(pcs, "valid PCS")
    other = c.pcs.other_payload(pcs)
    for i in (1, 2):
        ex = c.post(other, f"same pcs_id, other signed payload #{i}")
        doc = expect_problem(ex, (409,), slugs=("conflict",))
        check(doc.get("pcs_id") == pcs["pcs_id"], f"{ex.what}: 409 problem lacks the pcs_id")
        fs = doc.get("first_seen")
        check(isinstance(fs, (int, float)) and not isinstance(fs, bool), f"{ex.what}: 409 problem lacks first_seen")
    expect_replay_of(c.post(pcs, "the first payload again"), first)
    return "409 conflict (twice, not stored); the first outcome replays unchanged (first write wins)"


RACERS = 8


def case_race_fww(c: Ctx) -> str:
    from concurrent.futures import ThreadPoolExecutor

    pcs = c.pcs.fresh()
    other = c.pcs.other_payload(pcs)
    payloads = [pcs if i % 2 == 0 else other for i in range(RACERS)]
    gate = threading.Barrier(RACERS, timeout=c.t.timeout)

    def submit(i: int) -> Exchange:
        gate.wait()
        return c.post(payloads[i], f"concurrent submission #{i + 1}")

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(submit, range(RACERS)))
    wins = [(p, ex) for p, ex in zip(payloads, answers, strict=True) if ex.status in (200, 202)]
    check(bool(wins), f"{RACERS} concurrent submissions of two payloads for one pcs_id: no 200/202 at all")
    winner = wins[0][0]
    loser = other if winner is pcs else pcs
    check(all(p is winner for p, _ in wins), "200/202 to both payloads of one pcs_id; the later payload must get 409 (INV-FWW)")
    fresh = [ex for _, ex in wins if not ex.replayed]
    check(len(fresh) == 1, f"{len(fresh)} answers without '{REPLAY_HEADER}: true' among the winner's {len(wins)}; "
          "expected exactly one first write, the rest replays")
    expect_success(fresh[0], winner, replay=False)
    for _, ex in wins:
        check(ex.body == fresh[0].body and ex.status == fresh[0].status,
              f"{ex.what}: a racing duplicate got other status/body bytes than the first write")
    for p, ex in zip(payloads, answers, strict=True):
        if p is loser:
            expect_problem(ex, (409,), slugs=("conflict",))
    expect_replay_of(c.post(winner, "the winning payload again"), fresh[0])
    expect_problem(c.post(loser, "the losing payload again"), (409,), slugs=("conflict",))
    return f"{RACERS} concurrent submissions, two payloads: one first write, {len(wins) - 1} replays, the rest 409"


MALFORMED = (
    (b"{not json", "not JSON"),
    (b"", "empty body"),
    (b'{"pcs_id":"ab"', "truncated object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1,2,3]", "an array, not an object"),
    (b"null", "null"),
)


def case_malformed_json(c: Ctx) -> str:
    for body, what in MALFORMED:
        expect_problem(c.post(body, what), (400,), slugs=BAD_BODY)
    pcs = c.pcs.fresh()
    expect_problem(c.post(dumps(pcs) + b" x", "valid PCS followed by trailing data"), (400,), slugs=BAD_BODY)
    c.accept(pcs, "the same PCS without the trailing data (nothing was cached)")
    return f"{len(MALFORMED) + 1} malformed bodies -> 400 problem+json"


def case_duplicate_keys(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    text = dumps(pcs)
    same = b'{"D_hat":' + json.dumps(pcs["D_hat"]).encode() + b"," + text[1:]
    other = b'{"D_hat":9.5,' + text[1:]  # a last-key-wins parser would see the valid PCS
    expect_problem(c.post(same, "duplicate key D_hat (same value)"), (400,), slugs=BAD_BODY)
    expect_problem(c.post(other, "duplicate key D_hat (first value differs)"), (400,), slugs=BAD_BODY)
    c.accept(pcs, "the same PCS without duplicates (nothing was cached)")
    return "duplicate object keys -> 400, the clean PCS is then accepted"


def case_nan(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    probes = (("D_hat", "NaN"), ("r", "Infinity"), ("coh_star", "-Infinity"), ("budget", "1e400"))
    for field, lit in probes:
        expect_problem(c.post(with_literal(pcs, field, lit), f"{field} = {lit}"), (400,), slugs=BAD_BODY)
    return "NaN, Infinity, -Infinity, 1e400 -> 400 problem+json"


def _schema_probes(pcs: dict) -> list[tuple[str, bytes, str]]:
    missing = {k: v for k, v in pcs.items() if k != "merkle_root"}
    return [
        ("merkle_root", dumps(missing), "missing field merkle_root"),
        ("epoch", dumps(dict(pcs, epoch=str(pcs["epoch"]))), "epoch as a string"),
        ("epoch", with_literal(pcs, "epoch", f"{pcs['epoch']}.0"), "epoch written 1.0 (integers as integers)"),
        ("scales", dumps(dict(pcs, scales="2,4,8")), "scales as a string"),
        ("N_j", dumps(dict(pcs, N_j=[1, 2, 3])), "N_j as an array"),
        ("coh_star", dumps(dict(pcs, coh_star="0.5")), "coh_star as a string"),
        ("shard_id", dumps(dict(pcs, shard_id="bad shard id!")), "shard_id with forbidden characters"),
        ("pcs_id", dumps(dict(pcs, pcs_id="not-a-sha256")), "pcs_id not 64 lowercase hex"),
        ("pcs_id", dumps(dict(pcs, pcs_id=pcs["pcs_id"].upper())), "pcs_id in upper case"),
        ("flk_unknown_member", dumps(dict(pcs, flk_unknown_member=1)), "unknown member in a v1 PCS"),
    ]


def case_schema(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    probes = _schema_probes(pcs)
    for field, body, what in probes:
        expect_problem(c.post(body, what), (400,), field=field, slugs=("invalid-pcs",))
    c.accept(pcs, "the same PCS, well-formed (nothing was cached)")
    return f"{len(probes)} schema violations -> 400 problem+json naming the field"


def case_pcs_id_mismatch(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    wrong = hashlib.sha256(b"flk-conformance|" + pcs["pcs_id"].encode()).hexdigest()
    bad = c.pcs.sign(dict(pcs, pcs_id=wrong), c.t.hmac_key)
    expect_problem(c.post(bad, "well-formed pcs_id not SHA-256(merkle_root|epoch|shard_id), validly signed"),
                   (400,), field="pcs_id", slugs=("invalid-pcs",))
    return "pcs_id that is not SHA-256(merkle_root|epoch|shard_id) -> 400 naming pcs_id (INV-PCSID)"


def case_oversize(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    text = dumps(pcs)
    pad = c.t.oversize_bytes - len(text)
    body = text[:-1] + b" " * max(pad, 0) + b"}"  # a valid PCS, padded with JSON whitespace
    expect_problem(c.post(body, f"{len(body)}-byte body with Content-Length"), (413,), slugs=TOO_LARGE)

    def chunks() -> Iterator[bytes]:
        step = 64 * 1024
        for i in range(0, len(body), step):
            yield body[i:i + step]

    expect_problem(c.post(chunks(), f"{len(body)}-byte body, chunked (no Content-Length)"), (413,), slugs=TOO_LARGE)
    c.accept(pcs, "the same PCS unpadded (nothing was recorded)")
    return f"{len(body)}-byte bodies -> 413 problem+json (with and without Content-Length)"


def _bad_sig_variants(sig: str) -> list[tuple[str, object]]:
    """The shared lenient spellings (also in the verify vectors), a too-short
    signature and a number."""
    out: list[tuple[str, object]] = [(what, text) for text, what in lenient_spellings(sig)]
    out.append(("too short (16 bytes)", base64.b64encode(base64.b64decode(sig)[:16]).decode()))
    out.append(("a number, not a string", 12345))
    return out


def case_bad_base64(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    for _ in range(40):  # prefer a signature with '+' or '/', so the URL-safe variant is probed too
        if "+" in pcs["sig"] or "/" in pcs["sig"]:
            break
        pcs = c.pcs.fresh()
    variants = _bad_sig_variants(pcs["sig"])
    for what, sig in variants:
        ex = c.post(dict(pcs, sig=sig), f"sig {what}")
        # 401 (bad signature) or, as SPEC section 8 step 3 checks sig's base64 first, 400 naming 'sig': both reject
        expect_problem(ex, (400, 401), field="sig", slugs=("invalid-pcs", "bad-signature"))
    c.accept(pcs, "the same PCS with its strict signature (nothing was cached)")
    return f"{len(variants)} malformed signatures rejected (400 naming sig / 401), then the valid one accepted"


def case_content_type(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    ex = c.post(pcs, "valid PCS sent as text/plain", content_type="text/plain")
    if ex.status in (400, 415):
        c.accept(pcs, "the same PCS as application/json (nothing was cached)")
        return f"text/plain -> {ex.brief()} problem+json; as application/json accepted"
    first = ex
    expect_success(ex, pcs, replay=False)
    expect_replay_of(c.post(pcs, "the same PCS as application/json"), first)
    return f"text/plain processed as JSON ({ex.status}; SPEC does not require 415); replayed as application/json"


def case_unknown_tenant(c: Ctx) -> str:
    pcs = c.pcs.fresh()
    ghost = f"flk-conf-no-such-tenant-{c.t.seed:016x}"
    expect_problem(c.post(pcs, "X-Tenant-Id naming no configured tenant", tenant=ghost), (401,),
                   slugs=("unknown-tenant",))
    c.accept(pcs, "the same PCS under the real tenant (nothing was cached)")
    return "unknown X-Tenant-Id -> 401 problem+json; the PCS is then accepted under its tenant"


def case_rate_limit(c: Ctx) -> str:
    if not c.t.rate_limited:
        raise CaseSkipped("server not declared rate-limited (pass --rate-limited when it runs with a low TOKEN_RATE)")
    limited = None
    sent = 0
    for _ in range(c.t.rate_max_requests):
        pcs = c.pcs.fresh()
        ex = c.post(pcs, f"burst request #{sent + 1}", retry_429=False)
        sent += 1
        if ex.status == 429:
            limited = (pcs, ex)
            break
        expect_success(ex, pcs, replay=False)
    check(limited is not None, f"{sent} back-to-back requests and no 429: is the server rate-limited?")
    pcs, ex = limited
    expect_problem(ex, (429,), slugs=("rate-limited", "quota-exceeded", "overloaded"))
    wait = retry_after_seconds(ex)
    check(wait is not None, f"{ex.what}: 429 without a valid Retry-After header")
    # the refused request consumed nothing and stored nothing: after Retry-After it is a fresh accept
    c.http.sleep(min(max(wait, 0.05), MAX_RETRY_WAIT_S))
    c.accept(pcs, "the refused PCS after Retry-After (a 429 is never stored)")
    return f"429 after {sent} requests, Retry-After {ex.headers.get('retry-after')}; the refused PCS then accepted"


def case_tenant_isolation(c: Ctx) -> str:
    t = c.t
    if not (t.second_tenant and t.second_key):
        raise CaseSkipped("needs a second tenant (--second-tenant T2 --second-hmac-key K2)")
    pcs = c.pcs.fresh()
    first_a = c.accept(pcs, f"PCS of tenant {t.tenant}")
    expect_problem(c.post(pcs, f"tenant {t.tenant}'s PCS sent as tenant {t.second_tenant}",
                          tenant=t.second_tenant), (401,), slugs=BAD_SIG)
    own_b = c.pcs.sign(pcs, t.second_key)
    expect_problem(c.post(own_b, f"PCS signed with {t.second_tenant}'s key sent as {t.tenant}"), (401,),
                   slugs=BAD_SIG)
    other_b = c.pcs.other_payload(pcs, key=t.second_key)  # same pcs_id, another payload: 409 if dedup were shared
    first_b = c.post(other_b, f"same pcs_id, other payload, as tenant {t.second_tenant}", tenant=t.second_tenant)
    expect_success(first_b, other_b, replay=False)
    expect_replay_of(c.post(pcs, f"tenant {t.tenant}'s PCS again"), first_a)
    expect_replay_of(c.post(other_b, f"tenant {t.second_tenant}'s PCS again", tenant=t.second_tenant), first_b)
    return "keys and dedup are per tenant: cross-tenant signatures -> 401; same pcs_id independent per tenant"


@dataclasses.dataclass(frozen=True)
class ServerCase:
    id: str
    title: str
    fn: Callable[[Ctx], str]


CASES: tuple[ServerCase, ...] = (
    ServerCase("srv-valid", "a valid signed PCS -> 200/202 with the documented body", case_valid),
    ServerCase("srv-replay", "the same PCS again -> identical status, body bytes, replay header", case_replay),
    ServerCase("srv-replay-reformatted", "same signed subset, other key order/whitespace -> replay",
               case_replay_reformatted),
    ServerCase("srv-tampered-then-valid", "tampered -> 401, not cached; the valid PCS then accepted "
               "(INV-VERIFY-BEFORE-DEDUP)", case_tampered_then_valid),
    ServerCase("srv-tampered-after-accept", "bad signature on an accepted pcs_id -> 401, not replay/409 "
               "(INV-VERIFY-BEFORE-DEDUP)", case_tampered_after_accept),
    ServerCase("srv-conflict", "same pcs_id, other payload -> 409; the first outcome stays (INV-FWW)", case_conflict),
    ServerCase("srv-race-fww", "concurrent submissions of two payloads for one pcs_id -> one first write "
               "(INV-FWW)", case_race_fww),
    ServerCase("srv-malformed-json", "bodies that are not a JSON object -> 400 problem+json", case_malformed_json),
    ServerCase("srv-duplicate-keys", "duplicate JSON object keys -> 400", case_duplicate_keys),
    ServerCase("srv-nan", "NaN / Infinity / overflowing numbers -> 400", case_nan),
    ServerCase("srv-schema", "schema violations -> 400 problem+json naming the field", case_schema),
    ServerCase("srv-pcs-id-mismatch", "pcs_id != SHA-256(merkle_root|epoch|shard_id) -> 400 naming pcs_id "
               "(INV-PCSID)", case_pcs_id_mismatch),
    ServerCase("srv-oversize", "body above the limit -> 413 problem+json", case_oversize),
    ServerCase("srv-bad-base64", "signature not strict base64 -> rejected, not cached", case_bad_base64),
    ServerCase("srv-content-type", "a non-JSON Content-Type -> 415/400 problem+json, or processed as JSON",
               case_content_type),
    ServerCase("srv-unknown-tenant", "X-Tenant-Id naming no tenant -> 401", case_unknown_tenant),
    ServerCase("srv-rate-limit", "beyond the rate -> 429 + Retry-After; the refused PCS is not stored",
               case_rate_limit),
    ServerCase("srv-tenant-isolation", "per-tenant keys and dedup (INV-TENANT-ISOLATION)", case_tenant_isolation),
)
CASE_IDS = tuple(case.id for case in CASES)


# ------------------------------------------------------------------------------ running and reports
@dataclasses.dataclass
class ServerCaseResult:
    id: str
    title: str
    status: str  # "pass" | "fail" | "skip"
    message: str
    elapsed: float = 0.0


@dataclasses.dataclass
class ServerReport:
    url: str
    seed: int
    results: list[ServerCaseResult]
    retries_429: int = 0

    def counts(self) -> tuple[int, int, int]:
        st = [r.status for r in self.results]
        return st.count("pass"), st.count("fail"), st.count("skip")

    @property
    def exit_code(self) -> int:
        return 1 if self.counts()[1] else 0

    def summary_line(self) -> str:
        p, f, s = self.counts()
        return f"{p} passed, {f} failed, {s} skipped"


def run_suite(target: Target, only: list[str] | None = None, http: Http | None = None) -> ServerReport:
    """Run the selected cases (all by default, in CASES order). Raises :class:`Unreachable`."""
    cases = [c for c in CASES if only is None or c.id in only]
    http = http or Http(target.url, target.timeout, target.tenant)
    try:
        http.preflight()
        ctx = Ctx(target, http)
        results = []
        for case in cases:
            t0 = time.perf_counter()
            try:
                msg = case.fn(ctx)
                status = "pass"
            except CaseFailed as exc:
                status, msg = "fail", str(exc)
            except CaseSkipped as exc:
                status, msg = "skip", str(exc)
            except Exception as exc:  # noqa: BLE001 -- a suite bug or a wild answer: that case fails, the run goes on
                status, msg = "fail", f"unexpected {type(exc).__name__}: {str(exc)[:160]}"
            msg = " ".join(msg.split())  # one line, and bounded: a server's strings can be anything
            if len(msg) > 400:
                msg = msg[:397] + "..."
            results.append(ServerCaseResult(case.id, case.title, status, msg, time.perf_counter() - t0))
        return ServerReport(target.url, target.seed, results, http.retries_429)
    finally:
        http.close()


def format_text(report: ServerReport) -> list[str]:
    lines = [f"server: {report.url} (seed {report.seed})"]
    width = max((len(r.id) for r in report.results), default=0)
    for r in report.results:
        lines.append(f"{r.status.upper():4} {r.id:<{width}}  {r.message}")
    if report.retries_429:
        lines.append(f"note: {report.retries_429} request(s) retried after 429 + Retry-After")
    lines.append(report.summary_line())
    return lines


def to_json(report: ServerReport) -> dict:
    p, f, s = report.counts()
    return {
        "suite": "server",
        "url": report.url,
        "seed": report.seed,
        "summary": {"passed": p, "failed": f, "skipped": s, "retries_429": report.retries_429},
        "cases": [
            {"id": r.id, "title": r.title, "status": r.status, "message": r.message, "elapsed_s": round(r.elapsed, 6)}
            for r in report.results
        ],
    }


def to_junit(report: ServerReport) -> bytes:
    cases = [junit.Case(classname="flk.conformance.server", name=r.id, time=r.elapsed,
                        failure=r.message if r.status == "fail" else None, failure_type="nonconformance",
                        text=f"{r.title}\n{r.message}", skipped=r.message if r.status == "skip" else None)
             for r in report.results]
    return junit.document(f"flk conformance server: {report.url}",
                          [junit.Suite("flk.conformance.server", cases, {"seed": str(report.seed)})])
