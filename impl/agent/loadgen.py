"""The load generator: deterministic PCS traffic against one or more servers.

Why this module exists: it is the client the server, crash, simulator and
conformance work drive their systems with, and the history it writes is what
their checkers read. So it must be (a) deterministic -- the seed fixes every
PCS, every kind and every tenant; (b) fast -- it must not be the bottleneck
at 5,000 req/s on a 2-core machine; (c) honest -- every request and response
is recorded, retries included.

Plan (:func:`make_plan`, pure, seeded): item ``i`` is one of

* ``valid``    -- a fresh PCS, self-consistent (N_j, D-hat, coh-star, r, budget,
  regime as the verifier recomputes them), signed with its tenant's key;
  expected 200/202;
* ``dup``      -- the exact PCS of an earlier valid item (same tenant, same
  signed subset); expected 200/202 with ``Idempotent-Replayed: true``;
* ``bad_sig``  -- a fresh PCS signed with the wrong key; expected 401;
* ``conflict`` -- an earlier valid item's pcs_id with a different coh-star
  (budget and regime recomputed, correctly signed); expected 409.

A ``dup`` or ``conflict`` item is sent only once the item it repeats has
finished, so its expected answer does not depend on worker interleaving.

PCS are synthesised cheaply (random N_j following ``s**d``, hashes of the seed
for the Merkle root) -- no event streams are parsed -- and bodies are built
before the clock starts.

Tenants (:func:`tenant_ids`, :func:`signing_key`, :func:`tenants_env`): with
``--tenants 1`` the single tenant is ``default`` and signs with the base secret
itself (a single-tenant server configured with the same ``PCS_HMAC_KEY``).
With K > 1, tenant ``i`` is ``lg-tenant-<i:03d>`` and its HMAC key is the
UTF-8 text of ``hex(HMAC-SHA256(base, "flk-loadgen-tenant:" + tenant_id))``,
where ``base`` is the UTF-8 value of the environment variable named by
``--hmac-key-env`` (default ``PCS_HMAC_KEY``). :func:`tenants_env` prints the
matching server configuration ``t1:hmac:key1,...`` (``TENANTS=`` form parsed by
``flk.impl.verifier.tenants.parse_tenants_env``). With ``sign_alg="ed25519"`` tenant ``t``
signs with the Ed25519 seed ``HMAC-SHA256(base, "flk-loadgen-ed25519:" + t)``
(also for ``default``) and :func:`tenants_env` lists the public keys.

Runner (:func:`run_load`): asyncio with a small hand-rolled HTTP/1.1
keep-alive client (one connection per worker and URL); each item is driven by
the sans-I/O :class:`flk.impl.agent.client.Submission` -- the same retry, backoff,
Retry-After and failover logic as ``flk agent submit``. ``rate`` paces item
starts (open loop, bounded by ``concurrency``).

History (JSONL, one line per HTTP attempt): ``req_id, item, attempt, final,
kind, tenant, pcs_id, digest`` (hex SHA-256 of the v1 canonical bytes of the
signed subset), ``url, status`` (null on a transport error), ``error, replay``
(the ``Idempotent-Replayed`` response header), ``latency_s, t_send, t_recv``
(seconds since the epoch), ``t_sched`` (with ``rate``: when the item was due;
else null), ``outcome`` (final attempt only). Never bodies, signatures or keys.

Summary latencies: ``latency_ms`` per HTTP request; ``item_latency_ms`` per
item from when it was *due* (with ``rate``; else from its first send) to its
final answer -- retries, backoff and any lag behind the schedule included, so
an overloaded server cannot hide behind coordinated omission.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..core.canonical import round9
from ..core.errors import InvalidInput
from ..core.pcs import pcs_id as compute_pcs_id
from ..core.signals import budget, d_hat, regime
from ..core.signing import b64encode, public_key_bytes
from . import factory
from .builder import Signer
from .client import (
    Done,
    HttpAnswer,
    Prepared,
    RetryPolicy,
    Send,
    Submission,
    TransportFailure,
    Wait,
    prepare,
    submit_url,
)

KINDS = ("valid", "dup", "bad_sig", "conflict")
EXPECTED = {"valid": (200, 202), "dup": (200, 202), "bad_sig": (401,), "conflict": (409,)}
REPLAY_HEADER = "idempotent-replayed"
TENANT_PREFIX = "lg-tenant-"
ED25519_LABEL = b"flk-loadgen-ed25519:"
SIGN_ALGS = ("hmac", "ed25519")
# Caps of one run (more is a typo, not a load test). Every item is built before the clock starts,
# about 3 KB each, so MAX_ITEMS is about 3 GB; each tenant has its own key and TENANTS entry.
MAX_ITEMS = 1_000_000
MAX_TENANTS = 10_000
MAX_CONCURRENCY = 1024  # workers, each with its own connection per URL (the usual open-file limit)


# --------------------------------------------------------------------------- tenants


def tenant_ids(k: int) -> list[str]:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TENANTS:
        raise InvalidInput("tenants", f"must be an integer from 1 to {MAX_TENANTS:,}")
    if k == 1:
        return ["default"]
    return [f"{TENANT_PREFIX}{i:03d}" for i in range(k)]


def signing_key(base: bytes, tenant: str, k: int) -> bytes:
    """The HMAC key tenant ``tenant`` signs with: the base secret itself for the
    single ``default`` tenant, else :func:`flk.impl.agent.factory.tenant_key`."""
    if not base:
        raise InvalidInput("hmac_key", "the base secret is empty")
    if k == 1:
        return base
    return factory.tenant_key(base, tenant)


def tenant_signer(base: bytes, tenant: str, k: int, alg: str = "hmac") -> Signer:
    """The signer of tenant ``tenant``: HMAC with :func:`signing_key`, or Ed25519
    with the 32-byte seed ``HMAC-SHA256(base, "flk-loadgen-ed25519:" + tenant_id)``."""
    if alg not in SIGN_ALGS:
        raise InvalidInput("sign_alg", "must be hmac or ed25519")
    if alg == "hmac":
        return Signer("hmac", signing_key(base, tenant, k), tenant)
    if not base:
        raise InvalidInput("hmac_key", "the base secret is empty")
    return Signer("ed25519", hmac.new(base, ED25519_LABEL + tenant.encode("utf-8"), "sha256").digest(), tenant)


def _wrong_signer(signer: Signer) -> Signer:
    """A key of the same algorithm that is not the tenant's (for bad_sig items)."""
    if signer.alg == "hmac":
        return Signer("hmac", signer.key + b"-wrong", signer.tenant)
    return Signer("ed25519", hmac.new(signer.key, b"wrong", "sha256").digest(), signer.tenant)


def tenants_env(base: bytes, k: int, alg: str = "hmac") -> str:
    """The ``TENANTS`` value a server needs to verify this load generator's tenants
    (HMAC: the key text; Ed25519: the base64 public key)."""
    ids = tenant_ids(k)
    if alg == "hmac" and k == 1 and (b"," in base or not base.strip()):
        raise InvalidInput("hmac_key", "a base secret with ',' cannot be written in TENANTS form")
    parts = []
    for t in ids:
        signer = tenant_signer(base, t, k, alg)
        key = signer.key.decode("utf-8") if alg == "hmac" else b64encode(public_key_bytes(signer.key))
        parts.append(f"{t}:{alg}:{key}")
    return ",".join(parts)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Item:
    index: int
    kind: str
    tenant: str
    pcs: dict = field(repr=False)
    digest: str
    prepared: Prepared = field(repr=False)
    ref: int | None = None  # dup/conflict: the index of the valid item it repeats


@dataclass(frozen=True)
class PlanConfig:
    n: int
    seed: int
    tenants: int = 1
    dup_rate: float = 0.0
    bad_sig_rate: float = 0.0
    conflict_rate: float = 0.0
    sign_alg: str = "hmac"

    def __post_init__(self) -> None:
        if self.sign_alg not in SIGN_ALGS:
            raise InvalidInput("sign_alg", "must be hmac or ed25519")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 0 <= self.n <= MAX_ITEMS:
            raise InvalidInput("n", f"must be an integer from 0 to {MAX_ITEMS:,}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInput("seed", "must be an integer >= 0")
        tenant_ids(self.tenants)
        rates = (self.dup_rate, self.bad_sig_rate, self.conflict_rate)
        for name, v in zip(("dup_rate", "bad_sig_rate", "conflict_rate"), rates, strict=True):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                raise InvalidInput(name, "must be a probability in [0, 1]")
        if sum(rates) > 1.0 + 1e-12:
            raise InvalidInput("dup_rate", "dup-rate + bad-sig-rate + conflict-rate must be <= 1")


def _finish(pcs: dict, signer: Signer) -> dict:
    pcs["sig_alg"] = signer.alg
    pcs["sig"] = signer.sign(pcs)
    return pcs


def _fresh(seed: int, index: int, rng: random.Random, signer: Signer) -> dict:
    root = hashlib.sha256(b"flk-loadgen|%d|%d" % (seed, index)).hexdigest()
    shard = f"lg-{seed}-{index % 64:02d}"
    epoch = index
    pcs = {
        "pcs_id": compute_pcs_id(root, epoch, shard),
        "schema": "fractal-lba-kakeya",
        "version": "1",
        "shard_id": shard,
        "epoch": epoch,
        "merkle_root": root,
        "seed": index,
    }
    pcs.update(factory.random_signals(rng))
    return _finish(pcs, signer)


def _item(i: int, kind: str, tenant: str, pcs: dict, ref: int | None = None) -> Item:
    prepared = prepare(pcs)
    return Item(i, kind, tenant, pcs, hashlib.sha256(prepared.signed_bytes).hexdigest(), prepared, ref)


def make_plan(cfg: PlanConfig, base_key: bytes) -> list[Item]:
    """Every item of a run, from the seed alone (no clock, no global RNG)."""
    rng = random.Random(cfg.seed)
    tenants = tenant_ids(cfg.tenants)
    signers = [tenant_signer(base_key, t, cfg.tenants, cfg.sign_alg) for t in tenants]
    wrong = [_wrong_signer(sg) for sg in signers]
    valid: list[Item] = []
    items: list[Item] = []
    c_dup = cfg.dup_rate
    c_bad = c_dup + cfg.bad_sig_rate
    c_con = c_bad + cfg.conflict_rate
    for i in range(cfg.n):
        u = rng.random()
        kind = "valid"
        if u < c_dup:
            kind = "dup"
        elif u < c_bad:
            kind = "bad_sig"
        elif u < c_con:
            kind = "conflict"
        if kind in ("dup", "conflict") and not valid:
            kind = "valid"
        if kind == "valid" or kind == "bad_sig":
            t = rng.randrange(len(tenants))
            pcs = _fresh(cfg.seed, i, rng, signers[t] if kind == "valid" else wrong[t])
            item = _item(i, kind, tenants[t], pcs)
            if kind == "valid":
                valid.append(item)
        elif kind == "dup":
            orig = valid[rng.randrange(len(valid))]
            item = Item(i, kind, orig.tenant, orig.pcs, orig.digest, orig.prepared, orig.index)
        else:
            orig = valid[rng.randrange(len(valid))]
            pcs = {k: v for k, v in orig.pcs.items() if k not in ("sig", "sig_alg")}
            coh = round9(min(1.0, pcs["coh_star"] + 0.01 + 0.1 * rng.random()))
            n_j = [pcs["N_j"][str(s)] for s in pcs["scales"]]
            pcs["coh_star"] = coh
            pcs["budget"] = round9(budget(pcs["D_hat"], coh, pcs["r"]))
            pcs["regime"] = regime(round9(d_hat(pcs["scales"], n_j)), coh)  # the published D-hat's
            pcs = _finish(pcs, signers[tenants.index(orig.tenant)])
            item = _item(i, kind, orig.tenant, pcs, ref=orig.index)
        items.append(item)
    return items


# --------------------------------------------------------------------------- HTTP/1.1


class HttpError(Exception):
    """A transport-level failure (connect, reset, timeout, malformed response)."""


class Connection:
    """One HTTP/1.1 keep-alive connection (sequential requests, no pipelining)."""

    IDLE_S = 2.0  # reopen a connection idle this long (servers close idle keep-alives)

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def _open(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"connect: {type(exc).__name__}") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, dict[str, str]]:
        """Send ``head`` (request line + headers, without Content-Length) and ``body``;
        return (status, lower-cased headers). The response body is read and discarded."""
        now = time.monotonic()
        if self.writer is not None and now - self.last_used > self.IDLE_S:
            self.close()
        if self.writer is None:
            await self._open()
        try:
            async with asyncio.timeout(self.timeout):
                self.writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
                raw = await self.reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                    raise HttpError("malformed status line")
                status = int(parts[1])
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size_line = await self.reader.readuntil(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        await self.reader.readexactly(size + 2)
                        if size == 0:
                            break
                elif "content-length" in headers:
                    length = int(headers["content-length"])
                    if length:
                        await self.reader.readexactly(length)
                elif status not in (204, 304) and status >= 200:
                    await self.reader.read()  # body delimited by the connection closing
                    headers["connection"] = "close"
        except (HttpError, OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, IndexError) as exc:
            self.close()
            if isinstance(exc, HttpError):
                raise
            raise HttpError(type(exc).__name__) from None
        if headers.get("connection", "").lower() == "close":
            self.close()
        self.last_used = time.monotonic()
        return status, headers


def _request_head(url: str, headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, int], bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise InvalidInput("url", "the load generator speaks plain http:// only")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    lines = [f"POST {path} HTTP/1.1", f"host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return (host, port), ("\r\n".join(lines) + "\r\n").encode("latin-1")


# --------------------------------------------------------------------------- runner


@dataclass
class LoadResult:
    items: int = 0
    sent: int = 0
    retries: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_kind: dict = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)
    unexpected: int = 0
    latencies: list = field(default_factory=list)
    item_latencies: list = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self) -> dict:
        def pcts(values: list) -> dict:
            v = sorted(values)

            def pct(p: float) -> float | None:
                if not v:
                    return None
                return round(v[min(len(v) - 1, max(0, math.ceil(p / 100.0 * len(v)) - 1))] * 1000.0, 3)

            return {"p50": pct(50), "p95": pct(95), "p99": pct(99)}

        return {
            "items": self.items,
            "sent": self.sent,
            "retries": self.retries,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items(), key=lambda kv: str(kv[0]))},
            "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(self.by_kind.items())},
            "outcomes": dict(sorted(self.outcomes.items())),
            "unexpected": self.unexpected,
            "latency_ms": pcts(self.latencies),
            "item_latency_ms": pcts(self.item_latencies),
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(self.sent / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
        }


class _Progress:
    def __init__(self, total: int, stream, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.last = 0.0

    def update(self, done: int, sent: int, t: float, elapsed: float, final: bool = False) -> None:
        if not self.enabled:
            return
        every = 0.2 if self.tty else 5.0
        if not final and t - self.last < every:
            return
        self.last = t
        frac = done / self.total if self.total else 1.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = sent / elapsed if elapsed > 0 else 0.0
        text = f"[{bar}] {done}/{self.total} items, {sent} requests, {rate:,.0f} req/s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class _LoadRun:
    """One run of :func:`_run`: the shared state of its workers and the steps
    each worker takes per item (pace, wait for the repeated item, drive the
    sans-I/O :class:`Submission` over HTTP, record every attempt, tally)."""

    def __init__(self, items: Sequence[Item], urls: Sequence[str], *, rate: float | None, policy: RetryPolicy,
                 seed: int, timeout: float, history, progress: _Progress, clock: Callable[[], float],
                 url_mode: str) -> None:
        self.items, self.urls, self.rate, self.policy = items, urls, rate, policy
        self.seed, self.timeout, self.history, self.progress, self.url_mode = seed, timeout, history, progress, url_mode
        self.res = LoadResult(items=len(items))
        self.url_index = {u: k for k, u in enumerate(urls)}
        for k in KINDS:
            self.res.by_kind[k] = Counter()
        self.targets = [_request_head(u, ()) for u in urls]
        self.next_item = 0
        self.done_items = 0
        # dup/conflict items wait for the item they repeat to finish, so their expected
        # answer (replay / 409) does not depend on how the workers interleave
        self.finished = {it.ref: asyncio.Event() for it in items if it.ref is not None}
        self.perf = time.perf_counter
        self.wall0, self.perf0 = clock(), self.perf()
        self.start = self.perf()

    def wall(self, p: float) -> float:
        return self.wall0 + (p - self.perf0)

    async def worker(self, w: int) -> None:
        conns: dict[int, Connection] = {}
        heads: dict[tuple[int, str], bytes] = {}
        state = {"preferred": 0}  # failover mode: the URL that last answered this worker
        rng = random.Random(self.seed * 1_000_003 + w)
        try:
            while self.next_item < len(self.items):
                i = self.next_item
                self.next_item += 1
                await self._one_item(i, rng, conns, heads, state)
        finally:
            for c in conns.values():
                c.close()

    async def _one_item(self, i: int, rng: random.Random, conns: dict, heads: dict, state: dict) -> None:
        perf = self.perf
        sched = self.start + i / self.rate if self.rate else None
        if sched is not None:
            delay = sched - perf()
            if delay > 0:
                await asyncio.sleep(delay)
        item = self.items[i]
        if item.ref is not None:
            await self.finished[item.ref].wait()
        began = perf() if sched is None else sched
        first_url = i % len(self.urls) if self.url_mode == "spread" else state["preferred"]
        sub = Submission(item.prepared, self.urls, rng=rng, policy=self.policy, tenant=item.tenant,
                         first_url=first_url)
        action: Send | Wait | Done = sub.start(self.wall(perf()))
        while not isinstance(action, Done):
            if isinstance(action, Wait):
                await asyncio.sleep(action.delay)
                action = sub.resume(self.wall(perf()))
                continue
            action = await self._attempt(i, item, sub, action, sched, conns, heads)
        self._tally(i, item, action, began, state)

    async def _attempt(self, i: int, item: Item, sub: Submission, action: Send, sched: float | None,
                       conns: dict, heads: dict):
        """One HTTP attempt of ``item``; returns the submission's next action."""
        perf, res = self.perf, self.res
        ui = action.url_index
        conn = conns.get(ui)
        if conn is None:
            (host, port), _ = self.targets[ui]
            conn = conns[ui] = Connection(host, port, self.timeout)
        head = heads.get((ui, item.tenant))
        if head is None:
            head = heads[(ui, item.tenant)] = _request_head(self.urls[ui], action.headers)[1]
        t0 = perf()
        status = err = replay = None
        try:
            status, hdrs = await conn.post(head, action.body)
            rv = hdrs.get(REPLAY_HEADER)
            replay = None if rv is None else rv.lower() == "true"
            result: HttpAnswer | TransportFailure = HttpAnswer(status, hdrs.get("retry-after"))
        except HttpError as exc:
            err = str(exc)
            result = TransportFailure(err)
        t1 = perf()
        res.sent += 1
        if action.attempt > 1:
            res.retries += 1
        res.by_status[status if status is not None else "error"] += 1
        res.latencies.append(t1 - t0)
        action_next = sub.on_result(result, self.wall(t1))
        if self.history is not None:
            self._record(i, item, action, action_next, status, err, replay, t0, t1, sched)
        return action_next

    def _record(self, i, item, action, action_next, status, err, replay, t0, t1, sched) -> None:
        wall = self.wall
        rec = {
            "req_id": f"{self.seed}-{i}-{action.attempt}",
            "item": i,
            "attempt": action.attempt,
            "final": isinstance(action_next, Done),
            "kind": item.kind,
            "tenant": item.tenant,
            "pcs_id": item.pcs["pcs_id"],
            "digest": item.digest,
            "url": action.url,
            "status": status,
            "error": err,
            "replay": replay,
            "latency_s": round(t1 - t0, 6),
            "t_send": round(wall(t0), 6),
            "t_recv": round(wall(t1), 6),
            "t_sched": None if sched is None else round(wall(sched), 6),
        }
        if isinstance(action_next, Done):
            rec["outcome"] = action_next.outcome
        self.history.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def _tally(self, i: int, item: Item, action: Done, began: float, state: dict) -> None:
        res = self.res
        res.outcomes[action.outcome] += 1
        res.item_latencies.append(self.perf() - began)
        if action.status is not None:
            state["preferred"] = self.url_index[action.url]
        last = action.status if action.status is not None else "error"
        res.by_kind[item.kind][str(last)] += 1
        if action.status not in EXPECTED[item.kind]:
            res.unexpected += 1
        self.done_items += 1
        ev = self.finished.get(i)
        if ev is not None:
            ev.set()
        now = self.perf()
        self.progress.update(self.done_items, res.sent, now, now - self.start)


async def _run(
    items: Sequence[Item],
    urls: Sequence[str],
    *,
    concurrency: int,
    rate: float | None,
    policy: RetryPolicy,
    seed: int,
    timeout: float,
    history,
    progress: _Progress,
    clock: Callable[[], float],
    url_mode: str = "spread",
) -> LoadResult:
    run = _LoadRun(items, urls, rate=rate, policy=policy, seed=seed, timeout=timeout, history=history,
                   progress=progress, clock=clock, url_mode=url_mode)
    await asyncio.gather(*(run.worker(w) for w in range(concurrency)))
    res = run.res
    res.elapsed_s = run.perf() - run.start
    progress.update(run.done_items, res.sent, run.perf(), res.elapsed_s, final=True)
    return res


def check_concurrency(concurrency: int) -> None:
    """``concurrency`` is a number of workers :func:`run_load` can open (1 to :data:`MAX_CONCURRENCY`)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput("concurrency", f"must be an integer from 1 to {MAX_CONCURRENCY:,}")


def run_load(
    items: Sequence[Item],
    urls: Sequence[str],
    *,
    concurrency: int = 32,
    rate: float | None = None,
    policy: RetryPolicy | None = None,
    seed: int = 0,
    timeout: float = 10.0,
    history_path: str | None = None,
    progress: bool = False,
    progress_stream=None,
    clock: Callable[[], float] = time.time,
    url_mode: str = "spread",
) -> LoadResult:
    """Send ``items`` to ``urls`` and return the tallies.

    ``url_mode`` ``spread``: item ``i`` starts at URL ``i mod len(urls)`` (load
    spread over regions); ``failover``: each worker starts at the URL that last
    answered it (initially the first) and moves on only when that one fails.
    Either way a failing URL is failed over (:class:`flk.impl.agent.client.Submission`)."""
    if url_mode not in ("spread", "failover"):
        raise InvalidInput("url_mode", "must be spread or failover")
    check_concurrency(concurrency)
    if rate is not None and (not math.isfinite(rate) or rate <= 0):
        raise InvalidInput("rate", "must be a positive number")
    if not urls:
        raise InvalidInput("url", "at least one --url is needed")
    full = [submit_url(u) for u in urls]
    for u in full:
        _request_head(u, ())
    policy = policy or RetryPolicy(base=0.05, cap=2.0, max_attempts=5, max_retry_after=10.0)
    try:
        history = open(history_path, "w", encoding="utf-8", buffering=1 << 20) if history_path else None
    except OSError as exc:
        raise InvalidInput("history", f"cannot write {history_path}: {exc.strerror or exc}") from None
    prog = _Progress(len(items), progress_stream or sys.stderr, progress)
    try:
        coro = _run(items, full, concurrency=min(concurrency, max(1, len(items))), rate=rate,
                    policy=policy, seed=seed, timeout=timeout, history=history, progress=prog, clock=clock,
                    url_mode=url_mode)
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:
            return asyncio.run(coro)
    finally:
        if history is not None:
            history.close()
