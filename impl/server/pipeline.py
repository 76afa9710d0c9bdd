"""The server's verify pipeline: built from the configuration and replayed at start.

Why this module exists: it is the one place where the server builds the
:class:`flk.impl.verifier.pipeline.Verifier` from its configuration (tenants,
policy, region, limits) and replays the worker's inbox WAL through it. Submissions
are driven by :mod:`.batchdriver`: batches of the verification core on one
thread, whose inbox WAL records are appended and fsynced before any answer
(INV-WAL-FIRST), with the dedup store behind the circuit breaker.

Replay at start reads every record of the worker's inbox WAL and runs it
through the verification core (:func:`flk.impl.verifier.core.replay_batch`) with
``now = received_at`` -- the same code as the submit path, so a record whose outcome was stored before the crash is a dedup hit (a
no-op) and one that was not gets the outcome it would have had
(INV-IDEMPOTENT-REPLAY, INV-NO-ACKED-LOSS).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..core.errors import InvalidInput
from ..dedup import StoreUnavailable
from .config import DEFAULT_TENANT, ConfigError, ServerConfig


def build_tenants(cfg: ServerConfig):
    """The :class:`flk.impl.verifier.tenants.TenantRegistry` the configuration describes:
    ``TENANTS_FILE`` (the tenants TOML of :mod:`flk.impl.verifier.tenants`: per-tenant rate,
    quota, key windows, profiles, PII mode) or the keys parsed from ``TENANTS`` /
    ``PCS_*`` (with ``TOKEN_RATE`` as every tenant's rate)."""
    from ..core.signing import b64encode
    from ..verifier.tenants import from_mapping, load_toml

    if cfg.tenants_file:
        try:
            return load_toml(cfg.tenants_file)
        except InvalidInput as exc:
            raise ConfigError(f"TENANTS_FILE {cfg.tenants_file}: {exc}") from None
    doc: dict[str, Any] = {"defaults": {}, "tenants": {}, "single_tenant": not cfg.multi_tenant}
    if cfg.token_rate > 0:
        doc["defaults"] = {"rate_per_s": cfg.token_rate, "burst": max(1.0, cfg.token_rate)}
    for tid, keys in cfg.tenants.items():
        if keys.hmac_keys and keys.ed25519_pubs:
            raise ConfigError(f"tenant {tid}: one algorithm per tenant (both hmac and ed25519 keys given)")
        if keys.ed25519_pubs:
            spec = {"alg": "ed25519", "keys": [
                {"id": f"k{i}", "public_key_b64": b64encode(k)} for i, k in enumerate(keys.ed25519_pubs)]}
        else:
            spec = {"alg": "hmac", "keys": [
                {"id": f"k{i}", "secret_b64": b64encode(k)} for i, k in enumerate(keys.hmac_keys)]}
        doc["tenants"][tid] = spec
    if not cfg.multi_tenant and DEFAULT_TENANT not in doc["tenants"]:
        raise ConfigError("single-tenant mode needs keys for the default tenant")
    try:
        return from_mapping(doc)
    except InvalidInput as exc:
        raise ConfigError(f"tenants: {exc}") from None


def build_policy_kwargs(cfg: ServerConfig) -> dict[str, Any]:
    """``policy`` (and the policy's ``reject_status``) from the ``POLICY`` file, if any."""
    if not cfg.policy_file:
        return {}
    from ..verifier.policy import load_policy

    try:
        return load_policy(cfg.policy_file).verifier_kwargs()
    except (InvalidInput, ValueError, OSError) as exc:
        raise ConfigError(f"POLICY {exc}") from None


def build_hooks(tenants) -> list:
    """Governance hooks the tenants ask for: the PII gate when any tenant's
    ``pii_mode`` is not ``off``; the VRF check when any tenant's ``vrf`` is not ``off``."""
    modes, vrf = {}, {}
    for tid in tenants.ids():
        t = tenants.resolve(tid)
        if t is not None and t.pii_mode != "off":
            modes[tid] = t.pii_mode
        if t is not None and t.vrf != "off":
            vrf[tid] = (t.vrf_public_key, t.vrf == "required")
    hooks = []
    if modes:
        from ..governance.pii import PiiCounters, make_pii_hook

        hooks.append(make_pii_hook(modes, PiiCounters()))
    if vrf:
        from ..governance.vrf import make_tenants_vrf_hook

        hooks.append(make_tenants_vrf_hook(vrf))
    return hooks


def build_verifier(cfg: ServerConfig, buckets=None):
    """The verify pipeline of one worker; ``buckets`` are the per-tenant token buckets
    of the worker's admission control (:func:`flk.impl.verifier.admission.build_admission`)."""
    from ..verifier.pipeline import Limits, Verifier

    tenants = build_tenants(cfg)
    return Verifier(
        tenants,
        region=cfg.region_id,
        limiter=buckets,
        limits=Limits(max_body_bytes=cfg.max_body_bytes, retry_after_s=cfg.retry_after_s, ttl_s=cfg.dedup_ttl_s),
        hooks=build_hooks(tenants),
        **build_policy_kwargs(cfg),
    )




REPLAY_BATCH = 512  # records of one replay batch at most (a submit batch holds at most 256)


class StoreRefusedRecord(Exception):
    """The dedup store answers pings but fails every write of one replayed record."""


class ServerPipeline:
    """The worker's verifier and its start-up WAL replay. It takes what it uses, not the
    server: the tenants' token ``buckets``, the dedup ``store()`` (a getter: the server
    may reopen it), the ``metrics`` sink, the ``executor`` the replay runs on and
    ``quarantine(wal, index, payload, error)`` for poison records."""

    def __init__(self, cfg: ServerConfig, *, buckets: Any, store: Callable[[], Any], metrics: Any,
                 executor: Any, quarantine: Callable[[Any, int, bytes, BaseException], None]) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.executor = executor
        self.quarantine = quarantine
        self.verifier = build_verifier(cfg, buckets)

    # -- replay ---------------------------------------------------------------------
    def _replay_all(self, wal: Any, from_index: int = 0) -> dict[str, int]:
        """Every record of ``wal`` from ``from_index`` (the WAL checkpoint), streamed (not
        loaded at once), through the verification core
        (:func:`flk.impl.verifier.core.replay_batch`): one batch per run of records
        received at one time (a submit batch), with ``now = received_at``.

        A record that does not decode, or whose processing raises unexpectedly,
        is poison: quarantined (``quarantine``, logged without payload)
        and skipped, so that no record can stop a start (a batch that raises is
        replayed record by record to find it). A store outage stops the replay:
        the worker must not serve with an un-replayed WAL. A record the store
        refuses (503) while it answers pings is tried again after the others; if
        it is still refused although the store stored other records of this
        replay, it is poison too -- if the store stored nothing, the store is what
        is broken (e.g. its own disk is full) and the replay stops.

        Home answers: the answers of the active (unsealed) segment's records were in
        memory only (its manifest carries them once it is sealed, SPEC.md section
        12.4); the replay's answers take their place (:meth:`SegmentedLog.note_answers`),
        so that they still travel with the records."""
        from ..storage.inbox import decode_inbox_record

        counts = {"records": 0, "errors": 0, "quarantined": 0}
        state = {"wrote": False, "refused": [], "answers": {}}
        segments = wal.segments()
        active_first = segments[-1].first_index if segments else 0
        run: list[tuple[int, bytes, Any]] = []
        for index, payload in wal.records(from_index):
            try:
                entry = decode_inbox_record(payload)
            except InvalidInput as exc:  # a record that passed its CRC but does not decode
                counts["errors"] += 1
                self._quarantine(wal, index, payload, exc, counts)
                continue
            if run and (run[0][2].received_at != entry.received_at or len(run) >= REPLAY_BATCH):
                self._replay_run(wal, run, counts, state, active_first)
                run = []
            run.append((index, payload, entry))
        if run:
            self._replay_run(wal, run, counts, state, active_first)
        for index, payload, rec in state["refused"]:
            if self._replay_one(wal, index, payload, rec, counts) != "refused":
                continue
            if not state["wrote"]:
                raise StoreUnavailable("dedup store unavailable during WAL replay (it answers pings but "
                                       "stored no record)")
            self._quarantine(wal, index, payload, StoreRefusedRecord(
                "the dedup store refused this record twice while it stored others"), counts)
        if state["answers"] and hasattr(wal, "note_answers"):
            wal.note_answers([note for _, note in sorted(state["answers"].items())])
        return counts

    def _replay_run(self, wal: Any, run: list, counts: dict, state: dict, active_first: int) -> None:
        """One replay batch (records received at one time); record by record if it raises."""
        try:
            batch = self._core(run)
        except Exception:  # noqa: BLE001 -- a poison record among them: one by one
            for index, payload, rec in run:
                outcome = self._replay_one(wal, index, payload, rec, counts)
                if outcome == "refused":
                    state["refused"].append((index, payload, rec))
                state["wrote"] = state["wrote"] or outcome == "stored"
            return
        for (index, payload, rec), resp in zip(run, batch.responses, strict=True):
            if resp.status == 503:
                if not self._store_answers():
                    raise StoreUnavailable("dedup store unavailable during WAL replay")
                state["refused"].append((index, payload, rec))
                continue
            counts["records"] += 1
            if resp.status in (200, 202) and resp.header("Idempotent-Replayed") is None:
                state["wrote"] = True
        for note in batch.notes():
            if note.index >= active_first:
                state["answers"][note.index] = note

    def _core(self, run: list):
        """The one call into the verification core: ``run``'s records as one replay batch."""
        from ..verifier.core import replay_batch

        return replay_batch(self.verifier, [rec for _, _, rec in run], self.store(),
                            indexes=[index for index, _, _ in run], sink=self.metrics)

    def _quarantine(self, wal: Any, index: int, payload: bytes, error: BaseException, counts: dict) -> None:
        counts["quarantined"] += 1
        self.quarantine(wal, index, payload, error)

    def _replay_one(self, wal: Any, index: int, payload: bytes, rec: Any, counts: dict) -> str:
        """``"stored"`` (a new outcome was written), ``"done"`` (answered otherwise),
        ``"poison"`` (quarantined) or ``"refused"`` (503 while the store answers pings)."""
        try:
            [resp] = self._core([(index, payload, rec)]).responses
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 -- a poison record: quarantined, replay continues
            self._quarantine(wal, index, payload, exc, counts)
            return "poison"
        if resp.status == 503:
            if not self._store_answers():
                raise StoreUnavailable("dedup store unavailable during WAL replay")
            return "refused"
        counts["records"] += 1
        fresh = resp.status in (200, 202) and resp.header("Idempotent-Replayed") is None
        return "stored" if fresh else "done"

    def _store_answers(self) -> bool:
        try:
            return bool(self.store().ping())
        except Exception:  # noqa: BLE001 -- any failure to ping is an outage
            return False

    async def replay_wal(self, wal: Any, from_index: int = 0) -> dict[str, int]:
        """Replay every record of ``wal`` from ``from_index`` (a checkpoint: see
        :func:`replay_start`) on a worker thread; raises if the store is unavailable
        (the worker must not serve with an un-replayed WAL)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._replay_all, wal, from_index)


def build_pipeline(cfg: ServerConfig, server: Any) -> ServerPipeline:
    """The worker's pipeline from what the server holds (the one place that reads it)."""
    return ServerPipeline(cfg, buckets=server.admission.buckets, store=lambda: server.store,
                          metrics=server.metrics, executor=getattr(server, "executor", None),
                          quarantine=server.quarantine_record)


# -- WAL checkpoints --------------------------------------------------------------------
# ``checkpoint.json`` in a worker's inbox WAL directory says: every record below
# ``index`` has its outcome durable in the dedup store identified by ``store`` (and,
# for Redis/Postgres, marked ``generation``). It is written only AFTER the store made
# those outcomes durable (:func:`write_checkpoint` is called after the start-up replay
# and after a clean stop, each once every record below the index was processed and
# ``store.make_durable()`` returned), with the file system's atomic write. So a crash
# at any point leaves either the old checkpoint (the records after it are replayed
# again: first-write-wins makes that a no-op, INV-IDEMPOTENT-REPLAY) or the new one
# (every record below it is in the store). A different store, another generation, a
# rebuild or a store that keeps nothing across restarts (memory) replays everything.

CHECKPOINT_FILE = "checkpoint.json"


def replay_start(wal: Any, store_id: str, generation: str | None, trust: bool) -> int:
    """The first inbox WAL index the start-up replay must process (0: every record)."""
    import json
    import posixpath

    if not trust:
        return 0
    path = posixpath.join(wal.dir, CHECKPOINT_FILE)
    try:
        doc = json.loads(wal.fs.read(path))
        index = int(doc["index"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    if doc.get("store") != store_id or doc.get("generation") != generation or index < 0:
        return 0
    return min(index, wal.next_index)


def write_checkpoint(wal: Any, index: int, store: Any, store_id: str, generation: str | None) -> bool:
    """Record that every record below ``index`` has its outcome durable in ``store``:
    the store is asked to make what it holds durable first (SQLite: a full WAL
    checkpoint; Redis with AOF and Postgres already are), then the file is replaced
    atomically."""
    import json
    import posixpath

    durable = getattr(store, "make_durable", None)
    if durable is None or not durable():
        return False  # a store that cannot say its outcomes are durable gets no checkpoint
    doc = {"v": 1, "index": int(index), "store": store_id, "generation": generation}
    wal.fs.write_atomic(posixpath.join(wal.dir, CHECKPOINT_FILE), json.dumps(doc, sort_keys=True).encode())
    return True
