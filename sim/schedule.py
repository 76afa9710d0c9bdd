"""Explicit operation schedules: a scenario that says exactly what happens when.

Why this module exists: a model counterexample (``flk check model``) is a short
sequence of actions -- submit this payload to that region, ship, read, crash,
restart, partition, heal, rotate a key. To replay it on the simulator the
scenario must carry that sequence as data, not as workload rates. A scenario's
``[[schedule]]`` tables are that data (validated against :data:`FIELDS` by the
one scenario schema, :func:`flk.sim.scenario.validate`); faults keep their own
``[[faults]]`` tables with explicit ``at_s`` (crash, restart, partition,
heal, rotate_key). A scenario without ``[[schedule]]`` runs exactly as before.

Operations (``op``):

* ``submit`` -- a client sends one PCS to ``region`` with ``X-Tenant-Id:
  tenant``: pcs_id number ``pcs`` of that tenant (the same number is the same
  pcs_id), payload variant ``payload`` (the same number is the same signed
  payload; another number moves coh-star, a conflict), signed with the
  tenant's current key (``good``), a flipped signature (``forged``) or another
  tenant's key (``other``). It goes through the real retrying client
  (:meth:`flk.sim.workload.Agent.deliver`) of an agent of its own that knows
  only ``region``, so it is recorded like any workload request
  (``client.send`` kind ``valid`` or ``bad_sig``).
* ``ship`` -- the region's shipper seals its active segment (between batches:
  the seal lock) and uploads what is sealed, once (``crr.shipped`` records
  the count).
* ``read`` -- the region's reader polls every stream once and applies new
  segments (``crr.applied``).

``ship`` and ``read`` need ``replication.enabled``; a schedule that wants
them to happen only when scheduled sets the intervals beyond the run.
"""

from __future__ import annotations

import contextlib
import hashlib

from flk.impl.agent import factory
from flk.impl.storage.objectstore import ObjectStoreUnavailable
from flk.impl.storage.wal import WalError

from .schema import MAX_TIME, Context, Field, ScenarioError, check_table

OPS = ("submit", "ship", "read")
SIGNATURES = ("good", "forged", "other")
FIELDS = (
    Field("at_s", "number", None, "when, seconds from the start of the run", minimum=0.0, maximum=MAX_TIME,
          required=True),
    Field("op", "str", None, "submit | ship | read (see the list below)", required=True, choices=OPS),
    Field("region", "str", None, "the region that receives the request / ships / reads", required=True),
    Field("tenant", "str", None, "submit: the tenant (t0, t1, ...; default t0)"),
    Field("pcs", "int", None, "submit: pcs_id number of the tenant (default 1)", minimum=1),
    Field("payload", "int", None, "submit: payload variant (default 1; another number: a conflict)", minimum=1),
    Field("signature", "str", None, "submit: good | forged | other (another tenant's key) (default good)",
          choices=SIGNATURES),
)
SUBMIT_ONLY = ("tenant", "pcs", "payload", "signature")
AGENT_BASE = 100_000  # scheduled submissions' agents are agent-100000, agent-100001, ...
SEAL_RETRY_S = 0.001


def validate(items: list, ctx: Context, replicated: bool) -> None:
    """Check every ``[[schedule]]`` table; the first problem raises :class:`ScenarioError`."""
    for i, item in enumerate(items):
        path = f"schedule.{i}"
        check_table(item, FIELDS, path, ctx)
        if item["region"] not in ctx.regions:
            raise ScenarioError(f"{path}.region", f"unknown region {item['region']!r} "
                                f"(known: {', '.join(ctx.regions)})")
        if item["op"] == "submit":
            tenant = item.get("tenant", "t0")
            if tenant not in ctx.extra.get("tenants", ()):
                raise ScenarioError(f"{path}.tenant", f"unknown tenant {tenant!r} "
                                    f"(known: {', '.join(ctx.extra.get('tenants', ()))})")
            continue
        for key in SUBMIT_ONLY:
            if key in item:
                raise ScenarioError(f"{path}.{key}", f"only a submit takes {key!r}")
        if not replicated:
            raise ScenarioError(f"{path}.op", f"{item['op']!r} needs replication (replication.enabled = true "
                                "and two or more regions)")


def pcs_for(world, tenant: str, pcs: int, payload: int, signature: str) -> dict:
    """The PCS a scheduled submit sends (deterministic in its fields and the run's templates)."""
    keys = world.factory
    key = keys.key_for(tenant)
    root = hashlib.sha256(f"flk-schedule/{tenant}/p{pcs}".encode()).hexdigest()
    doc = factory.with_identity(dict(keys.templates[0], sig_alg="hmac"), key, root=root, shard_id="schedule",
                                epoch=1)
    if payload > 1:
        doc = factory.other_payload(doc, key, field="coh_star", delta=0.001 * (payload - 1))
    if signature == "forged":
        return factory.bad_signature(doc)
    if signature == "other":
        others = [t for t in world.tenants.ids() if t != tenant]
        return factory.sign(doc, keys.key_for(others[0]) if others else
                            factory.tenant_key(keys.base_key, "no-such-tenant"))
    return doc


def _submit(world, item: dict, k: int):
    from .workload import Agent

    agent = Agent(world, AGENT_BASE + k)
    agent.tenant = item.get("tenant", "t0")
    agent.urls = [item["region"]]
    signature = item.get("signature", "good")
    doc = pcs_for(world, agent.tenant, int(item.get("pcs", 1)), int(item.get("payload", 1)), signature)
    kind = "valid" if signature == "good" else "bad_sig"
    agent.deliver_later(world.next_request_id(), kind, doc, None)


def _fresh(world, rep) -> None:
    """Rebuild a region's shipper and reader from its disk after a restart (as the
    replication loop does when it notices the new incarnation)."""
    if rep.shipper.log is not rep.region.wal:
        rep.build()


def _ship(world, rep):
    region = rep.region
    while region.seal_lock.held:  # a batch is between its records and their answers
        yield world.env.timeout(SEAL_RETRY_S)
    if not region.up:
        return
    _fresh(world, rep)
    n = 0
    with contextlib.suppress(ObjectStoreUnavailable, WalError, OSError):
        region.wal.seal()
        n = rep.shipper.ship_sealed(region.now(), world.env.now)
    world.history.record(world.env.now, "crr.shipped", region=region.id, segments=n)


def _read(world, rep) -> None:
    region = rep.region
    if not region.up:
        return
    _fresh(world, rep)
    before = rep.reader.applied_records
    with contextlib.suppress(ObjectStoreUnavailable):
        rep.reader.poll(region.now())
    world.history.record(world.env.now, "crr.applied", region=region.id,
                         records=rep.reader.applied_records - before)


def run(world):
    """The schedule's process: every operation at its time, in (time, file) order."""
    items = sorted(enumerate(world.scenario.data.get("schedule", [])), key=lambda x: (x[1]["at_s"], x[0]))
    for k, item in items:
        wait = float(item["at_s"]) - world.env.now
        if wait > 0:
            yield world.env.timeout(wait)
        if item["op"] == "submit":
            _submit(world, item, k)
        elif item["op"] == "ship":
            world.env.process(_ship(world, world.repl[item["region"]]))
        else:
            _read(world, world.repl[item["region"]])
