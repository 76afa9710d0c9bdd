"""The operator's routes: what ``flk operator run`` observes and the actions it asks for.

Why this module exists: the deployed controller (:mod:`flk.impl.operator`) must
see a server's migration and act on it over HTTP, behind the operator
credential, like every other ops route (``protected_routes`` in :mod:`.app`):

* ``GET /api/operator/migration`` -- this process's applied phase (after a
  refresh of the migration state file) and the state's phase and copy/verify
  progress (:meth:`flk.impl.operator.migration.MigrationTarget.observe`);
* ``POST /api/operator/migration/actions`` -- one controller action (JSON:
  ``{"op": "migration.plan" | "migration.phase" | "migration.copy" |
  "migration.verify", ...}``) carried out on the state file
  (``DEDUP_MIGRATION_STATE``) and this process's rings; every action is
  idempotent, so a controller that retries after a kill does no harm.

Answers: 200 JSON; 400 ``invalid-query`` (not an action object); 409
``migration-refused`` (a refused step: wrong phase, other rings); 503
``migration-disabled`` (no migration configured) or ``shard-unavailable``.
Actions run one at a time per process, off the event loop.
"""

from __future__ import annotations

import json
import threading
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..dedup import migrate
from ..dedup.base import StoreUnavailable
from ..operator.migration import MigrationTarget

OPS = ("migration.plan", "migration.phase", "migration.copy", "migration.verify")
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
            action = json.loads(body) if len(body) <= MAX_BODY else None
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
            Route("/api/operator/migration/actions", act, methods=["POST"])]
