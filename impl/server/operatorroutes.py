"""The operator's routes: what ``flk operator run`` observes and the actions it asks for.

Why this module exists: the deployed controller (:mod:`flk.impl.operator`) must
see a server's migration and act on it over HTTP, behind the operator
credential, like every other ops route (``protected_routes`` in :mod:`.app`):

* ``GET /api/operator/migration`` -- this process's applied phase (after a
  refresh of the migration state file) and the state's phase and copy/verify
  progress (:meth:`flk.impl.operator.migration.MigrationTarget.observe`);
* ``POST /api/operator/migration/actions`` -- one controller action (JSON:
  ``{"op": "migration.plan" | "migration.phase" | "migration.copy" |
  "migration.verify" | "migration.catchup" | "migration.prune", ...}``) carried out on the state file
  (``DEDUP_MIGRATION_STATE``) and this process's rings; every action is
  idempotent, so a controller that retries after a kill does no harm.

Answers: 200 JSON; 400 ``invalid-query`` (not an action object); 409
``migration-refused`` (a refused step: wrong phase, other rings); 503
``migration-disabled`` (no migration configured) or ``shard-unavailable``.
Actions run one at a time per process, off the event loop.

A CRRPolicy (:mod:`flk.impl.operator.crr`, the rule the simulator applies too):

* ``GET /api/operator/crr`` -- this region, the policy generation its reader
  runs (null: none applied) and its reader's filters;
* ``POST /api/operator/crr/actions`` -- ``{"op": "crr.apply", "generation",
  "spec", "regions": [every region id]}``: the reader's new topology is handed
  to the replication thread (applied before its next step, never under a
  running one) and kept in ``DATA_DIR/crr/operator-crr.json``; a restarted
  server applies the kept one again when the operator next observes it.
  Answers 200 (applied already), 202 (queued: observe the generation), 400
  ``invalid-query``, 503 ``replication-disabled`` (no ``CRR_*`` configured, or a
  worker that does not read peers).
"""

from __future__ import annotations

import json
import os
import threading
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..core import textdata
from ..dedup import migrate
from ..dedup.base import StoreUnavailable
from ..operator.migration import MigrationTarget
from ..verifier.wire import parse_strict

OPS = ("migration.plan", "migration.phase", "migration.copy", "migration.verify", "migration.catchup",
       "migration.prune")
MAX_BODY = 64 * 1024


def _target(srv) -> tuple[MigrationTarget, object] | None:
    store, path = srv.store, srv.cfg.dedup_migration_state
    if not path or not isinstance(store, migrate.DualWriteStore):
        return None

    def load():
        try:
            return migrate.load_state(path)
        except migrate.MigrationError:
            return None

    return MigrationTarget(load, lambda st: migrate.save_state(path, st), lambda _st: (store.old, store.new),
                           store.set_phase), store


def routes(get_server, problem) -> list:
    lock = threading.Lock()

    async def observe(request: Request):
        srv = get_server()
        got = _target(srv)
        if got is None:
            return problem("migration-disabled", "this server runs no shard migration (DEDUP_MIGRATION_STATE)")
        target, store = got

        def run():
            store.refresh(time.time())
            return {"worker": srv.worker, "applied_phase": store.phase, "migration": target.observe()}
        return JSONResponse(await run_in_threadpool(run))

    async def act(request: Request):
        srv = get_server()
        got = _target(srv)
        if got is None:
            return problem("migration-disabled", "this server runs no shard migration (DEDUP_MIGRATION_STATE)")
        body = await request.body()
        try:
            action = parse_strict(body) if len(body) <= MAX_BODY else None  # no duplicate keys
        except ValueError:
            action = None
        if not isinstance(action, dict) or action.get("op") not in OPS:
            return problem("invalid-query", f"body must be a JSON action object with op in {', '.join(OPS)}")
        target, _store = got

        def run():
            with lock:
                return target.execute(action, time.time())
        try:
            result = await run_in_threadpool(run)
        except migrate.MigrationError as exc:
            return problem("migration-refused", str(exc)[:200])
        except StoreUnavailable as exc:
            return problem("shard-unavailable", str(exc)[:200])
        except (KeyError, TypeError, ValueError) as exc:
            return problem("invalid-query", f"bad action: {type(exc).__name__}")
        return JSONResponse({"op": action["op"], "result": result})

    return [Route("/api/operator/migration", observe, methods=["GET"]),
            Route("/api/operator/migration/actions", act, methods=["POST"]), *crr_routes(get_server, problem)]


def _crr_service(srv):
    svc = getattr(srv, "crr", None)
    return svc if svc is not None and getattr(svc, "reader", None) is not None else None


def _crr_kept(svc) -> dict | None:
    path = os.path.join(svc.state_dir, "operator-crr.json")
    try:
        with open(path, encoding="utf-8") as f:
            kept = textdata.json_load(f)
        return kept if isinstance(kept, dict) and {"generation", "spec", "regions"} <= set(kept) else None
    except (OSError, ValueError):
        return None


def _crr_apply(svc, generation: str, spec: dict, regions: list[str]) -> None:
    """Queue the policy's topology for this region on the replication thread (and keep it)."""
    from ..operator import crr
    from ..replication.reading import Topology

    me = svc.cfg.region

    def change() -> None:
        topology = Topology.selective(me, crr.peers_for(spec, regions, me), include_self=True)
        crr.apply(svc.reader, topology, me)
        kept = {"generation": generation, "spec": spec, "regions": regions}
        path = os.path.join(svc.state_dir, "operator-crr.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(kept, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        svc.operator_crr = generation

    svc.call_soon(change)


def crr_routes(get_server, problem) -> list:
    disabled = ("replication-disabled", "this server reads no peers (CRR_* unset, or a worker other than 0): "
                "a CRRPolicy has nothing to apply here")

    async def observe(request: Request):
        svc = _crr_service(get_server())
        if svc is None:
            return problem(*disabled)
        applied = getattr(svc, "operator_crr", None)
        kept = _crr_kept(svc) if applied is None else None
        if kept is not None and not svc.pending:  # restarted: the kept policy again (reported once applied)
            _crr_apply(svc, kept["generation"], kept["spec"], kept["regions"])
        from ..operator import crr

        return JSONResponse({"region": svc.cfg.region, "generation": applied,
                             "filters": crr.filters(svc.reader.topology.sources)})

    async def act(request: Request):
        from ..operator.policy import PolicyError, check_policy

        svc = _crr_service(get_server())
        if svc is None:
            return problem(*disabled)
        body = await request.body()
        try:
            action = parse_strict(body) if len(body) <= MAX_BODY else None  # no duplicate keys
        except ValueError:
            action = None
        if not isinstance(action, dict) or action.get("op") != "crr.apply":
            return problem("invalid-query", "body must be a JSON action object with op crr.apply")
        regions, generation = action.get("regions"), action.get("generation")
        if (not isinstance(regions, list) or not all(isinstance(r, str) and r for r in regions)
                or svc.cfg.region not in regions or not isinstance(generation, str)):
            return problem("invalid-query", "crr.apply needs generation (string) and regions (every region id, "
                                            "this one among them)")
        try:
            spec = check_policy({"kind": "CRRPolicy", "name": "applied", "spec": action.get("spec")}).spec
        except PolicyError as exc:
            return problem("invalid-query", f"crr.apply: {exc}"[:200])
        if getattr(svc, "operator_crr", None) == generation:
            return JSONResponse({"op": "crr.apply", "result": "applied"})
        _crr_apply(svc, generation, spec, sorted(set(regions)))
        return JSONResponse({"op": "crr.apply", "result": "queued"}, status_code=202)

    return [Route("/api/operator/crr", observe, methods=["GET"]),
            Route("/api/operator/crr/actions", act, methods=["POST"])]
