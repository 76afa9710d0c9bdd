"""The submit client: at-least-once delivery of one signed PCS.

Why this module exists: the agent's retries are only safe because every
retry carries the *same signed subset*, so the server's first-write-wins
dedup turns duplicates into replays. This module makes that a property of the
code rather than of good intentions: a :class:`Submission` fixes the body's
signed part once, and every attempt only rewrites the unsigned ``attempt`` and
``sent_at`` fields (``ft.*`` is passed through untouched).

Theory of operation (sans-I/O, as h11): a :class:`Submission` is a state
machine for one record. The driver asks it what to do and reports what
happened; it never touches a socket, a clock or a global RNG -- ``now`` is
passed in and jitter comes from a seeded ``random.Random`` passed in.

    start(now)            -> Send
    on_result(result, now) -> Send | Wait | Done
    resume(now)            -> Send            (after a Wait has elapsed)

Outcome table (``result`` of the last Send):

=================  ====================================================  =========
result             action                                                 URL
=================  ====================================================  =========
200, 202           Done("ack")                                            --
409                Done("conflict") -- an ack; the server already holds   --
                   a different outcome for this pcs_id (logged)
429                retry after backoff, at least Retry-After              same
5xx, transport     retry (Retry-After honoured for 503); fail over to     next
error              the next URL -- immediately while some URL of this
                   round is untried, with backoff once all were tried
other status       Done("dead_letter") -- never retried                   --
=================  ====================================================  =========

When ``max_attempts`` sends have been made without a terminal answer the
submission ends with ``Done("gave_up")``: the record is *not* acknowledged,
so an outbox keeps it for the next drain (it is never dropped).

Backoff is exponential with full jitter (AWS architecture blog, 2015): the
k-th backoff wait (k = 0, 1, ...) is ``u * min(cap, base * 2**k)`` with ``u``
uniform in [0, 1). If the target URL asked for Retry-After and ``r`` seconds of
it remain, the wait is the larger of that backoff draw and a Retry-After wait
drawn uniformly from ``[min(r, M), min(2 * r, M)]`` (``M`` = ``max_retry_after``,
:func:`retry_after_wait`): never earlier than the server asked (up to the cap),
and spread over as long again. Without that jitter the clients shed after a
pause, all given one Retry-After, came back in the same instant; the admission
limit took a few and answered the rest the same again, and the herd repeated (found by
``flk sim explore --swarm --mode liveness``, seed 1000070; pinned in
``sim/scenarios/regressions/retry-after-herd.toml``). So every wait lies in
``[0, max(min(cap, base * 2**k), max_retry_after)]`` (:func:`wait_bound`).

The I/O half -- :class:`HttpxTransport`, :class:`DeadLetterFile`, the
blocking driver :class:`SubmitClient` and :func:`drain_outbox` (append, submit,
ack over :class:`flk.impl.agent.outbox.Outbox`) -- lives at the bottom of this
module; the load generator (:mod:`flk.impl.agent.loadgen`) and the simulator drive
the same :class:`Submission` with their own transports. Logs and dead-letter
lines carry ids, statuses and reasons, never payloads, signatures or keys; a
dead-lettered record is acked in the outbox only after its dead-letter line
is fsynced.
"""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from json import encoder as json_encoder
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..core import textdata
from ..core.canonical import canonical_bytes
from ..core.errors import InvalidInput
from ..core.records import frozen_record

SUBMIT_PATH = "/v1/pcs/submit"
UNSIGNED_FIELDS = ("attempt", "sent_at")  # rewritten per attempt; "ft" is passed through
ACK_STATUSES = (200, 202)
CONFLICT_STATUS = 409
RETRY_AFTER_STATUSES = (429, 503)

log = logging.getLogger("flk.agent.client")


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff parameters: ``base`` and ``cap`` in seconds, ``max_attempts`` sends in all."""

    base: float = 0.05
    cap: float = 5.0
    max_attempts: int = 8
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "max_retry_after"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidInput(name, "must be a finite number >= 0")
        if self.cap < self.base:
            raise InvalidInput("cap", "must be >= base")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidInput("max_attempts", "must be an integer >= 1")


def backoff_ceiling(policy: RetryPolicy, k: int) -> float:
    """``min(cap, base * 2**k)``: the jitter range of the k-th backoff wait."""
    if k >= 1024 or policy.base * 2.0**k >= policy.cap:
        return float(policy.cap)
    return policy.base * 2.0**k


def wait_bound(policy: RetryPolicy, k: int) -> float:
    """The largest wait the k-th backoff can produce (Retry-After included)."""
    return max(backoff_ceiling(policy, k), float(policy.max_retry_after))


def retry_after_wait(policy: RetryPolicy, remaining: float, u: float) -> float:
    """The jittered wait for ``remaining`` seconds of Retry-After, ``u`` uniform in [0, 1).

    Uniform over ``[min(r, M), min(2 * r, M)]`` with ``M`` = ``policy.max_retry_after``: the
    floor is what the server asked (clamped to the cap), the spread as long again, so clients
    told the same Retry-After come back spread over that span instead of in one instant.
    """
    cap = float(policy.max_retry_after)
    lo = min(remaining, cap)
    return lo + u * (min(2.0 * remaining, cap) - lo)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    ``now`` is seconds since the epoch (only used for the HTTP-date form).
    Negative or unparsable values are ignored (None); a date in the past is 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        secs = float(text)  # lenient: some servers send "1.5"
    except ValueError:
        secs = None
    if secs is not None:
        return secs if math.isfinite(secs) and secs >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


_LAST_SECOND: tuple[int, str] | None = None  # the whole second formatted last and its text


def rfc3339(now: float) -> str:
    """``sent_at`` text: UTC, millisecond precision, ``Z`` suffix (``2027-01-15T08:00:00.125Z``).

    A pure function of ``now`` (no wall clock is read): ``now`` rounded to the millisecond,
    the date and time of its whole second (formatted once per second) and the milliseconds
    -- the text of ``datetime.isoformat(timespec="milliseconds")`` (tests/agent checks it).
    """
    text, ms = _second_text(now)
    return f"{text}.{ms:03d}Z"


def _second_text(now: float) -> tuple[str, int]:
    """:func:`rfc3339`'s parts: the text of ``now``'s whole second (after rounding to the
    millisecond; formatted once per second) and the milliseconds."""
    global _LAST_SECOND
    second, ms = divmod(round(float(now) * 1000), 1000)
    last = _LAST_SECOND
    if last is None or last[0] != second:
        text = datetime.datetime.fromtimestamp(second, tz=datetime.UTC).isoformat(timespec="seconds")[:19]
        last = _LAST_SECOND = (second, text)
    return last[1], ms


_LABEL = r"[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")


def check_url(url: object, field: str = "url") -> SplitResult:
    """The one check of a server URL every command takes (the agent, the load generator, the
    conformance server suite, the operator): ``http://`` or ``https://``, a host name, an IPv4
    address or a bracketed IPv6 address, an optional port 1 to 65535, no credentials, no blanks or
    control characters, ASCII only. Anything else is an :class:`InvalidInput` naming ``field``."""
    if not isinstance(url, str):
        raise InvalidInput(field, "must be a string")
    text, shown = url.strip(), repr(url[:80])
    if not text.isascii() or not text.isprintable() or " " in text:
        raise InvalidInput(field, f"not an http(s) URL: {shown} (blanks, control or non-ASCII characters)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # an unclosed IPv6 bracket, a port that is no number or out of range
        raise InvalidInput(field, f"not an http(s) URL: {shown} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, f"not an http(s) URL: {shown} (want http://host[:port])")
    if "@" in parts.netloc:
        raise InvalidInput(field, f"not an http(s) URL: {shown} (credentials do not belong in the URL)")
    if not _valid_host(parts):
        raise InvalidInput(field, f"not an http(s) URL: {shown} (bad host {parts.hostname[:80]!r})")
    if port == 0:
        raise InvalidInput(field, f"not an http(s) URL: {shown} (port must be 1 to 65535)")
    return parts


def _valid_host(parts: SplitResult) -> bool:
    host = parts.hostname or ""
    bracketed, numeric = "[" in parts.netloc, not host.strip("0123456789.")
    if not bracketed and not numeric:
        return bool(_HOSTNAME.match(host))
    try:  # digits and dots only: a dotted IPv4 address (no leading zeros), never a name
        (ipaddress.IPv6Address if bracketed else ipaddress.IPv4Address)(host)
    except ValueError:
        return False
    return "%" not in host


def base_url(url: object, field: str = "url") -> str:
    """A server's base URL (:func:`check_url`, no query or fragment), without a trailing ``/``."""
    parts = check_url(url, field)
    if parts.query or parts.fragment:
        raise InvalidInput(field, f"not a base URL: {str(url)[:80]!r} (no ?query or #fragment)")
    return urlunsplit(parts).rstrip("/")


def submit_url(url: object) -> str:
    """A server URL as given (``http://host:port`` gets :data:`SUBMIT_PATH`; :func:`check_url`)."""
    parts = check_url(url)
    path = parts.path if parts.path not in ("", "/") else SUBMIT_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


# --------------------------------------------------------------------------- events


# The frozen events below are ``@frozen_record`` dataclasses (:mod:`flk.impl.core.records`): their
# ``__init__`` fills the instance ``__dict__`` (the simulator makes several per submission);
# tests/agent/test_client_events.py checks they behave as generated frozen dataclasses.


@frozen_record
class HttpAnswer:
    """What came back: a status, the raw Retry-After header, a short reason (no body)."""

    status: int
    retry_after: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class TransportFailure:
    """No HTTP answer: connection refused/reset, timeout, protocol error."""

    reason: str


@frozen_record
class Send:
    url: str
    url_index: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    attempt: int


@frozen_record
class Wait:
    delay: float
    reason: str


@frozen_record
class Done:
    """Terminal: ``outcome`` is ack | conflict | dead_letter | gave_up."""

    outcome: str
    status: int | None
    reason: str
    attempts: int
    url: str | None

    @property
    def acked(self) -> bool:
        """True if the record is finished for the outbox (ack, conflict or dead-lettered)."""
        return self.outcome in ("ack", "conflict", "dead_letter")


# --------------------------------------------------------------------------- state machine


@dataclass(slots=True)
class _State:
    attempts: int = 0
    backoffs: int = 0
    url_index: int = 0
    failovers_this_round: int = 0
    not_before: dict[int, float] | None = None  # url index -> no send before (a Retry-After); made when set
    waiting: bool = False
    done: Done | None = None

    def not_before_url(self) -> float:
        """No send to the current URL before this time (-inf: none asked)."""
        return -math.inf if self.not_before is None else self.not_before.get(self.url_index, -math.inf)


@frozen_record
class Prepared:
    """A PCS fixed for sending: its signed bytes and the body prefix every attempt shares."""

    pcs_id: str
    signed_bytes: bytes
    head: bytes = field(repr=False)


_DEFAULT = json.JSONEncoder().default  # raises the TypeError json.dumps raises


def compact_json(obj: object) -> str:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``: the same
    C encoder with the same options (circular check included), without building a
    ``JSONEncoder`` per call."""
    make = json_encoder.c_make_encoder
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "".join(make({}, _DEFAULT, json_encoder.encode_basestring, None, ":", ",", False, False, False)(obj, 0))


_compact_json = compact_json  # its earlier name


def prepare(pcs: Mapping) -> Prepared:
    """Validate a signed PCS and fix its body: everything but ``attempt``/``sent_at``."""
    if not isinstance(pcs, Mapping):
        raise InvalidInput("pcs", "must be a JSON object")
    signed = canonical_bytes(pcs)  # validates the signed subset
    if not isinstance(pcs.get("sig"), str):
        raise InvalidInput("sig", "the PCS is not signed")
    base = {k: v for k, v in pcs.items() if k not in UNSIGNED_FIELDS}
    try:
        text = compact_json(base)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("pcs", f"not serialisable as JSON ({exc})") from None
    return Prepared(pcs["pcs_id"], signed, text[:-1].encode("utf-8") + b',"attempt":')


_JSON_HEADERS = (("content-type", "application/json"),)
_HEADERS: dict[str, tuple[tuple[str, str], ...]] = {}  # tenant id -> its requests' headers (bounded)


def _headers_for(tenant: str | None) -> tuple[tuple[str, str], ...]:
    """A request's headers: the JSON content type and the tenant id (when given). An immutable
    tuple, made once per tenant id (a str; up to 1024 of them kept): no tuple per submission."""
    if tenant is None:
        return _JSON_HEADERS
    if tenant.__class__ is not str:
        return (*_JSON_HEADERS, ("x-tenant-id", tenant))
    headers = _HEADERS.get(tenant)
    if headers is None:
        if len(_HEADERS) >= 1024:
            _HEADERS.clear()
        headers = _HEADERS[tenant] = (*_JSON_HEADERS, ("x-tenant-id", tenant))
    return headers


class Submission:
    """The retry state machine for one signed PCS (see the module docstring).

    ``pcs`` is a PCS mapping or a :class:`Prepared` one (cheaper when the same
    PCS is sent many times, as the load generator does).
    """

    __slots__ = ("signed_bytes", "pcs_id", "tenant", "urls", "policy", "rng", "_head", "_headers", "_s")

    def __init__(
        self,
        pcs: Mapping | Prepared,
        urls: Sequence[str],
        *,
        rng: random.Random,
        policy: RetryPolicy | None = None,
        tenant: str | None = None,
        first_url: int = 0,
    ) -> None:
        if not urls:
            raise InvalidInput("urls", "at least one server URL is needed")
        prepared = pcs if isinstance(pcs, Prepared) else prepare(pcs)
        self.signed_bytes = prepared.signed_bytes
        self.pcs_id = prepared.pcs_id
        self.tenant = tenant
        self.urls = urls
        self.policy = policy or RetryPolicy()
        self.rng = rng
        self._head = prepared.head
        self._headers = _headers_for(tenant)
        self._s = _State(url_index=first_url % len(self.urls))

    # -- helpers

    def body_for(self, attempt: int, now: float) -> bytes:
        """The request body of ``attempt``: the fixed signed part plus attempt and sent_at."""
        text, ms = _second_text(now)  # rfc3339(now), in one format with the rest
        return b'%b%d,"sent_at":"%b.%03dZ"}' % (self._head, attempt, text.encode(), ms)

    def _send(self, now: float) -> Send:
        s = self._s
        s.attempts += 1
        s.waiting = False
        i = s.url_index
        return Send(self.urls[i], i, self.body_for(s.attempts, now), self._headers, s.attempts)

    def _finish(self, outcome: str, status: int | None, reason: str) -> Done:
        s = self._s
        s.done = Done(outcome, status, reason, s.attempts, self.urls[s.url_index])
        return s.done

    @property
    def done(self) -> Done | None:
        return self._s.done

    @property
    def attempts(self) -> int:
        return self._s.attempts

    # -- transitions

    def start(self, now: float) -> Send:
        if self._s.attempts:
            raise RuntimeError("Submission.start called twice")
        return self._send(now)

    def resume(self, now: float) -> Send:
        if not self._s.waiting:
            raise RuntimeError("Submission.resume called without a pending Wait")
        return self._send(now)

    def on_result(self, result: HttpAnswer | TransportFailure, now: float) -> Send | Wait | Done:
        s = self._s
        if s.done is not None or s.waiting or s.attempts == 0:
            raise RuntimeError("Submission.on_result called out of order")
        failover = False
        retry_after = None
        if isinstance(result, TransportFailure):
            failover, what = True, f"transport: {result.reason}"
            status = None
        else:
            status = result.status
            what = f"HTTP {status}" + (f": {result.reason}" if result.reason else "")
            if status in ACK_STATUSES:
                return self._finish("ack", status, what)
            if status == CONFLICT_STATUS:
                return self._finish("conflict", status, what)
            if status == 429:
                pass
            elif 500 <= status <= 599:
                failover = True
            else:
                return self._finish("dead_letter", status, what)
            if status in RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(result.retry_after, now)
        if retry_after is not None:
            if s.not_before is None:
                s.not_before = {}
            s.not_before[s.url_index] = now + min(retry_after, self.policy.max_retry_after)
        if s.attempts >= self.policy.max_attempts:
            return self._finish("gave_up", status, f"{s.attempts} attempts; last {what}")
        if failover and len(self.urls) > 1:
            s.url_index = (s.url_index + 1) % len(self.urls)
            s.failovers_this_round += 1
            if s.failovers_this_round < len(self.urls) and s.not_before_url() <= now:
                return self._send(now)  # an untried URL this round: go at once
        s.failovers_this_round = 0
        delay = self.rng.random() * backoff_ceiling(self.policy, s.backoffs)
        s.backoffs += 1
        remaining = s.not_before_url() - now
        if remaining > 0:  # Retry-After is a floor; its own draw spreads the clients it was sent to
            delay = max(delay, retry_after_wait(self.policy, remaining, self.rng.random()))
        s.waiting = True
        return Wait(delay, what)


def signed_subset_of_body(body: bytes) -> bytes:
    """The canonical bytes of the signed subset of a request body (for checks)."""
    return canonical_bytes(textdata.json_loads(body))


# --------------------------------------------------------------------------- I/O: transport


def _short_reason(status: int, content_type: str, body: bytes) -> str:
    """A problem+json title/type (short, sanitised) -- never the body itself."""
    if "json" not in content_type or not body or len(body) > 65536:
        return ""
    try:
        obj = textdata.json_loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(obj, dict):
        return ""
    parts = [str(obj[k])[:100] for k in ("title", "type") if isinstance(obj.get(k), str)]
    text = " ".join(parts)
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class HttpxTransport:
    """Blocking HTTP transport on httpx (keep-alive connection pool)."""

    def __init__(self, timeout: float = 10.0) -> None:
        import httpx

        self._httpx = httpx
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def post(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> HttpAnswer | TransportFailure:
        httpx = self._httpx
        try:
            resp = self._client.post(url, content=body, headers=list(headers))
        except httpx.TimeoutException:
            return TransportFailure("timeout")
        except httpx.TransportError as exc:
            return TransportFailure(type(exc).__name__)
        reason = _short_reason(resp.status_code, resp.headers.get("content-type", ""), resp.content)
        return HttpAnswer(resp.status_code, resp.headers.get("retry-after"), reason)

    def close(self) -> None:
        self._client.close()


class DeadLetterFile:
    """Append-only JSONL of records the server refused for good (no payloads)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, pcs: Mapping, tenant: str | None, done: Done, at: float) -> None:
        line = {
            "at": at,
            "pcs_id": pcs.get("pcs_id"),
            "tenant": tenant,
            "shard_id": pcs.get("shard_id"),
            "epoch": pcs.get("epoch"),
            "status": done.status,
            "reason": done.reason,
            "attempts": done.attempts,
            "url": done.url,
        }
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # durable before the outbox acks the record


# --------------------------------------------------------------------------- I/O: driver


@dataclass
class SubmitStats:
    sent: int = 0
    acked: int = 0
    conflicts: int = 0
    dead_lettered: int = 0
    gave_up: int = 0
    retries: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class SubmitClient:
    """The blocking driver: carries out a :class:`Submission`'s actions.

    ``clock`` (wall seconds, for ``sent_at`` and HTTP-date Retry-After) and
    ``sleep`` are injectable; jitter comes from ``random.Random(seed)``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        tenant: str | None = None,
        policy: RetryPolicy | None = None,
        seed: int = 0,
        dead_letter: DeadLetterFile | None = None,
        transport=None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.urls = [submit_url(u) for u in urls]
        if not self.urls:
            raise InvalidInput("urls", "at least one server URL is needed")
        self.tenant = tenant
        self.policy = policy or RetryPolicy()
        self.rng = random.Random(seed)
        self.dead_letter = dead_letter
        self.transport = transport or HttpxTransport()
        self.clock = clock
        self.sleep = sleep
        self.stats = SubmitStats()
        self._next_url = 0  # sticky: start where the last success was

    def submit(self, pcs: Mapping, kept: bool = False) -> Done:
        """Send ``pcs`` until it ends or the policy gives up; ``kept``: the caller keeps a record
        given up on (an outbox) for the next run, which is what the log then says."""
        sub = Submission(pcs, self.urls, rng=self.rng, policy=self.policy, tenant=self.tenant,
                         first_url=self._next_url)
        action: Send | Wait | Done = sub.start(self.clock())
        while True:
            if isinstance(action, Send):
                self.stats.sent += 1
                if action.attempt > 1:
                    self.stats.retries += 1
                result = self.transport.post(action.url, action.body, action.headers)
                action = sub.on_result(result, self.clock())
            elif isinstance(action, Wait):
                log.info("retry: pcs_id=%s in %.3fs (%s)", sub.pcs_id, action.delay, action.reason)
                self.sleep(action.delay)
                action = sub.resume(self.clock())
            else:
                break
        done = action
        if done.outcome in ("ack", "conflict"):
            self._next_url = self.urls.index(done.url)
        if done.outcome == "ack":
            self.stats.acked += 1
        elif done.outcome == "conflict":
            self.stats.conflicts += 1
            log.warning("conflict: pcs_id=%s tenant=%s url=%s: the server holds a different "
                        "outcome for this pcs_id", sub.pcs_id, self.tenant, done.url)
        elif done.outcome == "dead_letter":
            self.stats.dead_lettered += 1
            log.error("dead-letter: pcs_id=%s tenant=%s %s", sub.pcs_id, self.tenant, done.reason)
            if self.dead_letter is not None:
                self.dead_letter.write(pcs, self.tenant, done, self.clock())
        else:
            self.stats.gave_up += 1
            log.error("gave up (%s): pcs_id=%s %s", "kept for the next run" if kept else "not kept: no outbox",
                      sub.pcs_id, done.reason)
        return done

    def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- I/O: outbox drain


@dataclass
class DrainResult:
    """What one drain of an outbox did (counts; never payloads)."""

    submitted: int = 0
    acked: int = 0
    conflicts: int = 0
    dead_lettered: int = 0
    gave_up: int = 0
    undecodable: int = 0
    remaining: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def drain_outbox(outbox, client: SubmitClient, stop_on_give_up: bool = True) -> DrainResult:
    """Submit every pending outbox record in order; ack each one that ended.

    ``outbox`` is a :class:`flk.impl.agent.outbox.Outbox` (``pending()``, ``ack(seq)``).
    A record is acked only after the server answered 200/202/409, or after its
    dead-letter line is durable (4xx). A record the client gave up on stays
    pending (at-least-once: the next drain sends the same signed bytes again);
    with ``stop_on_give_up`` the drain stops there, as the servers are
    evidently unreachable. A record that is not a JSON PCS (it cannot have
    been appended by ``flk agent``) is reported and left pending, never dropped.
    """
    res = DrainResult()
    for seq, data in outbox.pending():
        try:
            pcs = textdata.json_loads(data)
            if not isinstance(pcs, dict):
                raise ValueError("not an object")
            prepare(pcs)
        except (ValueError, UnicodeDecodeError):
            res.undecodable += 1
            log.error("outbox record seq=%d is not a signed PCS; left pending", seq)
            continue
        res.submitted += 1
        done = client.submit(pcs, kept=True)
        if done.acked:
            outbox.ack(seq)
            res.acked += done.outcome == "ack"
            res.conflicts += done.outcome == "conflict"
            res.dead_lettered += done.outcome == "dead_letter"
        else:
            res.gave_up += 1
            if stop_on_give_up:
                break
    res.remaining = len(outbox.pending())
    return res
