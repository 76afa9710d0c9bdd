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




def reloaded_verifier(cfg: ServerConfig, current: Any) -> Any:
    """``current`` with the tenants ``TENANTS_FILE`` holds now (and the hooks they ask for):
    what ``flk serve`` swaps in at SIGHUP (:meth:`flk.impl.verifier.pipeline.Verifier.with_tenants`:
    the token buckets are kept). Raises :class:`ConfigError` -- the file is unreadable or
    invalid, or the server's tenants come from ``TENANTS`` / ``PCS_*`` (settings, not a
    file: a restart reads them) -- and then ``current`` stays in use. The message names the
    field, never a key."""
    if not cfg.tenants_file:
        raise ConfigError("no TENANTS_FILE: the tenants come from settings, which a restart reads")
    tenants = build_tenants(cfg)
    return current.with_tenants(tenants, build_hooks(tenants))


REPLAY_BATCH = 512  # records of one replay batch at most (a submit batch holds at most 256)


def _records(wal: Any, from_index: int):
    """``wal``'s records from ``from_index``: the archived ones (a rebuild replays from 0,
    :func:`flk.impl.storage.checkpoint.archived_records`) then the log's own."""
    from ..storage.checkpoint import archived_records

    first = wal.first_index if hasattr(wal, "first_index") else 0
    if from_index < first and hasattr(wal, "fs"):
        yield from archived_records(wal, from_index)
    yield from wal.records(max(from_index, first))


class ServerPipeline:
    """The worker's verifier and its start-up WAL replay. It takes what it uses, not the
    server: the tenants' token ``buckets``, the dedup ``store()`` (a getter: the server
    may reopen it), the ``executor`` the replay runs on and
    ``quarantine(wal, index, payload, error)`` for poison records.

    The replay feeds no metrics sink: the pipeline's counters (``flk_accepted_total``,
    ``flk_signature_errors_total``, ``flk_dedup_hits_total``, ...) count what this process
    answered its clients. A replayed record was answered by an earlier process (and counted
    there); counting it again would show a restart as a burst of old verdicts -- every 401
    of the replayed WAL as new signature failures (FlkSignatureFailureSpike), every stored
    record as a dedup hit. What the replay did is ``flk_wal_replayed_total`` and the
    ``wal_replayed`` log line (``stored``: outcomes the replay wrote, missing from the store)."""

    def __init__(self, cfg: ServerConfig, *, buckets: Any, store: Callable[[], Any],
                 executor: Any, quarantine: Callable[[Any, int, bytes, BaseException], None]) -> None:
        self.cfg = cfg
        self.store = store
        self.executor = executor
        self.quarantine = quarantine
        self.verifier = build_verifier(cfg, buckets)

    # -- replay ---------------------------------------------------------------------
    def _replay_all(self, wal: Any, from_index: int = 0) -> dict[str, int]:
        """Every record of ``wal`` from ``from_index`` (the WAL checkpoint), streamed (not
        loaded at once), through the verification core
        (:func:`flk.impl.verifier.core.replay_batch`): one batch per run of records
        received at one time (a submit batch), with ``now = received_at``.

        A record that does not decode is poison: quarantined (``quarantine``, logged
        without payload) and skipped. Every other record goes through the replay
        policy of :class:`flk.impl.verifier.poison.PoisonPolicy` (the one owner, shared
        with cross-region replay): a record whose processing raises is poison too (a
        batch that raises is replayed record by record to find it); a store refusal of
        any cause (503 or ``StoreUnavailable``, even while the store answers pings) is
        never poison: it stops the replay (the worker must not serve with an
        un-replayed WAL; replaying again is a no-op).

        Records below the log's first live index (segments retired to the archive by the
        retention policy) are replayed from the archive when ``from_index`` is below it
        (a rebuild of the dedup store).

        Home answers: the answers of the active (unsealed) segment's records were in
        memory only (its manifest carries them once it is sealed, SPEC.md section
        12.4); the replay's answers take their place (:meth:`SegmentedLog.note_answers`),
        so that they still travel with the records."""
        from ..storage.inbox import decode_inbox_record
        from ..verifier.poison import PoisonPolicy

        counts = {"records": 0, "stored": 0, "errors": 0, "quarantined": 0}
        answers: dict[int, Any] = {}
        segments = wal.segments()
        active_first = segments[-1].first_index if segments else 0

        def run_batch(run: list) -> list[str]:
            return self._run(run, counts, answers, active_first)

        def run_one(item: tuple) -> str:
            return self._run([item], counts, answers, active_first)[0]

        policy = PoisonPolicy(self._store_answers,
                              lambda item, exc: self._quarantine(wal, item[0], item[1], exc, counts),
                              what="WAL replay")
        run: list[tuple[int, bytes, Any]] = []
        for index, payload in _records(wal, from_index):
            try:
                entry = decode_inbox_record(payload)
            except InvalidInput as exc:  # a record that passed its CRC but does not decode
                counts["errors"] += 1
                self._quarantine(wal, index, payload, exc, counts)
                continue
            if run and (run[0][2].received_at != entry.received_at or len(run) >= REPLAY_BATCH):
                policy.run(run, run_batch, run_one)
                run = []
            run.append((index, payload, entry))
        if run:
            policy.run(run, run_batch, run_one)
        if answers and hasattr(wal, "note_answers"):
            wal.note_answers([note for _, note in sorted(answers.items())])
        return counts

    def _run(self, run: list, counts: dict, answers: dict, active_first: int) -> list[str]:
        """``run``'s records as one replay batch; each one's result for the poison policy
        (a 503 is not counted as replayed: it is tried again or stops the replay)."""
        from ..verifier.poison import REFUSED, STORED, answered

        batch = self._core(run)
        results = [answered(resp.status, resp.header("Idempotent-Replayed") is not None)
                   for resp in batch.responses]
        counts["records"] += sum(result != REFUSED for result in results)
        counts["stored"] += results.count(STORED)
        for note in batch.notes():
            if note.index >= active_first:
                answers[note.index] = note
        return results

    def _core(self, run: list):
        """The one call into the verification core: ``run``'s records as one replay batch
        (no sink: see the class docstring)."""
        from ..verifier.core import replay_batch

        return replay_batch(self.verifier, [rec for _, _, rec in run], self.store(),
                            indexes=[index for index, _, _ in run])

    def _quarantine(self, wal: Any, index: int, payload: bytes, error: BaseException, counts: dict) -> None:
        counts["quarantined"] += 1
        self.quarantine(wal, index, payload, error)

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
                          executor=getattr(server, "executor", None),
                          quarantine=server.quarantine_record)
